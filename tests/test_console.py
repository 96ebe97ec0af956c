"""The web console end to end: headless Chromium (Debian's) drives the real page, served by
``tether console``'s server, against a real broker (MQTT over WebSocket) and the real bundle.

Also: the static server itself (content types, no directory listing, no path escape) and the
CLI's ``console`` command.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from common.cli import build_parser
from common.console import WEB_DIR, start_console
from common.devbroker import Mosquitto, free_port
from common.pki import DevPki
from tests.console_fixtures import (
    browser,
    console,
    console_page,
    shot,
    ws_broker,
    ws_bundle,
)
from tests.harness import Bundle, wait_for

__all__ = ["browser", "console", "console_page", "ws_broker"]  # fixtures used by name


# --- the static server ----------------------------------------------------------------------


def fetch(url: str) -> tuple[int, Any, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_server_serves_the_console_and_nothing_else(console: str) -> None:
    status, headers, body = fetch(console)
    assert status == 200 and b'id="main"' in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, _ = fetch(console + "js/main.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    status, _, body = fetch(console + "vendor/mqtt.min.js")
    assert status == 200 and len(body) > 100_000
    assert fetch(console + "js/")[0] == 404  # no directory listings
    assert fetch(console + "../common/console.py")[0] == 404
    assert fetch(console + "%2e%2e/pyproject.toml")[0] == 404


def test_start_console_url_and_errors(tmp_path: Any) -> None:
    url, stop = start_console(0, broker="ws://localhost:9001")
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?broker=ws%3A%2F%2Flocalhost%3A9001", url)
        port = int(url.split(":")[2].split("/")[0])
        with pytest.raises(OSError):
            start_console(port)  # taken
    finally:
        stop()
    with pytest.raises(FileNotFoundError, match=r"index\.html"):
        start_console(0, web_dir=tmp_path)
    (tmp_path / "index.html").write_text("x")
    with pytest.raises(FileNotFoundError, match="build-web"):
        start_console(0, web_dir=tmp_path)


def test_cli_has_the_console_command() -> None:
    a = build_parser().parse_args(["console", "--port", "0", "--broker", "ws://h:9001"])
    assert (a.port, a.host, a.broker) == (0, "127.0.0.1", "ws://h:9001")
    assert (WEB_DIR / "vendor" / "mqtt.LICENSE.md").is_file()


# --- the page against a real device ----------------------------------------------------------


@pytest.fixture(scope="module")
def device(pki: DevPki, ws_broker: Mosquitto) -> Iterator[Bundle]:
    b = ws_bundle(pki, ws_broker, ["stats"])
    try:
        b.start()
        yield b
    finally:
        b.cleanup()


def samples(page: Any) -> int:
    return int(page.locator("#charts").get_attribute("data-samples") or 0)


def wait_samples(page: Any, n: int, timeout: float = 20.0) -> int:
    """Wait until the charts hold at least ``n`` telemetry samples (polled from Python: the
    page's CSP rightly forbids the eval that wait_for_function needs)."""
    page.locator("#charts").wait_for()
    for _ in range(int(timeout / 0.1)):
        got = samples(page)
        if got >= n:
            return got
        page.wait_for_timeout(100)
    raise AssertionError(f"only {samples(page)} telemetry samples after {timeout}s, not {n}")


def test_connect_screen_rejects_a_bad_url_and_an_unreachable_broker(
    console_page: Any, console: str
) -> None:
    cp = console_page()
    page = cp.page
    page.goto(console)
    page.get_by_role("button", name="Connect").wait_for()
    shot(page, "connect", full_page=False)
    page.get_by_label("Broker WebSocket URL").fill("http://example")
    page.get_by_role("button", name="Connect").click()
    alert = page.get_by_role("alert")
    assert "must start with ws:// or wss://" in alert.inner_text()
    # nothing listens there: the page says so instead of hanging
    page.get_by_label("Broker WebSocket URL").fill(f"ws://127.0.0.1:{free_port()}")
    page.get_by_role("button", name="Connect").click()
    page.wait_for_selector("text=/Could not connect|No answer from the broker/")


def test_connect_remembers_the_broker_and_the_password_only_if_asked(
    console_page: Any, ws_broker: Mosquitto
) -> None:
    cp = console_page()
    page = cp.open()
    saved = json.loads(page.evaluate("localStorage.getItem('tether.console')"))
    assert saved["url"] == cp.broker_url and "password" not in saved
    page.get_by_role("button", name="Disconnect").click()
    assert page.get_by_label("Broker WebSocket URL").input_value() == cp.broker_url

    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password", exact=True).fill("s3cret")
    page.get_by_role("button", name="Connect").click()
    page.locator("#conn-state .badge-good").wait_for()
    saved = json.loads(page.evaluate("localStorage.getItem('tether.console')"))
    assert saved["username"] == "alice" and "password" not in saved

    page.get_by_role("button", name="Disconnect").click()
    assert page.get_by_label("Password", exact=True).input_value() == ""
    page.get_by_label("Password", exact=True).fill("s3cret")
    page.get_by_label("Remember the password in this browser").check()
    page.get_by_role("button", name="Connect").click()
    page.locator("#conn-state .badge-good").wait_for()
    saved = json.loads(page.evaluate("localStorage.getItem('tether.console')"))
    assert saved["password"] == "s3cret"
    page.goto(cp.console)  # a reload reconnects by itself with what was remembered
    page.locator("#conn-state .badge-good").wait_for()
    page.get_by_role("heading", name="Devices").wait_for()


def test_device_appears_online_and_stats_update(console_page: Any, device: Bundle) -> None:
    cp = console_page(viewport={"width": 1280, "height": 900})
    page = cp.open()
    row = page.locator(f'tr[data-device="{device.device}"]')
    row.locator(".dev-state", has_text="online").wait_for()
    row.locator(".dev-health", has_text="ok").wait_for()
    assert "stats" in row.inner_text()
    page.wait_for_timeout(600)
    shot(page, "devices")

    row.get_by_role("link", name=device.device).click()
    page.locator("#device-state", has_text="online").wait_for()
    # telemetry arrives every 0.5 s and the charts grow
    n1 = wait_samples(page, 3)
    wait_samples(page, n1 + 2)
    assert re.search(r"\d+\.\d %", page.locator("#chart-cpu .tile-value").inner_text())
    assert int(page.locator("#chart-mem svg").get_attribute("data-points") or 0) >= 3
    assert page.locator("#chart-net .tile-value").inner_text().startswith("↓")
    # system facts from stats/get and the services from agent/services
    page.locator("#system dd").first.wait_for()
    assert "Hostname" in page.locator("#system").inner_text()
    for name in ("gateway", "stats", "watchdog"):
        page.locator(f'#services tr[data-service="{name}"]').wait_for()
    wait_samples(page, 12)
    shot(page, "device-overview")


def test_phone_layout(console_page: Any, device: Bundle) -> None:
    cp = console_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = cp.open(f"#/d/{device.device}")
    wait_samples(page, 6)
    # nothing wider than the screen except inside the scrollable tables
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, width
    shot(page, "phone-overview", full_page=False)


def test_bad_input_shows_the_error_message(console_page: Any, device: Bundle) -> None:
    cp = console_page()
    page = cp.open(f"#/d/{device.device}/command")
    tab = page.get_by_role("tab", name="Command")
    assert tab.get_attribute("aria-selected") == "true"
    page.get_by_label("Service").select_option("stats")
    page.get_by_label("Action", exact=True).fill("get")
    page.get_by_label("Arguments (JSON object)").fill('{"per_cpu": "yes"}')
    page.get_by_role("button", name="Send").click()
    alert = page.locator("#command-out [role=alert]")
    alert.wait_for()
    text = alert.inner_text()
    assert "invalid_request" in text and "per_cpu" in text and "Expected `bool`" in text
    shot(page, "error")

    page.get_by_label("Action", exact=True).fill("nope")
    page.get_by_label("Arguments (JSON object)").fill("{}")
    page.get_by_role("button", name="Send").click()
    page.locator("#command-out [role=alert]", has_text="unknown_action").wait_for()

    page.get_by_label("Arguments (JSON object)").fill("{not json")
    page.get_by_role("button", name="Send").click()
    page.locator("#command-out [role=alert]", has_text="not valid JSON").wait_for()

    page.get_by_label("Action", exact=True).fill("get")
    page.get_by_label("Arguments (JSON object)").fill('{"per_cpu": false}')
    page.get_by_role("button", name="Send").click()
    assert '"hostname"' in page.locator("#command-result pre").inner_text()

    # a job from the command tab shows its progress to the end
    page.get_by_label("Action", exact=True).fill("sample")
    page.get_by_label("Arguments (JSON object)").fill('{"seconds": 1, "interval": 0.25}')
    page.get_by_role("button", name="Send").click()
    job = page.locator("#command-out .job")
    job.locator(".badge", has_text="succeeded").wait_for()
    assert job.get_by_role("progressbar").get_attribute("aria-valuenow") == "100"


def test_invalid_names_are_refused_before_sending(console_page: Any, device: Bundle) -> None:
    """A service or action that cannot be a topic level (wildcards, empty, uppercase, spaces) is
    refused in the page with a clear message; nothing is published, so the broker keeps the
    connection and the next valid command works."""
    cp = console_page()
    page = cp.open(f"#/d/{device.device}/command")
    page.get_by_label("Service").select_option("stats")
    action = page.get_by_label("Action", exact=True)
    out = page.locator("#command-out [role=alert]")
    for bad, expected in [
        ("get/#", "action must be lowercase words separated by /, e.g. wifi/scan"),
        ("", "action is empty"),
        ("+", "action must be lowercase words separated by /"),
        ("Get stats", "action must be lowercase words separated by /"),
    ]:
        action.fill(bad)
        page.get_by_role("button", name="Send").click()
        out.filter(has_text=expected).wait_for()
        assert "invalid_request" in out.inner_text()
        assert action.get_attribute("aria-invalid") == "true"
    page.wait_for_timeout(1500)  # a drop by the broker would show by now
    assert page.evaluate("window.tetherConsole.link.drops") == 0
    page.locator("#conn-state .badge-good").wait_for()

    action.fill("ping")
    page.get_by_role("button", name="Send").click()
    assert '"pong": true' in page.locator("#command-result pre").inner_text()
    assert action.get_attribute("aria-invalid") is None
    assert page.locator("#command-out [role=alert]").count() == 0

    # an invalid device id in the address is refused too, without subscribing or publishing
    page.goto(f"{cp.console}#/d/gw%2B01")
    page.get_by_role("heading", name="Invalid device id").wait_for()
    assert "device id must be" in page.get_by_role("alert").inner_text()
    assert page.evaluate("window.tetherConsole.link.drops") == 0


def test_a_dropped_connection_is_shown_and_recovers(console_page: Any, device: Bundle) -> None:
    """The broker closing the connection (here: a publish it refuses, sent behind the page's
    back) shows as reconnecting, and afterwards commands work again without a reload. A
    message that makes every reconnect fail again ends in the connect screen with the reason
    instead of an endless loop."""
    cp = console_page()
    page = cp.open(f"#/d/{device.device}/command")
    page.locator("#device-state", has_text="online").wait_for()
    page.evaluate("window.tetherConsole.link.client.publish('tether/x/cmd/#', '{}', {qos: 0})")
    page.wait_for_selector("#conn-state .badge-warn", timeout=5000)  # reconnecting…, and why:
    page.locator("#conn-url", has_text="protocol error").wait_for(timeout=5000)
    page.locator("#conn-state .badge-good").wait_for()
    assert page.evaluate("window.tetherConsole.link.drops") == 1
    page.get_by_label("Action", exact=True).fill("ping")
    page.get_by_role("button", name="Send").click()
    assert '"pong": true' in page.locator("#command-result pre").inner_text()

    # a command of ours the broker refuses is not resent on reconnect (that would loop); it
    # ends at once with not_connected
    page.evaluate(
        "(() => { const cb = () => {}; cb.tetherCommand = 'x';"
        " window.tetherConsole.link.client.publish('tether/x/cmd/#', '{}', {qos: 1}, cb) })()"
    )
    page.wait_for_selector("#conn-state .badge-warn", timeout=5000)
    page.locator("#conn-state .badge-good").wait_for()
    page.wait_for_timeout(1000)
    assert page.evaluate("window.tetherConsole.link.drops") == 2
    assert page.evaluate("window.tetherConsole.link.state") == "connected"

    # QoS 1 behind the page's back: MQTT.js resends it after every reconnect, so the broker
    # drops every connection; the page gives up and says why
    page.evaluate("window.tetherConsole.link.client.publish('tether/x/cmd/#', '{}', {qos: 1})")
    alert = page.get_by_role("alert").filter(has_text="stopped reconnecting")
    alert.wait_for(timeout=40_000)
    assert page.get_by_role("button", name="Connect").is_visible()
    page.wait_for_timeout(500)
    assert page.evaluate("window.tetherConsole.link.state") == "disconnected"  # no auto-loop
    page.get_by_role("button", name="Connect").click()
    page.locator("#conn-state .badge-good").wait_for()


def test_keyboard_moves_between_tabs(console_page: Any, device: Bundle) -> None:
    cp = console_page()
    page = cp.open(f"#/d/{device.device}")
    overview = page.get_by_role("tab", name="Overview")
    overview.focus()
    page.keyboard.press("ArrowRight")  # apt, network, containers are not on this device
    command = page.get_by_role("tab", name="Command")
    assert command.get_attribute("aria-selected") == "true"
    assert page.evaluate("document.activeElement.dataset.tab") == "command"
    assert page.url.endswith(f"#/d/{device.device}/command")
    assert page.get_by_role("tab", name="Packages").is_hidden()


def test_restart_button_restarts_the_service(console_page: Any, device: Bundle) -> None:
    cp = console_page()
    page = cp.open(f"#/d/{device.device}")
    before = device.pid("stats")
    pid_cell = page.locator('#services tr[data-service="stats"] .svc-pid')
    pid_cell.filter(has_text=str(before)).wait_for()
    page.get_by_role("button", name="Restart stats").click()
    page.get_by_text(re.compile(r"stats: restart done, now RUNNING")).wait_for()
    after = wait_for(lambda: (p := device.pid("stats")) != before and p, 20, "a new stats pid")
    pid_cell.filter(has_text=str(after)).wait_for()

    page.get_by_role("button", name="Logs of stats").click()
    log = page.get_by_label("Log of stats")
    log.wait_for()
    assert "stats" in log.inner_text()  # the worker logs its start


def test_device_going_offline_is_shown(
    console_page: Any, pki: DevPki, ws_broker: Mosquitto
) -> None:
    b = ws_bundle(pki, ws_broker, ["stats"])
    try:
        b.start()
        cp = console_page()
        page = cp.open(f"#/d/{b.device}/command")
        page.locator("#device-state", has_text="online").wait_for()
        b.stop()
        page.locator("#device-state", has_text="offline").wait_for()
        banner = page.locator("#offline-banner")
        assert "is offline" in banner.inner_text()
        # a command to an offline device: "no answer" after its timeout, the page stays usable
        page.get_by_label("Timeout (s)").fill("1")
        page.get_by_label("Action", exact=True).fill("ping")
        page.get_by_role("button", name="Send").click()
        page.locator("#command-out [role=alert]", has_text="no_answer").wait_for()
        assert "No answer from" in page.locator("#command-out").inner_text()
        shot(page, "offline", full_page=False)
        page.get_by_role("link", name="Devices", exact=True).click()
        page.locator(f'tr[data-device="{b.device}"] .dev-state', has_text="offline").wait_for()
    finally:
        b.cleanup()
