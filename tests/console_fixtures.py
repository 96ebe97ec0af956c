"""Fixtures for the web console tests: a broker with a WebSocket listener, the console's static
server, and headless Chromium (Debian's ``chromium``) driven by Playwright.

No browser is downloaded: Playwright is pointed at ``/usr/bin/chromium``. Set
``TETHER_CONSOLE_SCREENSHOTS=1`` to (re)write the screenshots in docs/screenshots/.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.console import start_console
from common.devbroker import Mosquitto, free_port
from common.pki import DevPki
from tests.harness import Bundle

CHROMIUM = os.environ.get("TETHER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
TIMEOUT_MS = 20_000


def screenshots_wanted() -> bool:
    return os.environ.get("TETHER_CONSOLE_SCREENSHOTS") == "1"


def shot(page: Any, name: str, full_page: bool = True) -> None:
    """Save a screenshot for the docs when asked to (TETHER_CONSOLE_SCREENSHOTS=1)."""
    if screenshots_wanted():
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.mouse.move(0, 0)  # no hover effects
        page.evaluate("document.activeElement && document.activeElement.blur(); scrollTo(0, 0)")
        page.wait_for_timeout(300)  # let charts and transitions settle
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


@pytest.fixture(scope="module")
def ws_broker(broker_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """A private broker with TLS for the devices and a WebSocket listener for the browser."""
    return broker_factory(ws_port=free_port())


@pytest.fixture(scope="module")
def console() -> Iterator[str]:
    url, stop = start_console(0)
    try:
        yield url
    finally:
        stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; no browser download)")
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class ConsolePage:
    """One browser tab on the console, connected to the broker, failing on script errors."""

    def __init__(self, browser: Any, console: str, broker: Mosquitto, **ctx: Any) -> None:
        self.context = browser.new_context(**ctx)
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", self._on_console)
        self.console = console
        self.broker_url = f"ws://127.0.0.1:{broker.ws_port}"

    def _on_console(self, m: Any) -> None:
        # A refused WebSocket is logged by the browser itself; the page shows it, not a bug.
        if m.type == "error" and "WebSocket connection to" not in m.text:
            self.errors.append(f"console: {m.text}")

    def open(self, hash_: str = "#/") -> Any:
        self.page.goto(f"{self.console}?broker={self.broker_url}{hash_}")
        self.page.wait_for_selector("#conn-state .badge-good")
        return self.page

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors


@pytest.fixture
def console_page(browser: Any, console: str, ws_broker: Mosquitto) -> Iterator[Any]:
    pages: list[ConsolePage] = []

    def make(**ctx: Any) -> ConsolePage:
        p = ConsolePage(browser, console, ws_broker, **ctx)
        pages.append(p)
        return p

    yield make
    for p in pages:
        p.close()


def ws_bundle(
    pki: DevPki, broker: Mosquitto, services: list[str], config: dict[str, Any] | None = None
) -> Bundle:
    """A bundle whose stats worker publishes telemetry twice a second."""
    cfg: dict[str, Any] = {"stats": {"interval": 0.5}, "health": {"mqtt_interval": 2.0}}
    cfg.update(config or {})
    return Bundle(pki, broker, services, cfg)
