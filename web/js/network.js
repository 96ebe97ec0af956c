// Network (the network service): state, devices, connections, Wi-Fi, Ethernet, with the
// checkpoint/rollback behaviour explained where a change is made.

import {
  badge, button, card, cardWith, clear, errorBox, field, fmtTime, h, runAction, spinner, splitList, table,
} from "./dom.js";

export function renderNetwork(app, device, panel) {
  const state = h("div", { id: "net-state" });
  const devices = h("div", { id: "net-devices" });
  const conns = h("div", { id: "net-connections" });
  const connOut = h("div", { class: "form-out", "aria-live": "polite" });
  const wifi = h("div", { id: "wifi-list" });
  const wifiOut = h("div", { class: "form-out", "aria-live": "polite" });
  const ethOut = h("div", { class: "form-out", "aria-live": "polite" });
  const ifaceSel = h("select", { name: "interface" });
  let deviceList = [];

  const rollback = h(
    "div",
    { class: "alert alert-info", role: "note" },
    h("strong", {}, "You will not lose the device. "),
    "A change to an interface that carries the device's link (its protected interfaces) is applied under a NetworkManager ",
    h("em", {}, "checkpoint"),
    ". The change is kept only once the device proves it is still reachable: its MQTT link stays up for a while after the change, or you press ",
    h("em", {}, "Confirm"),
    " (a command that arrives proves the link). Otherwise NetworkManager restores the previous settings by itself when the rollback timeout expires, and the job ends ",
    h("code", {}, "failed"),
    " with outcome ",
    h("code", {}, "rolled_back"),
    " — you will see it here when the device is back.",
  );

  clear(
    panel,
    cardWith("State", button("Refresh", () => refreshAll(), "btn btn-small"), state),
    card("Devices", devices),
    card("Connections", connOut, conns),
    h("div", { class: "grid-2" }, card("Ethernet", rollback, ethernetForm(), ethOut), cardWith("Wi-Fi", button("Scan", (ev) => scan(ev.currentTarget), "btn btn-small", { id: "wifi-scan" }), h("p", { class: "muted small" }, "Scan for networks, then connect to one. Joining over Wi-Fi is guarded like Ethernet when Wi-Fi carries the link."), wifiOut, wifi)),
  );

  async function loadState() {
    state.replaceChildren(spinner("Reading the network state…"));
    const r = await app.link.request(device, "network", "state", {});
    if (!r.ok) return state.replaceChildren(errorBox(r.error, "network/state"));
    const s = r.result;
    const lc = s.last_change;
    clear(
      state,
      h(
        "dl",
        { class: "kv" },
        kv("State", badge(s.state)), kv("Connectivity", badge(s.connectivity)), kv("Hostname", s.hostname),
        kv("Primary connection", s.primary_connection || "–"), kv("Protected interfaces", (s.protected_interfaces || []).join(", ") || "none"),
        kv("NetworkManager", s.version),
      ),
      lc
        ? h(
            "div",
            { class: `alert ${lc.outcome === "pending" ? "alert-warn" : lc.outcome === "committed" ? "alert-ok" : "alert-error"}`, id: "last-change" },
            h("strong", {}, `Last guarded change: ${lc.action} on ${(lc.interfaces || []).join(", ")} — ${lc.outcome}`),
            h("p", {}, `${fmtTime(lc.started_at)}${lc.message ? ` · ${lc.message}` : ""}`),
            lc.outcome === "pending"
              ? button("Confirm now", (ev) => runAction(app, { device, service: "network", action: "confirm", args: { job_id: lc.job_id }, where: connOut, trigger: ev.currentTarget, title: "Confirm change", okText: "Confirmed: the change is kept." }).then(loadState), "btn btn-primary")
              : null,
          )
        : null,
    );
  }

  async function loadDevices() {
    devices.replaceChildren(spinner("Reading devices…"));
    const r = await app.link.request(device, "network", "devices", {});
    if (!r.ok) return devices.replaceChildren(errorBox(r.error, "network/devices"));
    deviceList = r.result;
    const wired = deviceList.filter((d) => ["ethernet", "veth"].includes(d.type));
    const keep = ifaceSel.value;
    clear(ifaceSel, (wired.length ? wired : deviceList.filter((d) => d.type !== "loopback")).map((d) => h("option", { value: d.interface, selected: d.interface === keep }, d.interface)));
    clear(
      devices,
      table(
        "Network devices",
        ["Interface", "Type", "State", "Connection", "IPv4", "Gateway", "DNS", "MAC"],
        deviceList.map((d) => ({
          attrs: { "data-iface": d.interface },
          cells: [d.interface, d.type, badge(d.state), d.connection || "–", (d.ipv4 || []).map((a) => `${a.address}/${a.prefix}`).join(", ") || "–", d.gateway4 || "–", (d.dns || []).join(", ") || "–", h("span", { class: "mono small" }, d.hw_address || "–")],
        })),
      ),
    );
  }

  async function loadConnections() {
    conns.replaceChildren(spinner("Reading connections…"));
    const r = await app.link.request(device, "network", "connections", {});
    if (!r.ok) return conns.replaceChildren(errorBox(r.error, "network/connections"));
    const job = (action, c, trigger) =>
      runAction(app, { device, service: "network", action, args: { connection: c.uuid }, where: connOut, trigger, title: `${action.split("/")[1]} ${c.id}`, onJobEnd: () => refreshAll() });
    clear(
      conns,
      table(
        "Connections",
        ["Name", "Type", "Interface", "Active", "IPv4", "Autoconnect", "Actions"],
        r.result.map((c) => ({
          attrs: { "data-connection": c.id },
          cells: [
            c.id, c.type + (c.ssid ? ` (${c.ssid})` : ""), c.interface || "any", badge(c.active ? "active" : "inactive", c.active ? "good" : "neutral"),
            c.ipv4?.method === "manual" ? `static ${(c.ipv4?.addresses || []).map((a) => `${a.address}/${a.prefix}`).join(", ")}` : c.ipv4?.method === "auto" ? "DHCP" : c.ipv4?.method || "–",
            c.autoconnect ? "yes" : "no",
            h(
              "div",
              { class: "row-actions" },
              c.active
                ? button("Down", (ev) => job("connections/down", c, ev.currentTarget), "btn btn-small", { "aria-label": `Deactivate ${c.id}` })
                : button("Up", (ev) => job("connections/up", c, ev.currentTarget), "btn btn-small", { "aria-label": `Activate ${c.id}` }),
              button("Delete", (ev) => confirm(`Delete connection ${c.id}?`) && job("connections/delete", c, ev.currentTarget), "btn btn-small btn-danger", { "aria-label": `Delete ${c.id}` }),
            ),
          ],
        })),
        { empty: "No saved connections." },
      ),
    );
  }

  function ethernetForm() {
    const dhcp = h("input", { type: "radio", name: "method", value: "dhcp", id: "eth-dhcp", checked: true });
    const stat = h("input", { type: "radio", name: "method", value: "static", id: "eth-static" });
    const address = h("input", { name: "address", type: "text", spellcheck: "false", placeholder: "192.0.2.10/24" });
    const gateway = h("input", { name: "gateway", type: "text", spellcheck: "false", placeholder: "192.0.2.1" });
    const dns = h("input", { name: "dns", type: "text", spellcheck: "false", placeholder: "192.0.2.53 198.51.100.53" });
    const staticBox = h("fieldset", { class: "static-fields", disabled: true }, h("legend", {}, "Static address"), field("Address/prefix", address), field("Gateway", gateway), field("DNS servers", dns));
    const apply = h("button", { type: "submit", class: "btn btn-primary" }, "Apply");
    const sync = () => {
      staticBox.disabled = !stat.checked;
    };
    dhcp.addEventListener("change", sync);
    stat.addEventListener("change", sync);
    const form = h(
      "form",
      { class: "form", "aria-label": "Configure Ethernet" },
      field("Interface", ifaceSel),
      h("fieldset", { class: "radios" }, h("legend", {}, "Method"), h("span", { class: "check" }, dhcp, h("label", { for: "eth-dhcp" }, "DHCP")), h("span", { class: "check" }, stat, h("label", { for: "eth-static" }, "Static"))),
      staticBox,
      h("div", { class: "actions" }, apply),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const args = { interface: ifaceSel.value, method: stat.checked ? "static" : "dhcp" };
      if (stat.checked) {
        args.address = address.value.trim();
        if (gateway.value.trim()) args.gateway = gateway.value.trim();
        args.dns = splitList(dns.value);
      }
      runAction(app, { device, service: "network", action: "ethernet/configure", args, where: ethOut, trigger: apply, title: `Configure ${args.interface} (${args.method})`, onJobEnd: () => refreshAll() });
    });
    return form;
  }

  async function scan(trigger) {
    wifi.replaceChildren();
    const r = await runAction(app, { device, service: "network", action: "wifi/scan", args: { rescan: true }, where: wifiOut, trigger, title: "Wi-Fi scan", timeout: 35 });
    if (!r.ok) return;
    wifiOut.replaceChildren();
    const aps = r.result.access_points;
    clear(
      wifi,
      table(
        `Wi-Fi networks seen by ${r.result.interface}`,
        ["Network", "Signal", "Security", "Channel", ""],
        aps.map((ap) => ({
          attrs: { "data-ssid": ap.ssid },
          cells: [ap.ssid, h("span", {}, signalBars(ap.signal), ` ${ap.signal} %`), ap.security, `${ap.channel} (${(ap.frequency / 1000).toFixed(1)} GHz)`, button("Connect", () => connectForm(ap, r.result.interface), "btn btn-small", { "aria-label": `Connect to ${ap.ssid}` })],
        })),
        { empty: "No networks found." },
      ),
    );
  }

  function connectForm(ap, iface) {
    const pass = h("input", { name: "password", type: "password", autocomplete: "off" });
    const go = h("button", { type: "submit", class: "btn btn-primary" }, "Connect");
    const form = h(
      "form",
      { class: "form", "aria-label": `Connect to ${ap.ssid}` },
      h("h3", {}, `Connect to ${ap.ssid}`),
      ap.security === "open" ? h("p", { class: "muted" }, "An open network: no password.") : field("Password", pass, "8 to 63 characters, or 64 hex digits. Never stored by the console."),
      h("div", { class: "actions" }, go, button("Cancel", () => wifiOut.replaceChildren(), "btn btn-ghost")),
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const args = { ssid: ap.ssid, interface: iface };
      if (ap.security !== "open") args.password = pass.value;
      pass.value = "";
      runAction(app, { device, service: "network", action: "wifi/connect", args, where: wifiOut, trigger: go, title: `Connect to ${ap.ssid}`, onJobEnd: () => refreshAll() });
    });
    clear(wifiOut, form);
    (ap.security === "open" ? go : pass).focus();
  }

  function refreshAll() {
    loadState();
    loadDevices();
    loadConnections();
  }
  refreshAll();
}

function kv(k, v) {
  return h("div", {}, h("dt", {}, k), h("dd", {}, v));
}

function signalBars(pct) {
  const n = pct >= 75 ? 4 : pct >= 50 ? 3 : pct >= 25 ? 2 : 1;
  return h("span", { class: "bars", "aria-hidden": "true" }, [1, 2, 3, 4].map((i) => h("i", { class: i <= n ? "on" : "" })));
}

