"""Use-case tests run on the in-memory fakes (``tests/fakes``): no database file, no server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from stockctl.core.context import Context
from tests.fakes.clock import ManualClock
from tests.fakes.store import FakeStore


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def ctx(store: FakeStore, clock: ManualClock) -> Context:
    return Context(store=store, clock=clock)


@pytest.fixture(autouse=True)
def _no_servers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A unit test that reaches for a server fails at once instead of quietly needing one,
    and one that leaves a database file behind fails at its end."""

    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"a unit test tried to connect to {address!r}: use tests/fakes")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield
    databases = [p.name for p in tmp_path.rglob("*.db")]
    assert not databases, f"a unit test created a database file: {databases}"
