"""Reserve, allocation, checkout, lifecycle, expiry, events, idempotency and reserved drift.

Every test runs on SQLite and on PostgreSQL (the ``sc`` fixture). What the library wrote is read
back with plain SQL on the store's engine, not through the library.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

import stockctl
from stockctl.core import lifecycle, reservations
from stockctl.core.context import Context
from stockctl.errors import (
    IdempotencyConflict,
    InsufficientStock,
    InvalidTransition,
    ReservationExpired,
)
from stockctl.library import Stockctl
from stockctl.store.tables import (
    idempotency_keys,
    inventory,
    metadata,
    outbox,
    stock_movements,
)
from stockctl.store.tables import (
    reservations as reservations_table,
)
from tests.conftest import new_id

RESERVED = "warehouse.stock.reserved"
RELEASED = "warehouse.stock.released"
UPDATED = "warehouse.stock.updated"
LOW = "warehouse.inventory.low_stock"
OUT = "warehouse.inventory.out_of_stock"
BACK = "warehouse.inventory.back_in_stock"


# -- helpers (plain SQL; shared by the other reservation test modules) -----------------------


class FakeClock:
    """A clock the test moves by hand; whole seconds, UTC."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def engine_of(sc: Stockctl) -> Engine:
    return sc.app.store.engine


def qty(sc: Stockctl, product_id: str, warehouse_id: str) -> tuple[int, int] | None:
    """(available, reserved) of a row, or None when there is no row."""
    stmt = select(inventory.c.quantity_available, inventory.c.quantity_reserved).where(
        inventory.c.product_id == product_id, inventory.c.warehouse_id == warehouse_id
    )
    with engine_of(sc).connect() as conn:
        found = conn.execute(stmt).first()
    return (found[0], found[1]) if found is not None else None


def all_rows(sc: Stockctl) -> list[dict[str, Any]]:
    with engine_of(sc).connect() as conn:
        return [dict(r) for r in conn.execute(select(inventory)).mappings()]


def reservation_rows(sc: Stockctl, product_id: str) -> list[dict[str, Any]]:
    t = reservations_table
    stmt = select(t).where(t.c.product_id == product_id).order_by(t.c.created_at, t.c.id)
    with engine_of(sc).connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def status_of(sc: Stockctl, reservation_id: str) -> str:
    t = reservations_table
    with engine_of(sc).connect() as conn:
        return str(conn.execute(select(t.c.status).where(t.c.id == reservation_id)).scalar_one())


def events(sc: Stockctl, product_id: str) -> list[dict[str, Any]]:
    """The product's outbox events (parsed CloudEvents), oldest first."""
    stmt = select(outbox.c.payload).where(outbox.c.subject == product_id).order_by(outbox.c.id)
    with engine_of(sc).connect() as conn:
        return [json.loads(p) for p in conn.execute(stmt).scalars()]


def event_types(sc: Stockctl, product_id: str) -> list[str]:
    return [e["type"] for e in events(sc, product_id)]


def ledger(sc: Stockctl, product_id: str) -> list[dict[str, Any]]:
    m = stock_movements
    stmt = select(m).where(m.c.product_id == product_id).order_by(m.c.id)
    with engine_of(sc).connect() as conn:
        return [dict(r) for r in conn.execute(stmt).mappings()]


def idempotency_count(sc: Stockctl) -> int:
    with engine_of(sc).connect() as conn:
        return len(conn.execute(select(idempotency_keys.c.key)).all())


def snapshot(sc: Stockctl) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: two equal snapshots mean nothing changed."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine_of(sc).connect() as conn:
        for table in metadata.sorted_tables:
            order = list(table.primary_key.columns)
            out[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(*order))]
    return out


def set_reserved_behind_the_back(sc: Stockctl, product_id: str, warehouse_id: str, n: int) -> None:
    with engine_of(sc).begin() as conn:
        done = conn.execute(
            text(
                "UPDATE inventory SET quantity_reserved = :n "
                "WHERE product_id = :p AND warehouse_id = :w"
            ),
            {"n": n, "p": product_id, "w": warehouse_id},
        )
        assert done.rowcount == 1


def assert_invariants(sc: Stockctl) -> None:
    """Every row: 0 <= reserved <= available, and reserved == its ACTIVE + CONFIRMED holds."""
    assert sc.verify_reserved() == []
    for r in all_rows(sc):
        assert 0 <= r["quantity_reserved"] <= r["quantity_available"], r


def stocked(sc: Stockctl, available: int = 20, **warehouses: int) -> tuple[str, str]:
    """A new product with ``available`` units in a new warehouse: (product, warehouse)."""
    p, w = new_id("P"), new_id("W")
    sc.add_product(p)
    sc.add_warehouse(w)
    sc.receive(p, w, available)
    return p, w


@pytest.fixture
def clocked(sc: Stockctl) -> Iterator[tuple[Context, FakeClock]]:
    clock = FakeClock()
    yield dataclasses.replace(sc.app.ctx, clock=clock), clock


# -- reserve ---------------------------------------------------------------------------------


def test_reserve_in_a_warehouse_holds_units_with_ledger_and_event(sc: Stockctl) -> None:
    p, w = stocked(sc, 20)
    before = datetime.now(UTC)
    r = sc.reserve(p, w, 5, order_id="order-1")

    assert (r.product_id, r.warehouse_id, r.quantity, r.status.value, r.order_id) == (
        p,
        w,
        5,
        "ACTIVE",
        "order-1",
    )
    assert r.expires_at - r.created_at == timedelta(minutes=15)  # the default TTL
    assert before - timedelta(seconds=5) <= r.created_at <= datetime.now(UTC)
    assert qty(sc, p, w) == (20, 5)
    assert sc.get_reservation(r.id) == r
    (stored,) = reservation_rows(sc, p)
    assert (stored["id"], stored["status"], stored["quantity"]) == (r.id, "ACTIVE", 5)

    move = ledger(sc, p)[-1]
    assert (move["kind"], move["delta_available"], move["delta_reserved"]) == ("reserve", 0, 5)
    assert (move["reservation_id"], move["reference"], move["version"]) == (r.id, "order-1", 2)

    assert event_types(sc, p) == [UPDATED, BACK, RESERVED]
    data = events(sc, p)[-1]["data"]
    assert data["reservation_id"] == r.id and data["order_id"] == "order-1"
    assert (data["quantity_available"], data["quantity_reserved"], data["sellable"]) == (20, 5, 15)
    assert (data["quantity"], data["delta"], data["delta_reserved"], data["version"]) == (
        5,
        -5,
        5,
        2,
    )
    assert_invariants(sc)


def test_reserve_whole_stock_then_one_more_is_refused(sc: Stockctl) -> None:
    p, w = stocked(sc, 7)
    sc.reserve(p, w, 7)
    before = snapshot(sc)
    with pytest.raises(InsufficientStock) as info:
        sc.reserve(p, w, 1)
    assert p in str(info.value) and w in str(info.value)
    assert info.value.context["asked"] == 1 and info.value.context["sellable"] == 0
    assert snapshot(sc) == before
    assert_invariants(sc)


def _warehouses(sc: Stockctl, p: str, spec: list[tuple[int, int, bool]]) -> list[str]:
    """Warehouses (priority, units of p, active) in the given order."""
    ids = []
    for priority, units, active in spec:
        w = new_id("W")
        sc.add_warehouse(w, priority=priority, active=active)
        if units:
            sc.receive(p, w, units)
        ids.append(w)
    return ids


def test_reserve_without_warehouse_takes_the_best_priority_that_can_serve(sc: Stockctl) -> None:
    p = new_id("P")
    sc.add_product(p)
    low, high, off = _warehouses(sc, p, [(50, 10, True), (5, 3, True), (1, 100, False)])

    assert sc.reserve(p, None, 2).warehouse_id == high  # priority 5 beats 50; 1 is inactive
    assert sc.reserve(p, None, 2).warehouse_id == low  # high has 1 sellable left: next one
    assert sc.reserve(p, None, 1).warehouse_id == high
    assert (qty(sc, p, high), qty(sc, p, low), qty(sc, p, off)) == ((3, 3), (10, 2), (100, 0))
    with pytest.raises(InsufficientStock):
        sc.reserve(p, None, 9)  # 8 sellable in low, none elsewhere active: never the inactive
    assert_invariants(sc)


def test_most_stock_strategy_takes_the_warehouse_with_most_sellable(
    sc: Stockctl, database_url: str
) -> None:
    p = new_id("P")
    sc.add_product(p)
    first, most, mid = _warehouses(sc, p, [(1, 5, True), (9, 30, True), (5, 20, True)])
    with stockctl.connect(database_url, allocation_strategy="most_stock") as most_stock:
        assert most_stock.reserve(p, None, 12).warehouse_id == most  # 30 -> 18 sellable
        assert most_stock.reserve(p, None, 1).warehouse_id == mid  # 20 beats 18
        assert most_stock.reserve(p, None, 3).warehouse_id == mid  # 19 beats 18
        assert most_stock.reserve(p, None, 17).warehouse_id == most  # 18 beats 16
    assert sc.reserve(p, None, 2).warehouse_id == first  # priority is still the default
    assert [qty(sc, p, w) for w in (first, most, mid)] == [(5, 2), (30, 29), (20, 4)]
    assert_invariants(sc)


def test_allow_split_spreads_a_line_in_priority_order(sc: Stockctl) -> None:
    p = new_id("P")
    sc.add_product(p)
    a, b, c = _warehouses(sc, p, [(1, 4, True), (2, 3, True), (3, 10, True)])
    sc.reserve(p, c, 6)  # c keeps 4 sellable: no single warehouse has 9

    with pytest.raises(InsufficientStock):
        sc.reserve(p, None, 9)
    before = snapshot(sc)
    with pytest.raises(InsufficientStock):
        sc.checkout([(p, None, 9)])  # no split unless asked
    with pytest.raises(InsufficientStock):
        sc.checkout([(p, None, 12)], allow_split=True)  # 11 sellable in all
    assert snapshot(sc) == before

    made = sc.checkout([(p, None, 9)], order_id="o-split", allow_split=True)
    assert [(r.warehouse_id, r.quantity) for r in made] == [(a, 4), (b, 3), (c, 2)]
    assert all(r.order_id == "o-split" and r.status.value == "ACTIVE" for r in made)
    assert [qty(sc, p, w) for w in (a, b, c)] == [(4, 4), (3, 3), (10, 8)]
    assert_invariants(sc)


# -- checkout --------------------------------------------------------------------------------


def test_checkout_is_all_or_nothing(sc: Stockctl) -> None:
    a, w = stocked(sc, 10)
    b = new_id("P")
    sc.add_product(b)
    sc.receive(b, w, 3)
    before = snapshot(sc)

    with pytest.raises(InsufficientStock) as info:
        sc.checkout([(a, w, 2), (b, w, 5)], order_id="o-1")
    assert b in str(info.value)
    with pytest.raises(InsufficientStock):
        sc.checkout([(b, w, 5), (a, w, 2)], order_id="o-1", idempotency_key=new_id("k"))
    assert snapshot(sc) == before  # no reservation, rows, ledger, outbox or key changed

    made = sc.checkout([(a, w, 2), (b, w, 3)], order_id="o-1")
    assert [(r.product_id, r.quantity) for r in made] == [(a, 2), (b, 3)]
    assert (qty(sc, a, w), qty(sc, b, w)) == ((10, 2), (3, 3))
    assert event_types(sc, b)[-2:] == [RESERVED, OUT]
    assert_invariants(sc)


def test_checkout_sums_lines_for_the_same_row(sc: Stockctl) -> None:
    p, w = stocked(sc, 6)
    before = snapshot(sc)
    with pytest.raises(InsufficientStock):
        sc.checkout([(p, w, 4), (p, w, 3)])  # each fits alone, together 7 > 6
    assert snapshot(sc) == before

    made = sc.checkout([(p, w, 2), (p, w, 3)], order_id="o-sum")
    assert [(r.warehouse_id, r.quantity) for r in made] == [(w, 5)]  # one hold of 5
    assert qty(sc, p, w) == (6, 5)
    assert len(reservation_rows(sc, p)) == 1
    assert_invariants(sc)


def test_checkout_lines_with_and_without_warehouse(sc: Stockctl) -> None:
    p = new_id("P")
    sc.add_product(p)
    first, second = _warehouses(sc, p, [(1, 5, True), (2, 5, True)])
    parse = reservations.Line.parse
    made = sc.checkout([(p, second, 4), parse(f"{p}:2"), parse(f"{p}:3")])  # 2 + 3 summed
    assert [(r.warehouse_id, r.quantity) for r in made] == [(second, 4), (first, 5)]
    (last,) = sc.checkout([parse(f"{p}:1")])
    assert last.warehouse_id == second  # first has nothing left
    assert (qty(sc, p, first), qty(sc, p, second)) == ((5, 5), (5, 5))
    assert_invariants(sc)


# -- lifecycle -------------------------------------------------------------------------------


def test_confirm_is_a_no_op_the_second_time_and_a_confirmed_hold_never_expires(
    sc: Stockctl,
) -> None:
    p, w = stocked(sc, 10)
    r = sc.reserve(p, w, 4, ttl=timedelta(minutes=1))
    confirmed = sc.confirm(r.id)
    assert confirmed.status.value == "CONFIRMED" and confirmed.expires_at == r.expires_at
    before = snapshot(sc)
    assert sc.confirm(r.id).status.value == "CONFIRMED"
    assert snapshot(sc) == before

    assert sc.expire_due(datetime.now(UTC) + timedelta(days=2)) == 0
    assert status_of(sc, r.id) == "CONFIRMED" and qty(sc, p, w) == (10, 4)
    assert_invariants(sc)


def test_confirm_after_expiry_raises_and_gives_the_units_back(
    sc: Stockctl, clocked: tuple[Context, FakeClock]
) -> None:
    ctx, clock = clocked
    p, w = stocked(sc, 10)
    r = reservations.reserve(ctx, p, w, 4, ttl=timedelta(minutes=1), order_id="o-late")
    clock.advance(minutes=1)  # expires_at == now: due

    with pytest.raises(ReservationExpired):
        lifecycle.confirm(ctx, r.id)
    assert status_of(sc, r.id) == "EXPIRED"
    assert qty(sc, p, w) == (10, 0)
    assert ledger(sc, p)[-1]["kind"] == "expire"
    released = events(sc, p)[-1]
    assert released["type"] == RELEASED
    assert released["data"]["reason"] == "expired" and released["data"]["reservation_id"] == r.id

    before = snapshot(sc)
    with pytest.raises(ReservationExpired):
        lifecycle.confirm(ctx, r.id)  # still a clear error, and nothing more changes
    assert snapshot(sc) == before
    assert_invariants(sc)


def test_release_gives_units_back_and_is_safe_to_retry(sc: Stockctl) -> None:
    p, w = stocked(sc, 10)
    r = sc.reserve(p, w, 4, order_id="o-rel")
    released = sc.release(r.id, reason="payment_failed")
    assert released.status.value == "RELEASED"
    assert qty(sc, p, w) == (10, 0)
    data = events(sc, p)[-1]["data"]
    assert events(sc, p)[-1]["type"] == RELEASED
    assert (data["reason"], data["reservation_id"], data["quantity"], data["delta"]) == (
        "payment_failed",
        r.id,
        4,
        4,
    )
    move = ledger(sc, p)[-1]
    assert (move["kind"], move["delta_reserved"], move["reason"]) == (
        "release",
        -4,
        "payment_failed",
    )

    before = snapshot(sc)
    assert sc.release(r.id).status.value == "RELEASED"
    assert snapshot(sc) == before
    with pytest.raises(InvalidTransition):
        sc.confirm(r.id)
    assert snapshot(sc) == before

    c = sc.reserve(p, w, 3)
    sc.confirm(c.id)
    assert sc.release(c.id).status.value == "RELEASED"  # CONFIRMED -> RELEASED (cancelled)
    assert qty(sc, p, w) == (10, 0)
    assert_invariants(sc)


def test_release_of_an_expired_hold_is_a_no_op(
    sc: Stockctl, clocked: tuple[Context, FakeClock]
) -> None:
    ctx, clock = clocked
    p, w = stocked(sc, 10)
    r = reservations.reserve(ctx, p, w, 4, ttl=timedelta(minutes=5))
    clock.advance(minutes=6)
    assert lifecycle.expire_due(ctx) == 1
    before = snapshot(sc)
    assert lifecycle.release(ctx, r.id).status.value == "EXPIRED"
    assert snapshot(sc) == before

    overdue = reservations.reserve(ctx, p, w, 2, ttl=timedelta(minutes=5))
    clock.advance(minutes=5)  # overdue, not swept: release answers as expired
    assert lifecycle.release(ctx, overdue.id).status.value == "EXPIRED"
    assert status_of(sc, overdue.id) == "EXPIRED" and qty(sc, p, w) == (10, 0)
    assert events(sc, p)[-1]["data"]["reason"] == "expired"
    assert_invariants(sc)


def test_fulfil_only_from_confirmed(sc: Stockctl) -> None:
    p, w = stocked(sc, 10)
    r = sc.reserve(p, w, 4, order_id="o-ship")
    before = snapshot(sc)
    with pytest.raises(InvalidTransition):
        sc.fulfil(r.id)  # ACTIVE: confirm first
    assert snapshot(sc) == before

    sc.confirm(r.id)
    done = sc.fulfil(r.id)
    assert done.status.value == "FULFILLED"
    assert qty(sc, p, w) == (6, 0)  # available and reserved both drop
    move = ledger(sc, p)[-1]
    assert (move["kind"], move["delta_available"], move["delta_reserved"]) == ("fulfil", -4, -4)
    assert events(sc, p)[-1]["data"]["reservation_id"] == r.id

    before = snapshot(sc)
    assert sc.fulfil(r.id).status.value == "FULFILLED"
    assert sc.confirm(r.id).status.value == "FULFILLED"
    with pytest.raises(InvalidTransition):
        sc.release(r.id)
    with pytest.raises(InvalidTransition):
        sc.extend(r.id, timedelta(minutes=5))
    assert snapshot(sc) == before

    released = sc.reserve(p, w, 1)
    sc.release(released.id)
    with pytest.raises(InvalidTransition):
        sc.fulfil(released.id)
    assert_invariants(sc)


def test_extend_pushes_expiry_of_active_holds_only(
    sc: Stockctl, clocked: tuple[Context, FakeClock]
) -> None:
    ctx, clock = clocked
    p, w = stocked(sc, 10)
    r = reservations.reserve(ctx, p, w, 4, ttl=timedelta(minutes=1))
    now = clock.advance(seconds=30)
    extended = lifecycle.extend(ctx, r.id, timedelta(minutes=10))
    assert extended.expires_at == now + timedelta(minutes=10)
    assert sc.get_reservation(r.id).expires_at == now + timedelta(minutes=10)

    clock.advance(minutes=5)
    assert lifecycle.expire_due(ctx) == 0
    assert status_of(sc, r.id) == "ACTIVE"
    clock.advance(minutes=5)  # now + 10 min: due
    with pytest.raises(ReservationExpired):
        lifecycle.extend(ctx, r.id, timedelta(minutes=10))
    assert status_of(sc, r.id) == "EXPIRED" and qty(sc, p, w) == (10, 0)

    c = reservations.reserve(ctx, p, w, 1)
    lifecycle.confirm(ctx, c.id)
    with pytest.raises(InvalidTransition):
        lifecycle.extend(ctx, c.id, timedelta(minutes=10))
    assert_invariants(sc)


def test_release_order_releases_every_hold_of_the_order(sc: Stockctl) -> None:
    p, w = stocked(sc, 20)
    q = new_id("P")
    sc.add_product(q)
    sc.receive(q, w, 20)
    mine = [sc.reserve(p, w, 2, order_id="o-A"), sc.reserve(q, w, 3, order_id="o-A")]
    mine += sc.checkout([(p, w, 1), (q, w, 1)], order_id="o-A")
    sc.confirm(mine[1].id)
    done = sc.reserve(p, w, 1, order_id="o-A")
    sc.release(done.id)
    other = sc.reserve(p, w, 5, order_id="o-B")

    released = sc.release_order("o-A")
    assert sorted(r.id for r in released) == sorted(r.id for r in mine)
    assert {r.status.value for r in released} == {"RELEASED"}
    assert (qty(sc, p, w), qty(sc, q, w)) == ((20, 5), (20, 0))
    assert status_of(sc, other.id) == "ACTIVE"
    before = snapshot(sc)
    assert sc.release_order("o-A") == []
    assert sc.release_order("o-none") == []
    assert snapshot(sc) == before
    assert_invariants(sc)


def test_expire_due_sweeps_only_overdue_active_holds(
    sc: Stockctl, clocked: tuple[Context, FakeClock]
) -> None:
    ctx, clock = clocked
    p, w = stocked(sc, 30)
    short = [
        reservations.reserve(ctx, p, w, n, ttl=timedelta(minutes=m))
        for n, m in ((1, 1), (2, 2), (3, 3))
    ]
    long = reservations.reserve(ctx, p, w, 4, ttl=timedelta(minutes=60))
    confirmed = reservations.reserve(ctx, p, w, 5, ttl=timedelta(minutes=1))
    lifecycle.confirm(ctx, confirmed.id)
    assert lifecycle.expire_due(ctx) == 0

    clock.advance(minutes=5)
    assert lifecycle.expire_due(ctx, limit=2) == 2  # the two that expired first
    assert [status_of(sc, r.id) for r in short] == ["EXPIRED", "EXPIRED", "ACTIVE"]
    assert lifecycle.expire_due(ctx) == 1
    assert lifecycle.expire_due(ctx) == 0
    assert [status_of(sc, r.id) for r in (*short, long, confirmed)] == [
        "EXPIRED",
        "EXPIRED",
        "EXPIRED",
        "ACTIVE",
        "CONFIRMED",
    ]
    assert qty(sc, p, w) == (30, 9)
    swept = [e for e in events(sc, p) if e["type"] == RELEASED]
    assert [(e["data"]["reason"], e["data"]["quantity"]) for e in swept] == [
        ("expired", 1),
        ("expired", 2),
        ("expired", 3),
    ]
    assert [m["kind"] for m in ledger(sc, p)[-3:]] == ["expire"] * 3
    assert_invariants(sc)


@pytest.mark.parametrize("warehouse_given", [True, False])
def test_an_overdue_hold_never_blocks_a_reserve(
    sc: Stockctl, clocked: tuple[Context, FakeClock], warehouse_given: bool
) -> None:
    ctx, clock = clocked
    p, w = stocked(sc, 10)
    old = reservations.reserve(ctx, p, w, 8, ttl=timedelta(minutes=1))
    with pytest.raises(InsufficientStock):
        reservations.reserve(ctx, p, w if warehouse_given else None, 4)  # not overdue yet
    assert status_of(sc, old.id) == "ACTIVE"

    clock.advance(minutes=2)  # overdue, and no sweeper has run
    new = reservations.reserve(ctx, p, w if warehouse_given else None, 4, order_id="o-new")
    assert new.warehouse_id == w
    assert status_of(sc, old.id) == "EXPIRED"
    assert qty(sc, p, w) == (10, 4)
    tail = events(sc, p)[-2:]
    assert [e["type"] for e in tail] == [RELEASED, RESERVED]
    assert tail[0]["data"]["reason"] == "expired" and tail[0]["data"]["reservation_id"] == old.id
    assert tail[1]["data"]["reservation_id"] == new.id
    assert lifecycle.expire_due(ctx) == 0  # nothing left for the sweeper
    assert_invariants(sc)


# -- events ----------------------------------------------------------------------------------


@pytest.mark.parametrize("with_key", [False, True], ids=["fast-path", "general-path"])
def test_reserve_and_release_emit_threshold_crossings(sc: Stockctl, with_key: bool) -> None:
    p, w = stocked(sc, 20)  # threshold 10
    key = iter(new_id("k") for _ in range(10)) if with_key else iter([None] * 10)

    sc.reserve(p, w, 5, idempotency_key=next(key))  # 20 -> 15: no crossing
    assert event_types(sc, p)[-1] == RESERVED
    low = sc.reserve(p, w, 6, idempotency_key=next(key))  # 15 -> 9: low
    out = sc.reserve(p, w, 9, idempotency_key=next(key))  # 9 -> 0: out
    sc.release(out.id)  # 0 -> 9: back
    sc.release(low.id)  # 9 -> 15: none
    sc.reserve(p, w, 15, idempotency_key=next(key))  # 15 -> 0: out, not low

    assert event_types(sc, p)[2:] == [
        RESERVED,
        RESERVED,
        LOW,
        RESERVED,
        OUT,
        RELEASED,
        BACK,
        RELEASED,
        RESERVED,
        OUT,
    ]
    crossings = [e for e in events(sc, p) if e["type"] in (LOW, OUT, BACK)]
    assert [(e["data"]["sellable"], e["data"]["delta"]) for e in crossings] == [
        (20, 20),  # the receive's back_in_stock
        (9, -6),
        (0, -9),
        (9, 9),
        (0, -15),
    ]
    versions = [e["data"]["version"] for e in events(sc, p)]
    assert versions == sorted(versions)
    for e in events(sc, p):
        assert e["specversion"] == "1.0" and e["subject"] == p
        assert (
            e["data"]["quantity_available"] - e["data"]["quantity_reserved"]
            == (e["data"]["sellable"])
        )
    assert_invariants(sc)


def test_fast_path_writes_the_same_events_as_the_general_path(pg_url: str) -> None:
    with stockctl.connect(pg_url) as sc:
        sc.init()
        store = sc.app.store
        fast_calls: list[bool] = []
        real_fast = store.reserve_fast

        def spy(*args: Any, **kwargs: Any) -> bool:
            fast_calls.append(real_fast(*args, **kwargs))
            return fast_calls[-1]

        store.reserve_fast = spy  # type: ignore[method-assign]
        w = new_id("W")
        sc.add_warehouse(w)
        fast_p, slow_p = new_id("P"), new_id("P")
        for p in (fast_p, slow_p):
            sc.add_product(p)
            sc.receive(p, w, 20)

        for n, order in ((5, "o-1"), (6, None), (9, "o-3")):  # none, low, out of stock
            a = sc.reserve(fast_p, w, n, order_id=order)
            b = sc.reserve(slow_p, w, n, order_id=order, idempotency_key=new_id("k"))
            assert (a.quantity, a.order_id, a.status) == (b.quantity, b.order_id, b.status)
        assert fast_calls == [True, True, True]  # keyed reserves never take the fast path

        def comparable(p: str, e: dict[str, Any]) -> tuple[Any, ...]:
            data = dict(e["data"])
            for volatile in ("reservation_id", "expires_at"):
                assert (volatile in data) == (e["type"] == RESERVED)
                data.pop(volatile, None)
            assert data.pop("product_id") == p
            head = {k: v for k, v in e.items() if k not in ("id", "time", "subject", "data")}
            return e["type"], sorted(data), data, head

        fast_events, slow_events = events(sc, fast_p), events(sc, slow_p)
        assert [e["type"] for e in fast_events] == [UPDATED, BACK] + [RESERVED, RESERVED, LOW] + [
            RESERVED,
            OUT,
        ]
        assert [comparable(fast_p, e) for e in fast_events] == [
            comparable(slow_p, e) for e in slow_events
        ]

        def ledger_rows(p: str) -> list[tuple[Any, ...]]:
            skip = ("id", "product_id", "reservation_id", "created_at")
            return [tuple(v for k, v in m.items() if k not in skip) for m in ledger(sc, p)]

        assert ledger_rows(fast_p) == ledger_rows(slow_p)
        fast_r = reservation_rows(sc, fast_p)
        assert [m["reservation_id"] for m in ledger(sc, fast_p)[1:]] == [r["id"] for r in fast_r]
        assert [(r["quantity"], r["status"]) for r in fast_r] == [
            (r["quantity"], r["status"]) for r in reservation_rows(sc, slow_p)
        ]
        for r in fast_r:
            assert r["expires_at"] - r["created_at"] == timedelta(minutes=15)

        with pytest.raises(InsufficientStock):  # short: falls through to the general path
            sc.reserve(fast_p, w, 1)
        assert fast_calls[-1] is False
        assert_invariants(sc)


# -- idempotency -----------------------------------------------------------------------------


def test_same_key_same_request_returns_the_first_reservation(sc: Stockctl) -> None:
    p, w = stocked(sc, 10)
    key = new_id("key")
    first = sc.reserve(p, w, 3, order_id="o-1", idempotency_key=key)
    before = snapshot(sc)
    again = sc.reserve(p, w, 3, order_id="o-1", idempotency_key=key)
    assert again == first
    assert snapshot(sc) == before  # no second hold, ledger line or event
    assert qty(sc, p, w) == (10, 3)

    made = sc.checkout([(p, w, 1), (p, None, 1)], idempotency_key=key + "-c")
    assert sc.checkout([(p, w, 1), (p, None, 1)], idempotency_key=key + "-c") == made
    assert qty(sc, p, w) == (10, 5)
    assert_invariants(sc)


def test_same_key_different_request_is_a_conflict(sc: Stockctl) -> None:
    p, w = stocked(sc, 10)
    key = new_id("key")
    sc.reserve(p, w, 3, idempotency_key=key)
    before = snapshot(sc)
    for differs in (
        lambda: sc.reserve(p, w, 4, idempotency_key=key),
        lambda: sc.reserve(p, w, 3, order_id="other", idempotency_key=key),
        lambda: sc.reserve(p, w, 3, ttl=timedelta(minutes=5), idempotency_key=key),
        lambda: sc.checkout([(p, w, 3)], idempotency_key=key),
        lambda: sc.adjust(p, w, 1, reason="count", idempotency_key=key),
    ):
        with pytest.raises(IdempotencyConflict):
            differs()
    assert snapshot(sc) == before
    assert_invariants(sc)


def test_a_failed_request_does_not_use_up_its_key(sc: Stockctl) -> None:
    p, w = stocked(sc, 2)
    key = new_id("key")
    with pytest.raises(InsufficientStock):
        sc.reserve(p, w, 5, idempotency_key=key)
    assert idempotency_count(sc) == 0
    sc.receive(p, w, 3)
    assert sc.reserve(p, w, 5, idempotency_key=key).quantity == 5
    assert idempotency_count(sc) == 1


def test_an_expired_key_may_be_reused(sc: Stockctl, clocked: tuple[Context, FakeClock]) -> None:
    ctx, clock = clocked
    p, w = stocked(sc, 10)
    key = new_id("key")
    first = reservations.reserve(ctx, p, w, 2, idempotency_key=key)
    clock.advance(hours=23, minutes=59)
    assert reservations.reserve(ctx, p, w, 2, idempotency_key=key) == first
    with pytest.raises(IdempotencyConflict):
        reservations.reserve(ctx, p, w, 3, idempotency_key=key)

    clock.advance(minutes=2)  # 24 h and a minute after the first use
    reused = reservations.reserve(ctx, p, w, 3, idempotency_key=key)
    assert reused.id != first.id and reused.quantity == 3
    again = reservations.reserve(ctx, p, w, 3, idempotency_key=key)
    assert again == reused
    assert qty(sc, p, w) == (10, 5)
    assert idempotency_count(sc) == 1
    assert_invariants(sc)


# -- reserved drift --------------------------------------------------------------------------


def test_verify_reserved_finds_drift_and_repairs_it_with_a_ledger_line(sc: Stockctl) -> None:
    p, w = stocked(sc, 20)
    sc.reserve(p, w, 3)
    kept = sc.reserve(p, w, 2)
    sc.confirm(kept.id)
    sc.release(sc.reserve(p, w, 4).id)
    assert sc.verify_reserved() == []

    set_reserved_behind_the_back(sc, p, w, 9)
    (found,) = sc.verify_reserved()
    assert (found.drift.product_id, found.drift.warehouse_id) == (p, w)
    assert (found.drift.reserved, found.drift.expected_reserved) == (9, 5)
    assert found.repaired is False
    assert qty(sc, p, w) == (20, 9)  # verify alone changes nothing

    (fixed,) = sc.verify_reserved(repair=True)
    assert fixed.repaired is True
    assert qty(sc, p, w) == (20, 5)
    move = ledger(sc, p)[-1]
    assert (move["kind"], move["delta_reserved"], move["quantity_reserved"]) == ("repair", -4, 5)
    assert sc.verify_reserved() == []
    assert_invariants(sc)


def test_verify_reports_drift_it_cannot_repair(sc: Stockctl) -> None:
    p, w = stocked(sc, 10)
    sc.reserve(p, w, 6)
    with engine_of(sc).begin() as conn:
        conn.execute(
            text(
                "UPDATE inventory SET quantity_available = 4, quantity_reserved = 4 "
                "WHERE product_id = :p"
            ),
            {"p": p},
        )
    (result,) = sc.verify_reserved(repair=True)
    assert result.repaired is False and "exceed" in result.note
    assert qty(sc, p, w) == (4, 4)
