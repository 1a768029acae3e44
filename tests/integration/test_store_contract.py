"""One store contract, three stores: the in-memory fake (``tests/fakes/store.py``), SQLite and
PostgreSQL. What the use cases rely on of ``stockctl.core.ports.UseCaseStore`` is checked here
on each, so the fake the unit tests run on cannot drift from the real adapters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stockctl.bootstrap import build_store
from stockctl.core.events import CloudEvent
from stockctl.core.model import Inventory, Movement, MovementKind, Product, Reservation, Warehouse
from stockctl.core.model import ReservationStatus as S
from stockctl.core.ports import ReservedDrift
from stockctl.errors import RetryableConflict
from stockctl.settings import load_settings
from tests.conftest import _fresh_pg_database
from tests.fakes.store import FakeStore

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield FakeStore()
        return
    urls = (
        iter([f"sqlite:///{tmp_path / 'contract.db'}"])
        if request.param == "sqlite"
        else _fresh_pg_database()
    )
    for url in urls:
        sql = build_store(load_settings(database_url=url))
        sql.upgrade_schema()
        try:
            yield sql
        finally:
            sql.close()


def row(p: str, w: str, on_hand: int, reserved: int = 0, version: int = 1, **kw: Any) -> Inventory:
    return Inventory(p, w, on_hand, reserved, kw.pop("threshold", 10), version, T0, **kw)


def hold(rid: int, p: str, w: str, qty: int, status: S = S.ACTIVE, **kw: Any) -> Reservation:
    created = kw.pop("created", T0)
    expires = kw.pop("expires", created + timedelta(minutes=15))
    return Reservation(rid, p, w, qty, status, created, expires, created, **kw)


def catalog(store: Any, products: list[str], warehouses: list[tuple[str, int, bool]]) -> None:
    with store.transaction() as tx:
        for p in products:
            assert tx.add_product(Product(p, f"name {p}", T0))
        for w, priority, active in warehouses:
            assert tx.add_warehouse(Warehouse(w, f"name {w}", priority, active, T0))


def insert_rows(store: Any, *rows: Inventory) -> list[int]:
    ids = []
    with store.transaction() as tx:
        for r in rows:
            new_id = tx.new_inventory_id()
            tx.insert_inventory(Inventory(**{**_fields(r), "id": new_id}))
            ids.append(new_id)
    return ids


def _fields(r: Inventory) -> dict[str, Any]:
    return {f: getattr(r, f) for f in Inventory.__slots__}


def test_products_and_warehouses(store: Any) -> None:
    catalog(store, ["P2", "P1", "P3"], [("W2", 5, True), ("W1", 5, True), ("W0", 9, False)])
    with store.transaction() as tx:
        assert not tx.add_product(Product("P1", "again", T0))  # taken: nothing inserted
        assert tx.get_product("P1") == Product("P1", "name P1", T0)
        assert tx.get_warehouse("W9") is None
    assert store.get_product("P1") == Product("P1", "name P1", T0)
    assert [p.id for p in store.list_products(2, 1)] == ["P2", "P3"]
    assert [w.id for w in store.list_warehouses()] == ["W1", "W2", "W0"]  # priority, then id
    assert store.get_warehouse("W0") == Warehouse("W0", "name W0", 9, False, T0)
    assert store.has_products() and store.all_product_ids() == ["P1", "P2", "P3"]
    assert sorted(store.sample_product_ids(2))[0] in {"P1", "P2", "P3"}


def test_inventory_rows_lock_insert_and_update(store: Any) -> None:
    catalog(store, ["P1", "P2"], [("W1", 1, True), ("W2", 2, True)])
    a, b = insert_rows(store, row("P1", "W2", 5), row("P1", "W1", 7))
    assert a != b
    with store.transaction() as tx:
        locked = tx.lock_inventory([("P1", "W2"), ("P2", "W1"), ("P1", "W1")])
        assert sorted(locked) == [("P1", "W1"), ("P1", "W2")]  # missing rows are absent
        tx.update_inventory(Inventory(**{**_fields(locked[("P1", "W1")]), "version": 2}))
    assert [(r.warehouse_id, r.version) for r in store.product_inventory("P1")] == [
        ("W1", 2),
        ("W2", 1),
    ]
    got = store.get_inventory("P1", "W2")
    assert got is not None and (got.on_hand, got.id) == (5, a)
    assert store.inventory_key(b) == ("P1", "W1") and store.inventory_key(10**9) is None
    assert list(store.inventory_for_products(["P1", "P2"])) == ["P1"]
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.lock_inventory([("P1", "W2")])
        tx.update_inventory(row("P1", "W2", 1, version=5))  # not one version on: a bug
    with pytest.raises(RetryableConflict):
        insert_rows(store, row("P1", "W2", 1))  # created "concurrently"


def test_a_failed_unit_of_work_leaves_nothing(store: Any) -> None:
    catalog(store, ["P1"], [("W1", 1, True)])
    with pytest.raises(ValueError), store.transaction() as tx:
        tx.insert_inventory(Inventory(**{**_fields(row("P1", "W1", 3)), "id": 1}))
        tx.add_product(Product("P9", "x", T0))
        raise ValueError("boom")
    assert store.get_inventory("P1", "W1") is None and store.get_product("P9") is None


def test_ledger_lines_newest_first(store: Any) -> None:
    catalog(store, ["P1"], [("W1", 1, True), ("W2", 2, True)])
    with store.transaction() as tx:
        for i, w in enumerate(["W1", "W2", "W1"], start=1):
            m = Movement("P1", w, MovementKind.RECEIVE, 1, 0, i, 0, i, T0, reason=f"r{i}")
            tx.add_movements([m])
    assert [m.reason for m in store.history("P1", None, 10)] == ["r3", "r2", "r1"]
    assert [m.reason for m in store.history("P1", "W1", 1)] == ["r3"]
    assert store.history("P2", None, 10) == []


def test_events_land_in_the_outbox(store: Any) -> None:
    with store.transaction() as tx:
        tx.add_events(
            [
                CloudEvent(f"e{i}", "warehouse.stock.updated", "src", p, T0, {"n": i})
                for i, p in enumerate(["P1", "P2", "P1"])
            ]
        )
    assert [e.event_id for e in store.outbox_for("P1", 10)] == ["e2", "e0"]
    count, oldest = store.outbox_backlog()
    assert count == 3 and oldest == T0


def test_reservations_lock_claim_and_sum(store: Any) -> None:
    catalog(store, ["P1", "P2"], [("W1", 1, True)])
    insert_rows(store, row("P1", "W1", 10, reserved=6), row("P2", "W1", 10))
    later = T0 + timedelta(minutes=1)
    with store.transaction() as tx:
        ids = [tx.new_reservation_id() for _ in range(5)]
        assert len(set(ids)) == 5
        r1, r2, r3, r4, r5 = ids
        tx.add_reservations(
            [
                hold(r1, "P1", "W1", 1, order_id="O1", expires=T0 + timedelta(minutes=5)),
                hold(r2, "P1", "W1", 2, S.CONFIRMED, order_id="O1"),
                hold(r3, "P1", "W1", 3, created=later, expires=T0 + timedelta(minutes=2)),
                hold(r4, "P1", "W1", 4, S.RELEASED, order_id="O1"),
                hold(r5, "P2", "W1", 5, created=later),
            ]
        )
    now = T0 + timedelta(minutes=10)
    with store.transaction() as tx:
        assert tx.held_quantity("P1", "W1") == 6
        assert [r.id for r in tx.lock_order_reservations("O1")] == sorted([r1, r2])
        assert [r.id for r in tx.lock_overdue_for_row("P1", "W1", now)] == sorted([r1, r3])
        assert [r.id for r in tx.claim_due_reservations(now, 10)] == [r3, r1]  # soonest first
        assert [r.id for r in tx.claim_due_reservations(now, 1)] == [r3]
        locked = tx.lock_reservation(r1)
        assert locked is not None and locked.order_id == "O1"
        tx.update_reservation(Reservation(**{**_res(locked), "status": S.EXPIRED}))
        assert tx.lock_reservation(10**12) is None
    got = store.get_reservation(r1)
    assert got is not None and got.status is S.EXPIRED and got.quantity == 1
    newest_first = [r3, *sorted([r1, r2, r4])]  # by creation, then id
    assert [r.id for r in store.list_reservations(product_id="P1")] == newest_first
    assert [r.id for r in store.list_reservations(product_id="P1", limit=2)] == newest_first[:2]
    assert {r.id for r in store.list_reservations(order_id="O1")} == {r1, r2, r4}
    assert [r.id for r in store.list_reservations(status="CONFIRMED")] == [r2]
    assert [r.id for r in store.list_reservations(overdue_at=now)] == [r3]
    # P1 holds 2 + 3 now (r1 expired), but its counter still says 6; P2 holds 5 and says 0
    assert store.reserved_drift(10) == [
        ReservedDrift("P1", "W1", 10, 6, 5),
        ReservedDrift("P2", "W1", 10, 0, 5),
    ]


def _res(r: Reservation) -> dict[str, Any]:
    return {f: getattr(r, f) for f in Reservation.__slots__}


def test_product_warehouses_active_best_priority_first(store: Any) -> None:
    catalog(store, ["P1", "P2"], [("W1", 3, True), ("W2", 1, True), ("W3", 2, False)])
    insert_rows(store, row("P1", "W1", 1), row("P1", "W2", 1), row("P1", "W3", 1))
    with store.transaction() as tx:
        found = tx.product_warehouses(["P1", "P2"])
    assert {p: [w.id for w in ws] for p, ws in found.items()} == {"P1": ["W2", "W1"]}


def test_idempotency_keys_claim_once_within_the_window(store: Any) -> None:
    cutoff = T0 - timedelta(hours=24)
    with store.transaction() as tx:
        assert tx.claim_idempotency_key("k", "receive", "h1", T0, cutoff) is None
        tx.store_idempotent_response("k", '{"ok": 1}')
    with store.transaction() as tx:
        earlier = tx.claim_idempotency_key("k", "receive", "h2", T0, cutoff)
    assert earlier is not None
    assert (earlier.operation, earlier.request_hash, earlier.response) == (
        "receive",
        "h1",
        '{"ok": 1}',
    )
    after_window = T0 + timedelta(hours=25)
    with store.transaction() as tx:
        claim = tx.claim_idempotency_key("k", "adjust", "h3", after_window, T0 + timedelta(hours=1))
        assert claim is None  # the old claim expired: the key is free again


def test_the_one_step_reserve_is_there_or_says_it_is_not(store: Any) -> None:
    fast_id = store.fast_reservation_id()
    if fast_id is not None:
        # PostgreSQL: unique ids outside a transaction (the reserve tests cover the statement)
        assert isinstance(fast_id, int) and fast_id != store.fast_reservation_id()
        return
    catalog(store, ["P1"], [("W1", 1, True)])
    insert_rows(store, row("P1", "W1", 5))
    r = hold(1, "P1", "W1", 1)
    e = CloudEvent("e", "t", "s", "P1", T0, {})
    assert store.reserve_fast(r, "actor", e, e, e) is False
    assert store.reserve_merged([(r, e, e, e)], "actor") is None
    assert store.get_reservation(1) is None  # nothing was done
