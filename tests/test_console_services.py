"""The web console's service tabs end to end (headless Chromium, real broker, real bundle and
the real backends): a fixture package installed with a progress bar (apt), a container started,
its logs shown and stopped (containers, with a locally imported image), and an Ethernet
interface configured (network, NetworkManager in its namespace).

Each test needs root and its service's system fixtures (tests/apt_fixtures.py,
tests/containers_fixtures.py, tests/network_fixtures.py) and skips with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.devbroker import Mosquitto
from common.pki import DevPki
from tests.console_fixtures import browser, console, console_page, shot, ws_broker, ws_bundle
from tests.harness import IS_ROOT, Bundle, run_sync

REPO = Path(__file__).resolve().parent.parent
__all__ = ["browser", "console", "console_page", "ws_broker"]

pytestmark = pytest.mark.system


def needs_service(name: str) -> None:
    if not (REPO / "services" / name / "actions.py").is_file():
        pytest.skip(f"the {name} service is not in this tree yet (services/{name}/actions.py)")
    if not IS_ROOT:
        pytest.skip(f"the {name} console test drives the real backend: run as root (CI does)")


# Progress values the page showed, recorded in the page as they change (a job can be faster
# than polling from here).
RECORD_PROGRESS = """() => {
  window.__progress = [];
  new MutationObserver((muts) => {
    for (const m of muts) {
      const v = m.target.getAttribute && m.target.getAttribute("aria-valuenow");
      if (m.attributeName === "aria-valuenow" && v !== null) window.__progress.push(Number(v));
    }
  }).observe(document.body, {subtree: true, attributes: true, attributeFilter: ["aria-valuenow"]});
}"""


# --- packages -------------------------------------------------------------------------------


@pytest.fixture
def apt_device(
    pki: DevPki, ws_broker: Mosquitto, request: pytest.FixtureRequest
) -> Iterator[Bundle]:
    needs_service("apt")
    from tests.apt_fixtures import purge_fixtures

    apt_dirs = request.getfixturevalue("apt_dirs")
    repo = request.getfixturevalue("fixture_repo")
    b = ws_bundle(
        pki, ws_broker, ["apt"], {"apt": apt_dirs.config(), "gateway": {"request_timeout": 20.0}}
    )
    purge_fixtures()
    try:
        b.start()
        args = {
            "file": "tether-fixture.sources",
            "uris": [repo.uri],
            "suites": ["./"],
            "key": repo.key,
        }
        reply = run_sync(b.call("apt", "repos/add", args))
        assert reply["ok"], reply
        yield b
    finally:
        b.cleanup()
        purge_fixtures()


def test_packages_install_with_progress(console_page: Any, apt_device: Bundle) -> None:
    from tests.apt_fixtures import PREFIX, installed_fixtures

    plain = f"{PREFIX}plain"
    cp = console_page(viewport={"width": 1280, "height": 1000})
    page = cp.open(f"#/d/{apt_device.device}/packages")
    page.locator('#repo-list tr[data-repo="tether-fixture.sources#0"]').wait_for()

    page.get_by_role("button", name="Update package lists").click()
    update = page.get_by_role("region", name="Job Update package lists")
    update.locator(".badge", has_text="succeeded").wait_for(timeout=60_000)

    # a bad package name: the device's message is shown, nothing runs
    page.get_by_label("Packages to install").fill("Bad_Name!")
    page.get_by_role("button", name="Install", exact=True).click()
    alert = page.locator("#package-jobs [role=alert]").first
    alert.wait_for()
    assert "invalid_request" in alert.inner_text() and "Bad_Name!" in alert.inner_text()

    page.get_by_label("Search", exact=True).fill(PREFIX)
    page.get_by_label("Show").select_option("all")
    row = page.locator(f'#package-list tr[data-package="{plain}"]')
    row.locator(".pkg-status", has_text="not-installed").wait_for()
    page.evaluate(RECORD_PROGRESS)
    row.get_by_role("button", name=f"Install {plain}").click()
    job = page.get_by_role("region", name=f"Job Install {plain}")
    job.locator(".badge", has_text="succeeded").wait_for(timeout=90_000)
    bar = job.get_by_role("progressbar")
    assert bar.get_attribute("aria-valuenow") == "100"
    seen = page.evaluate("window.__progress")
    assert any(0 < v < 100 for v in seen), seen  # the bar moved through the install
    assert f"Setting up {plain}" in (job.locator(".job-out").text_content() or "")
    row.locator(".pkg-status", has_text="installed").wait_for()  # the list was reloaded
    assert installed_fixtures().get(plain) == "installed"
    shot(page, "packages")


# --- containers -----------------------------------------------------------------------------


@pytest.fixture
def containers_device(
    pki: DevPki, ws_broker: Mosquitto, request: pytest.FixtureRequest
) -> Iterator[tuple[Bundle, Any]]:
    needs_service("containers")
    env = request.getfixturevalue("docker_env")
    b = ws_bundle(
        pki,
        ws_broker,
        ["containers"],
        {"containers": {"docker_host": env.host, "call_timeout": 10.0, "probe_interval": 1}},
    )
    try:
        b.start()
        yield b, env
    finally:
        b.cleanup()


def test_containers_run_logs_stop_remove_and_pull(
    console_page: Any, containers_device: tuple[Bundle, Any]
) -> None:
    b, env = containers_device
    name = f"console-{uuid.uuid4().hex[:8]}"
    cp = console_page(viewport={"width": 1280, "height": 1000})
    page = cp.page
    page.on("dialog", lambda d: d.accept())  # "Remove container ...?"
    cp.open(f"#/d/{b.device}/containers")
    client = env.client()
    try:
        page.locator("#image-list tbody tr").first.wait_for()
        form = page.get_by_role("form", name="Run a container")
        # a bad name: the device's message is shown
        form.get_by_label("Image").fill(env.image)
        form.get_by_label("Name").fill("bad name!")
        form.get_by_role("button", name="Run").click()
        alert = page.locator("#run-out [role=alert]")
        alert.wait_for()
        assert "invalid_request" in alert.inner_text() and "bad name!" in alert.inner_text()

        form.get_by_label("Name").fill(name)
        form.get_by_label("Command").fill(
            'sh -c \'trap "exit 0" TERM; echo hello-from-console; i=0; '
            "while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done'"
        )
        form.get_by_label("Restart policy").select_option("no")
        form.get_by_role("button", name="Run").click()
        page.locator("#run-out", has_text=f"{name} is running").wait_for(timeout=60_000)
        row = page.locator(f'#container-list tr[data-container="{name}"]')
        row.locator(".ctr-state", has_text="running").wait_for()

        row.get_by_role("button", name=f"Logs of {name}").click()
        log = page.locator("#container-log-text")
        log.filter(has_text="hello-from-console").wait_for()
        # following the log appends the container's new lines as they come
        page.get_by_role("button", name="Follow").click()
        page.get_by_role("button", name="Stop following").wait_for()
        first: int | None = None
        for _ in range(100):
            ticks = [int(n) for n in re.findall(r"tick-(\d+)", log.inner_text())]
            first = first if first is not None or not ticks else ticks[-1]
            if first is not None and ticks[-1] >= first + 5:
                break
            page.wait_for_timeout(100)
        else:
            raise AssertionError(f"the followed log did not grow: {log.inner_text()[-300:]}")
        assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), ticks  # no gap, no repeat
        shot(page, "containers")
        page.get_by_role("button", name="Stop following").click()
        page.get_by_role("button", name="Follow").wait_for()

        row.get_by_role("button", name=f"Stop {name}").click()
        row.locator(".ctr-state", has_text="exited").wait_for(timeout=30_000)
        assert client.containers.get(name).status == "exited"
        row.get_by_role("button", name=f"Remove {name}").click()
        row.wait_for(state="detached")

        # a pull from the private registry, with progress, after a login
        login = run_sync(
            b.call(
                "containers",
                "login",
                {"registry": env.registry, "username": env.username, "password": env.password},
            )
        )
        assert login["ok"], login
        page.evaluate(RECORD_PROGRESS)
        page.get_by_label("Image to pull").fill(env.private_image)
        page.get_by_role("button", name="Pull", exact=True).click()
        job = page.get_by_role("region", name=f"Job Pull {env.private_image}")
        job.locator(".badge", has_text="succeeded").wait_for(timeout=60_000)
        assert job.get_by_role("progressbar").get_attribute("aria-valuenow") == "100"
        page.locator("#image-list", has_text=env.private_image).wait_for()
    finally:
        with contextlib.suppress(Exception):
            client.containers.get(name).remove(force=True)
        with contextlib.suppress(Exception):
            client.images.remove(env.private_image, force=True)
        with contextlib.suppress(Exception):
            run_sync(b.call("containers", "logout", {"registry": env.registry}))
        client.close()


# --- network --------------------------------------------------------------------------------


@pytest.fixture
def network_device(
    pki: DevPki, ws_broker: Mosquitto, request: pytest.FixtureRequest
) -> Iterator[Bundle]:
    needs_service("network")
    nm = request.getfixturevalue("nm_env")
    b = ws_bundle(
        pki,
        ws_broker,
        ["network"],
        {
            "network": {
                "dbus_address": nm.address,
                "protected_interfaces": ["eth0"],
                "rollback_timeout": 20,
                "link_settle": 1.5,
            }
        },
    )
    try:
        b.start()
        yield b
    finally:
        with contextlib.suppress(Exception):
            run_sync(b.run_job("network", "connections/delete", {"connection": "tether-eth1"}, 30))
        b.cleanup()


def test_network_configure_ethernet(console_page: Any, network_device: Bundle) -> None:
    b = network_device
    cp = console_page(viewport={"width": 1280, "height": 1100})
    page = cp.open(f"#/d/{b.device}/network")
    for iface in ("eth0", "eth1"):
        page.locator(f'#net-devices tr[data-iface="{iface}"]').wait_for()
    assert "You will not lose the device" in page.locator("main").inner_text()

    form = page.get_by_role("form", name="Configure Ethernet")
    form.get_by_label("Interface").select_option("eth1")
    form.get_by_label("Static").check()
    form.get_by_label("Address/prefix").fill("10.1.1.5/24")
    form.get_by_label("Gateway").fill("10.2.2.2")
    form.get_by_role("button", name="Apply").click()
    alert = page.locator("[role=alert]", has_text="invalid_request")
    alert.wait_for()
    assert "gateway" in alert.inner_text()

    form.get_by_label("DHCP").check()
    form.get_by_role("button", name="Apply").click()
    job = page.locator(".job", has_text="Configure eth1")
    job.locator(".badge", has_text="succeeded").wait_for(timeout=60_000)
    page.locator('#net-connections tr[data-connection="tether-eth1"]').wait_for()
    page.locator('#net-devices tr[data-iface="eth1"]', has_text="10.78.0.").wait_for()
    shot(page, "network")


def _fixtures() -> None:
    """Make the services' session fixtures known to pytest in this module (when present)."""
    g = globals()
    for mod, names in (
        ("tests.apt_fixtures", ("apt_dirs", "fixture_repo")),
        ("tests.containers_fixtures", ("docker_env",)),
        ("tests.network_fixtures", ("nm_env",)),
    ):
        try:
            m = __import__(mod, fromlist=list(names))
        except ImportError:
            continue
        for n in names:
            if hasattr(m, n):
                g[n] = getattr(m, n)


_fixtures()
