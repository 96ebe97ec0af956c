"""Shared fixtures: a development PKI, a private TLS mosquitto and the real bundle."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.devbroker import Mosquitto, find_mosquitto, free_port
from common.pki import DevPki, make_dev_pki
from tests.harness import IS_ROOT, Bundle, short_tmpdir


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="system test: needs root (run as root, as CI does)")
    for item in items:
        if "system" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def pki() -> Iterator[DevPki]:
    d = short_tmpdir("tpki-")
    yield make_dev_pki(d, "device")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def broker_factory(pki: DevPki) -> Iterator[Callable[..., Mosquitto]]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (scripts/setup installs it)")
    made: list[Mosquitto] = []

    def make(**kw: Any) -> Mosquitto:
        m = Mosquitto(short_tmpdir("tmq-"), pki, free_port(), kw.pop("ws_port", None), **kw)
        m.start()
        made.append(m)
        return m

    yield make
    for m in made:
        m.kill()
        shutil.rmtree(m.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def broker(broker_factory: Callable[..., Mosquitto]) -> Mosquitto:
    """One broker shared by the session; tests that stop a broker make their own."""
    return broker_factory()


@pytest.fixture
def bundle_factory(pki: DevPki, broker: Mosquitto) -> Iterator[Callable[..., Bundle]]:
    """Start bundles: ``bundle_factory(services=["stats"], config={...}, broker=...)``."""
    made: list[Bundle] = []

    def make(
        services: list[str] | None = None,
        config: dict[str, Any] | None = None,
        broker_: Mosquitto | None = None,
        start: bool = True,
    ) -> Bundle:
        b = Bundle(pki, broker_ or broker, services or ["stats"], config)
        made.append(b)
        if start:
            b.start()
        return b

    yield make
    for b in made:
        b.cleanup()


@pytest.fixture(scope="module")
def stats_bundle(pki: DevPki, broker: Mosquitto) -> Iterator[Bundle]:
    """A bundle with the stats worker, shared by a module's read-only tests."""
    b = Bundle(pki, broker, ["stats"])
    try:
        b.start()
        yield b
    finally:
        b.cleanup()


@pytest.fixture(scope="session")
def repo() -> Path:
    return Path(__file__).resolve().parent.parent
