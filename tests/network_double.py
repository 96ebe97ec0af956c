"""A D-Bus test double of NetworkManager's Wi-Fi side (there is no Wi-Fi hardware or hwsim here).

It is a real D-Bus service (dbus-fast ``ServiceInterface`` objects) owning
``org.freedesktop.NetworkManager`` on its own private bus, with the object paths, interfaces,
properties, methods and signals the network service uses, and NetworkManager's behaviour:

- ``Device.Wireless.RequestScan`` updates ``LastScan`` (a PropertiesChanged signal) a moment
  later; ``GetAllAccessPoints`` lists the access points "in the air".
- ``ActivateConnection`` returns an ActiveConnection at once, then walks the device through
  prepare -> config -> ip_config -> activated with ``StateChanged`` signals on the device and
  the active connection. A wrong PSK goes need_auth -> failed with reason NO_SECRETS (7) and the
  active connection deactivated with reason NO_SECRETS (9), as NetworkManager does without a
  secret agent. An SSID not in the air fails with SSID_NOT_FOUND (53).
- ``remove_ap`` makes a network disappear (AccessPointRemoved); a device connected to it drops
  to disconnected, as on beacon loss.
- Settings: AddConnection / Update / Delete / GetSettings (secrets are not returned by
  GetSettings, like NetworkManager).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Annotated, Any

from dbus_fast import PropertyAccess, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_property, method, signal

NM = "org.freedesktop.NetworkManager"
ROOT = "/org/freedesktop/NetworkManager"

U = Annotated[int, DBusSignature("u")]
X = Annotated[int, DBusSignature("x")]
Y = Annotated[int, DBusSignature("y")]
B = Annotated[bool, DBusSignature("b")]
S = Annotated[str, DBusSignature("s")]
OBJ = Annotated[str, DBusSignature("o")]
AO = Annotated[list[str], DBusSignature("ao")]
AY = Annotated[bytes, DBusSignature("ay")]
ASV = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
AASV = Annotated[list[dict[str, Variant]], DBusSignature("aa{sv}")]
ASU = Annotated[dict[str, int], DBusSignature("a{su}")]
SETTINGS = Annotated[dict[str, dict[str, Variant]], DBusSignature("a{sa{sv}}")]

# Methods without a reply body carry no return annotation: dbus-fast would read one as a
# D-Bus signature.

RSN_PSK = 0x100 | 0x8  # key-mgmt PSK, CCMP
RSN_SAE = 0x400 | 0x8
RSN_EAP = 0x200 | 0x8
STEP = 0.05  # seconds between state transitions


@dataclass
class Air:
    """An access point "in the air"."""

    ssid: bytes
    bssid: str
    strength: int
    frequency: int = 2437
    security: str = "wpa2"  # open | wpa2 | wpa3 | wpa2-eap
    psk: str | None = None
    #: Hidden networks beacon an empty SSID but answer to their name.
    hidden: bool = False
    #: Association never completes (the device stays in "config").
    stall: bool = False


class AccessPointObj(ServiceInterface):
    def __init__(self, air: Air) -> None:
        super().__init__(f"{NM}.AccessPoint")
        self.air = air

    @dbus_property(access=PropertyAccess.READ)
    def Ssid(self) -> AY:
        return b"" if self.air.hidden else self.air.ssid

    @dbus_property(access=PropertyAccess.READ)
    def HwAddress(self) -> S:
        return self.air.bssid

    @dbus_property(access=PropertyAccess.READ)
    def Strength(self) -> Y:
        return self.air.strength

    @dbus_property(access=PropertyAccess.READ)
    def Frequency(self) -> U:
        return self.air.frequency

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> U:
        return 0 if self.air.security == "open" else 1

    @dbus_property(access=PropertyAccess.READ)
    def WpaFlags(self) -> U:
        return 0

    @dbus_property(access=PropertyAccess.READ)
    def RsnFlags(self) -> U:
        return {"open": 0, "wpa2": RSN_PSK, "wpa3": RSN_SAE, "wpa2-eap": RSN_EAP}[self.air.security]


class ConnectionObj(ServiceInterface):
    def __init__(self, double: WifiDouble, path: str, settings: dict[str, dict[str, Variant]]):
        super().__init__(f"{NM}.Settings.Connection")
        self.double = double
        self.path = path
        self.settings = settings

    @method()
    def GetSettings(self) -> SETTINGS:
        out = {group: dict(values) for group, values in self.settings.items()}
        if "802-11-wireless-security" in out and not self.double.leak_secrets:
            out["802-11-wireless-security"].pop("psk", None)  # secrets only via GetSecrets
        return out

    @method()
    def Update(self, settings: SETTINGS):
        self.settings = settings

    @method()
    def Delete(self):
        self.double.delete_connection(self.path)


class ActiveObj(ServiceInterface):
    def __init__(self, conn: ConnectionObj, device: str) -> None:
        super().__init__(f"{NM}.Connection.Active")
        self.conn = conn
        self.device = device
        self.state = 1

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> S:
        return str(self.conn.settings["connection"]["id"].value)

    @dbus_property(access=PropertyAccess.READ)
    def Uuid(self) -> S:
        return str(self.conn.settings["connection"]["uuid"].value)

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> U:
        return self.state

    @dbus_property(access=PropertyAccess.READ)
    def Devices(self) -> AO:
        return [self.device]

    @dbus_property(access=PropertyAccess.READ)
    def Connection(self) -> OBJ:
        return self.conn.path

    @signal()
    def StateChanged(self, state: int, reason: int) -> Annotated[list[int], DBusSignature("uu")]:
        return [state, reason]

    def set_state(self, state: int, reason: int) -> None:
        self.state = state
        self.StateChanged(state, reason)
        self.emit_properties_changed({"State": state})


class Ip4Obj(ServiceInterface):
    def __init__(self, address: str, prefix: int, gateway: str) -> None:
        super().__init__(f"{NM}.IP4Config")
        self.address, self.prefix, self.gateway = address, prefix, gateway

    @dbus_property(access=PropertyAccess.READ)
    def AddressData(self) -> AASV:
        return [{"address": Variant("s", self.address), "prefix": Variant("u", self.prefix)}]

    @dbus_property(access=PropertyAccess.READ)
    def Gateway(self) -> S:
        return self.gateway

    @dbus_property(access=PropertyAccess.READ)
    def NameserverData(self) -> AASV:
        return [{"address": Variant("s", self.gateway)}]


class DeviceObj(ServiceInterface):
    def __init__(self) -> None:
        super().__init__(f"{NM}.Device")
        self.state = 30
        self.active = "/"
        self.ip4 = "/"

    @dbus_property(access=PropertyAccess.READ)
    def Interface(self) -> S:
        return "wlan0"

    @dbus_property(access=PropertyAccess.READ)
    def DeviceType(self) -> U:
        return 2

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> U:
        return self.state

    @dbus_property(access=PropertyAccess.READ)
    def HwAddress(self) -> S:
        return "02:00:00:00:01:00"

    @dbus_property(access=PropertyAccess.READ)
    def Driver(self) -> S:
        return "double"

    @dbus_property(access=PropertyAccess.READ)
    def Managed(self) -> B:
        return True

    @dbus_property(access=PropertyAccess.READ)
    def ActiveConnection(self) -> OBJ:
        return self.active

    @dbus_property(access=PropertyAccess.READ)
    def Ip4Config(self) -> OBJ:
        return self.ip4

    @dbus_property(access=PropertyAccess.READ)
    def Ip6Config(self) -> OBJ:
        return "/"

    @signal()
    def StateChanged(
        self, new: int, old: int, reason: int
    ) -> Annotated[list[int], DBusSignature("uuu")]:
        return [new, old, reason]

    def set_state(self, new: int, reason: int = 0) -> None:
        old, self.state = self.state, new
        self.StateChanged(new, old, reason)
        self.emit_properties_changed({"State": new})


class WirelessObj(ServiceInterface):
    def __init__(self, double: WifiDouble) -> None:
        super().__init__(f"{NM}.Device.Wireless")
        self.double = double
        self.last_scan = 1000
        self.scans = 0

    @method()
    def RequestScan(self, options: ASV):
        self.scans += 1
        self.double.later(0.2, self._scanned)

    def _scanned(self) -> None:
        self.last_scan = int(time.monotonic() * 1000)
        self.emit_properties_changed({"LastScan": self.last_scan})

    @method()
    def GetAllAccessPoints(self) -> AO:
        return list(self.double.aps)

    @dbus_property(access=PropertyAccess.READ)
    def AccessPoints(self) -> AO:
        return list(self.double.aps)

    @dbus_property(access=PropertyAccess.READ)
    def LastScan(self) -> X:
        return self.last_scan

    @signal()
    def AccessPointAdded(self, path: str) -> OBJ:
        return path

    @signal()
    def AccessPointRemoved(self, path: str) -> OBJ:
        return path


class ManagerObj(ServiceInterface):
    def __init__(self, double: WifiDouble) -> None:
        super().__init__(NM)
        self.double = double

    @method()
    def GetDevices(self) -> AO:
        return [self.double.dev_path]

    @method()
    def ActivateConnection(self, conn: OBJ, device: OBJ, specific: OBJ) -> OBJ:
        return self.double.activate(conn, device)

    @method()
    def DeactivateConnection(self, active: OBJ):
        self.double.drop(active, 39)

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> U:
        return 70 if self.double.device.state == 100 else 20

    @dbus_property(access=PropertyAccess.READ)
    def Connectivity(self) -> U:
        return 4 if self.double.device.state == 100 else 1

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> S:
        return "1.42.4-double"

    @dbus_property(access=PropertyAccess.READ)
    def NetworkingEnabled(self) -> B:
        return True

    @dbus_property(access=PropertyAccess.READ)
    def WirelessEnabled(self) -> B:
        return True

    @dbus_property(access=PropertyAccess.READ)
    def PrimaryConnection(self) -> OBJ:
        return self.double.device.active

    @dbus_property(access=PropertyAccess.READ)
    def ActiveConnections(self) -> AO:
        return [self.double.device.active] if self.double.device.active != "/" else []

    @dbus_property(access=PropertyAccess.READ)
    def Checkpoints(self) -> AO:
        return list(self.double.checkpoints)

    @method()
    def CheckpointCreate(self, devices: AO, rollback_timeout: U, flags: U) -> OBJ:
        return self.double.checkpoint_create(rollback_timeout)

    @method()
    def CheckpointDestroy(self, checkpoint: OBJ):
        self.double.checkpoint_end(checkpoint)

    @method()
    def CheckpointRollback(self, checkpoint: OBJ) -> ASU:
        self.double.checkpoint_end(checkpoint)
        return {self.double.dev_path: 0}

    @dbus_property(access=PropertyAccess.READ)
    def Devices(self) -> AO:
        return [self.double.dev_path]


class SettingsObj(ServiceInterface):
    def __init__(self, double: WifiDouble) -> None:
        super().__init__(f"{NM}.Settings")
        self.double = double
        self.hostname = "double"

    @method()
    def ListConnections(self) -> AO:
        return list(self.double.connections)

    @method()
    def AddConnection(self, settings: SETTINGS) -> OBJ:
        return self.double.add_connection(settings)

    @method()
    def SaveHostname(self, name: S):
        self.hostname = name
        self.emit_properties_changed({"Hostname": name})

    @dbus_property(access=PropertyAccess.READ)
    def Hostname(self) -> S:
        return self.hostname


class WifiDouble:
    """The double: ``await WifiDouble.start(address)``; tests change the air with
    ``add_ap`` / ``remove_ap``."""

    dev_path = f"{ROOT}/Devices/1"

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self._ids = itertools.count(1)
        self.device = DeviceObj()
        self.wireless = WirelessObj(self)
        self.manager = ManagerObj(self)
        self.settings = SettingsObj(self)
        self.aps: dict[str, AccessPointObj] = {}
        self.connections: dict[str, ConnectionObj] = {}
        self.actives: dict[str, ActiveObj] = {}
        self._tasks: set[asyncio.Handle] = set()
        #: Checkpoints only record and expire here (no configuration is restored); the real
        #: rollback is tested against the real NetworkManager.
        self.checkpoints: dict[str, asyncio.Handle] = {}
        #: Make GetSettings return secrets too, to prove the service drops them itself.
        self.leak_secrets = False
        bus.export(ROOT, self.manager)
        bus.export(f"{ROOT}/Settings", self.settings)
        bus.export(self.dev_path, self.device)
        bus.export(self.dev_path, self.wireless)

    @classmethod
    async def start(cls, address: str) -> WifiDouble:
        bus = await MessageBus(bus_address=address).connect()
        double = cls(bus)
        await bus.request_name(NM)
        return double

    def stop(self) -> None:
        for h in [*self._tasks, *self.checkpoints.values()]:
            h.cancel()
        self.bus.disconnect()

    def later(self, delay: float, fn: Any, *args: Any) -> None:
        h = asyncio.get_running_loop().call_later(delay, fn, *args)
        self._tasks.add(h)

    def checkpoint_create(self, timeout: int) -> str:
        if self.checkpoints:
            raise DBusError(f"{NM}.InvalidArguments", "a checkpoint exists already")
        path = f"{ROOT}/Checkpoint/{next(self._ids)}"
        self.checkpoints[path] = asyncio.get_running_loop().call_later(
            timeout, self.checkpoint_end, path
        )
        self.manager.emit_properties_changed({"Checkpoints": list(self.checkpoints)})
        return path

    def checkpoint_end(self, path: str) -> None:
        h = self.checkpoints.pop(path, None)
        if h is None:
            raise DBusError(f"{NM}.InvalidArguments", f"no checkpoint {path}")
        h.cancel()
        self.manager.emit_properties_changed({"Checkpoints": list(self.checkpoints)})

    # --- the air ----------------------------------------------------------------------------

    def add_ap(self, air: Air) -> str:
        path = f"{ROOT}/AccessPoint/{next(self._ids)}"
        self.aps[path] = AccessPointObj(air)
        self.bus.export(path, self.aps[path])
        self.wireless.AccessPointAdded(path)
        self.wireless.emit_properties_changed({"AccessPoints": list(self.aps)})
        return path

    def remove_ap(self, bssid: str) -> None:
        for path, ap in list(self.aps.items()):
            if ap.air.bssid == bssid:
                del self.aps[path]
                self.bus.unexport(path)
                self.wireless.AccessPointRemoved(path)
                self.wireless.emit_properties_changed({"AccessPoints": list(self.aps)})
        # A device associated with an SSID no longer in the air loses it (beacon loss).
        if self.device.active != "/":
            ssid = self._ssid_of(self.actives[self.device.active].conn)
            if not self._in_air(ssid):
                self.drop(self.device.active, 53)

    def _in_air(self, ssid: bytes) -> list[Air]:
        return [a.air for a in self.aps.values() if a.air.ssid == ssid]

    @staticmethod
    def _ssid_of(conn: ConnectionObj) -> bytes:
        return bytes(conn.settings["802-11-wireless"]["ssid"].value)

    # --- settings ---------------------------------------------------------------------------

    def add_connection(self, settings: dict[str, dict[str, Variant]]) -> str:
        if "802-11-wireless" not in settings:
            raise DBusError(f"{NM}.Settings.Connection.MissingProperty", "not a Wi-Fi profile")
        path = f"{ROOT}/Settings/{next(self._ids)}"
        self.connections[path] = ConnectionObj(self, path, settings)
        self.bus.export(path, self.connections[path])
        return path

    def delete_connection(self, path: str) -> None:
        for ap, act in list(self.actives.items()):
            if act.conn.path == path:
                self.drop(ap, 38)
        self.bus.unexport(path)
        del self.connections[path]

    # --- activation -------------------------------------------------------------------------

    def activate(self, conn_path: str, device: str) -> str:
        conn = self.connections.get(conn_path)
        if conn is None:
            raise DBusError(f"{NM}.UnknownConnection", f"no connection {conn_path}")
        if device != self.dev_path:
            raise DBusError(f"{NM}.UnknownDevice", f"no device {device}")
        if self.device.active != "/":
            self.drop(self.device.active, 60)
        path = f"{ROOT}/ActiveConnection/{next(self._ids)}"
        act = ActiveObj(conn, device)
        self.actives[path] = act
        self.bus.export(path, act)
        self.device.active = path
        self.later(STEP, self._step, path, "prepare")
        return path

    def _step(self, path: str, stage: str) -> None:
        act = self.actives.get(path)
        if act is None or self.device.active != path:
            return
        dev = self.device
        if stage == "prepare":
            dev.set_state(40)
            self.later(STEP, self._step, path, "config")
        elif stage == "config":
            dev.set_state(50)
            ssid = self._ssid_of(act.conn)
            air = self._in_air(ssid)
            if not air:
                self.later(STEP * 4, self._fail, path, 53, 1)
                return
            if air[0].stall:
                return
            want = air[0].psk
            sec = act.conn.settings.get("802-11-wireless-security", {})
            given = sec["psk"].value if "psk" in sec else None
            if want is not None and given != want:
                dev.set_state(60)  # need_auth: the handshake failed, no agent to ask
                self.later(STEP * 4, self._fail, path, 7, 9)
                return
            self.later(STEP, self._step, path, "ip")
        elif stage == "ip":
            dev.set_state(70)
            ip4 = act.conn.settings.get("ipv4", {})
            if ip4.get("method", Variant("s", "auto")).value == "manual":
                a = ip4["address-data"].value[0]
                addr, prefix = a["address"].value, a["prefix"].value
                gw = ip4["gateway"].value if "gateway" in ip4 else ""
            else:
                addr, prefix, gw = "192.168.50.23", 24, "192.168.50.1"
            cfg = f"{ROOT}/IP4Config/{next(self._ids)}"
            self.bus.export(cfg, Ip4Obj(addr, prefix, gw))
            dev.ip4 = cfg
            dev.emit_properties_changed({"Ip4Config": cfg})
            self.later(STEP, self._step, path, "done")
        elif stage == "done":
            dev.set_state(100)
            act.set_state(2, 1)
            self.manager.emit_properties_changed({"State": 70, "ActiveConnections": [path]})

    def _fail(self, path: str, dev_reason: int, act_reason: int) -> None:
        if self.device.active != path:
            return
        self.device.set_state(120, dev_reason)
        self.drop(path, act_reason, device_state=30)

    def drop(self, path: str, reason: int, device_state: int = 30) -> None:
        act = self.actives.pop(path, None)
        if act is None:
            raise DBusError(f"{NM}.ConnectionNotActive", f"{path} is not active")
        if self.device.active == path:
            self.device.active = "/"
            self.device.ip4 = "/"
            if self.device.state != device_state:
                self.device.set_state(device_state, reason)
        act.set_state(4, reason)
        self.bus.unexport(path)
        self.manager.emit_properties_changed({"ActiveConnections": []})
