"""One operations contract (``stockctl.core.operations``), four implementations, one suite.

The same scenarios run against the library on SQLite and on PostgreSQL, and through a real
``stockctl serve`` with the sync and the async client: the same results (rows, ledger,
reservations), the same typed errors. The signatures are compared too: every operation has the
same parameters, in the same order, with the same defaults, everywhere.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import stockctl
from stockctl import errors
from stockctl.clients.warehouse import ClientOptions, WarehouseClient
from stockctl.clients.warehouse_async import AsyncWarehouseClient
from stockctl.core.lines import Line
from stockctl.core.model import ReservationStatus
from stockctl.core.operations import OPERATIONS, AsyncStockOperations, StockOperations
from stockctl.library import Stockctl
from tests.clientutil import Server, serve
from tests.conftest import new_id

TOKEN = "contract-" + "5b1d0f2e4a3e9a7c"
TOKENS = json.dumps([{"name": "suite", "token": TOKEN, "scopes": ["admin"]}])


def test_the_implementations_are_typed_as_the_contract() -> None:
    """What mypy checks of this module: each class satisfies its protocol."""

    def typed(sync: Stockctl, client: WarehouseClient, twin: AsyncWarehouseClient) -> None:
        a: StockOperations = sync
        b: StockOperations = client
        c: AsyncStockOperations = twin
        del a, b, c

    assert callable(typed)


@pytest.mark.parametrize("name", OPERATIONS)
def test_every_operation_has_one_signature(name: str) -> None:
    def shape(cls: type) -> list[tuple[str, Any, Any]]:
        sig = inspect.signature(getattr(cls, name))
        return [(p.name, p.kind, p.default) for p in sig.parameters.values()]

    library = shape(Stockctl)
    assert shape(WarehouseClient) == library
    assert shape(AsyncWarehouseClient) == library
    assert inspect.iscoroutinefunction(getattr(AsyncWarehouseClient, name))


class Awaited:
    """The async client driven from a test: each operation awaited on one event loop."""

    def __init__(self, client: AsyncWarehouseClient) -> None:
        self.client = client
        self.loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        op = getattr(self.client, name)
        return lambda *a, **k: self.loop.run_until_complete(op(*a, **k))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Server]]:
    workdir = tmp_path_factory.mktemp("contract")
    db = f"sqlite:///{workdir / 'served.db'}"
    with stockctl.connect(db) as sc:
        sc.init()
    with serve(db, workdir, STOCKCTL_API_TOKENS=TOKENS) as server:
        yield db, server


@pytest.fixture(params=["sqlite", "postgresql", "sync-client", "async-client"])
def ops(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Stockctl]]:
    """(the implementation under test, the library on the same database, for set-up)."""
    kind = request.param
    if kind in ("sqlite", "postgresql"):
        url = (
            f"sqlite:///{tmp_path / 'lib.db'}"
            if kind == "sqlite"
            else request.getfixturevalue("pg_url")
        )
        with stockctl.connect(url) as sc:
            sc.init()
            yield sc, sc
        return
    db, server = request.getfixturevalue("served")
    options = ClientOptions(server.url, token=TOKEN, retries=0)
    with stockctl.connect(db) as sc:
        if kind == "sync-client":
            with WarehouseClient(options) as client:
                yield client, sc
        else:
            twin = Awaited(AsyncWarehouseClient(options))
            try:
                yield twin, sc
            finally:
                twin.close()


def catalog(sc: Stockctl) -> tuple[str, str, str]:
    p, w1, w2 = new_id("P"), new_id("W"), new_id("W")
    sc.add_product(p)
    sc.add_warehouse(w1, priority=10)
    sc.add_warehouse(w2, priority=20)
    return p, w1, w2


def test_stock_writes_and_the_ledger(ops: tuple[Any, Stockctl]) -> None:
    o, sc = ops
    p, w1, w2 = catalog(sc)
    row = o.receive(p, w1, 10, reason="po", reference="PO-1")
    assert (row.on_hand, row.version) == (10, 1)
    assert o.adjust(p, w1, -2, reason="damage").on_hand == 8
    assert o.set_stock(p, w2, 5, low_stock_threshold=2, reason="count").low_stock_threshold == 2
    src, dst = o.transfer(p, w1, w2, 3, reason="rebalance")
    assert (src.on_hand, dst.on_hand) == (5, 8)
    summary = o.stock(p)
    assert sorted((r.warehouse_id, r.on_hand) for r in summary.rows) == sorted([(w1, 5), (w2, 8)])
    assert summary.total_sellable == 13
    assert [r.warehouse_id for r in o.stock(p, w2).rows] == [w2]
    moves = o.history(p)
    assert [m.kind.value for m in moves] == [
        "transfer_in",
        "transfer_out",
        "set",
        "adjust",
        "receive",
    ]
    assert [m.kind.value for m in o.history(p, w1, limit=1)] == ["transfer_out"]
    assert moves[-1].reference == "PO-1" and moves[-1].reason == "po"
    assert moves == sc.history(p)  # the same ledger as the library reads it
    with pytest.raises(errors.VersionConflict):
        o.set_stock(p, w1, 1, expect_version=1)
    with pytest.raises(errors.InsufficientStock):
        o.adjust(p, w1, -99, reason="x")
    with pytest.raises(errors.InvalidInput):
        o.receive(p, w1, 0)
    with pytest.raises(errors.ProductNotFound):
        o.history(new_id("P-none"))


def test_reservations_from_hold_to_shipment(ops: tuple[Any, Stockctl]) -> None:
    o, sc = ops
    p, w1, w2 = catalog(sc)
    sc.receive(p, w1, 4)
    sc.receive(p, w2, 6)
    order = new_id("O")
    held = o.reserve(p, w1, 3, ttl=timedelta(minutes=5), order_id=order, idempotency_key=order)
    assert (held.warehouse_id, held.quantity, held.status) == (w1, 3, ReservationStatus.ACTIVE)
    assert (
        o.reserve(p, w1, 3, ttl=timedelta(minutes=5), order_id=order, idempotency_key=order) == held
    )
    assert o.get_reservation(held.id) == held
    longer = o.extend(held.id, timedelta(hours=1))
    assert longer.expires_at > held.expires_at
    assert o.confirm(held.id).status is ReservationStatus.CONFIRMED
    assert o.fulfil(held.id).status is ReservationStatus.FULFILLED
    assert sc.stock(p, w1).rows[0].on_hand == 1

    anywhere = o.reserve(p, None, 2)  # the allocation strategy picks
    assert anywhere.warehouse_id in (w1, w2)
    assert o.release(anywhere.id, "changed mind").status is ReservationStatus.RELEASED
    assert o.release(anywhere.id).status is ReservationStatus.RELEASED  # a no-op, safe to retry

    lines = o.checkout([(p, w2, 2), Line(p, None, 1)], order_id=order, allow_split=True)
    assert sorted(r.quantity for r in lines) == [1, 2]
    listed = o.list_reservations(product_id=p, status="active")
    assert {r.id for r in listed} == {r.id for r in lines}
    assert [r.id for r in o.list_reservations(order_id=order, limit=1)] == [
        sc.list_reservations(order_id=order, limit=1)[0].id
    ]
    assert o.list_reservations(product_id=p, expired=True) == []
    released = o.release_order(order, "cancelled")
    assert {r.id for r in released} == {r.id for r in lines}
    assert sc.stock(p).total_reserved == 0

    with pytest.raises(errors.InsufficientStock):
        o.reserve(p, w1, 50)
    with pytest.raises(errors.ReservationNotFound):
        o.confirm(2**62 + 99)
    with pytest.raises(errors.InvalidInput):
        o.list_reservations(status="LOST")
    with pytest.raises(errors.InvalidTransition):
        o.fulfil(anywhere.id)
