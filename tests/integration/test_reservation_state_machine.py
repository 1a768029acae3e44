"""A hypothesis state machine over stock and reservation operations with a controllable clock,
checked against a plain Python model after every step, on SQLite and PostgreSQL.

One database per test function; every example uses fresh product and warehouse ids, and its
teardown sweeps its ACTIVE holds so the next example's global ``expire_due`` counts only its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from stockctl.core import inventory as inv
from stockctl.core import lifecycle, reservations
from stockctl.core.context import Context
from stockctl.core.model import Reservation
from stockctl.errors import (
    BelowReserved,
    InsufficientStock,
    InvalidTransition,
    InventoryNotFound,
    ReservationExpired,
    StockctlError,
)
from stockctl.library import Stockctl
from stockctl.store.tables import inventory as inventory_table
from stockctl.store.tables import reservations as reservations_table
from tests.conftest import new_id
from tests.integration.test_reservations import FakeClock, engine_of

START = datetime(2030, 1, 1, tzinfo=UTC)
HOLDING = ("ACTIVE", "CONFIRMED")
# Holds and clock steps from one small set of minutes (checkout holds take the default 15), so
# the clock often lands exactly on an expiry: ``expires_at == now`` is due.
TTL_MINUTES = st.sampled_from([1, 5, 15, 30])


@dataclass
class Hold:
    key: tuple[str, str]
    quantity: int
    status: str
    expires_at: datetime
    order_id: str


@dataclass
class Model:
    """What the database should hold: rows as [available, reserved], holds by id."""

    rows: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)

    def sellable(self, key: tuple[str, str]) -> int:
        available, reserved = self.rows[key]
        return available - reserved

    def end(self, rid: str, status: str) -> None:
        hold = self.holds[rid]
        assert hold.status in HOLDING
        self.rows[hold.key][1] -= hold.quantity
        hold.status = status

    def expire_overdue(self, key: tuple[str, str], now: datetime) -> None:
        for rid, hold in self.holds.items():
            if hold.key == key and hold.status == "ACTIVE" and hold.expires_at <= now:
                self.end(rid, "EXPIRED")

    def overdue(self, rid: str, now: datetime) -> bool:
        hold = self.holds[rid]
        return hold.status == "ACTIVE" and hold.expires_at <= now


def snapshot_model(model: Model) -> Model:
    return Model(
        {k: list(v) for k, v in model.rows.items()},
        {k: dataclasses.replace(v) for k, v in model.holds.items()},
    )


class ReservationMachine(RuleBasedStateMachine):
    sc: ClassVar[Stockctl]  # set by the test on a subclass

    def __init__(self) -> None:
        super().__init__()
        sc = self.sc
        self.clock = FakeClock(START)
        self.ctx: Context = dataclasses.replace(sc.app.ctx, clock=self.clock)
        self.products = [new_id("P"), new_id("P")]
        self.warehouses = [new_id("W"), new_id("W")]  # priority 1 and 2
        for p in self.products:
            inv.add_product(self.ctx, p)
        for priority, w in enumerate(self.warehouses, start=1):
            inv.add_warehouse(self.ctx, w, priority=priority)
        self.orders = [new_id("o"), new_id("o")]
        self.model = Model()

    def key(self, p: int, w: int) -> tuple[str, str]:
        return self.products[p], self.warehouses[w]

    def pick(self, i: int) -> str:
        return sorted(self.model.holds)[i % len(self.model.holds)]

    def expect(self, error: type[StockctlError] | None, call: Any) -> Any:
        """Run ``call``; it must raise ``error`` exactly (or nothing when None)."""
        if error is None:
            return call()
        with pytest.raises(StockctlError) as info:
            call()
        assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
        return None

    # -- stock ---------------------------------------------------------------------------

    @initialize(stock=st.lists(st.integers(0, 25), min_size=4, max_size=4))
    def opening_stock(self, stock: list[int]) -> None:
        """Most rows start stocked (0: no row yet), so holds are made early and often."""
        for (p, w), n in zip([(0, 0), (0, 1), (1, 0), (1, 1)], stock, strict=True):
            if n:
                self.receive(p, w, n)

    @rule(p=st.integers(0, 1), w=st.integers(0, 1), n=st.integers(1, 10))
    def receive(self, p: int, w: int, n: int) -> None:
        key = self.key(p, w)
        row = inv.receive(self.ctx, *key, n)
        self.model.rows.setdefault(key, [0, 0])[0] += n
        assert row.on_hand == self.model.rows[key][0]

    @rule(p=st.integers(0, 1), w=st.integers(0, 1), delta=st.integers(-20, 20).filter(bool))
    def adjust(self, p: int, w: int, delta: int) -> None:
        key, rows = self.key(p, w), self.model.rows
        if key not in rows and delta < 0:
            error: type[StockctlError] | None = InventoryNotFound
        elif key in rows and rows[key][0] + delta < 0:
            error = InsufficientStock  # more units taken than there are
        elif key in rows and rows[key][0] + delta < rows[key][1]:
            error = BelowReserved
        else:
            error = None
            rows.setdefault(key, [0, 0])[0] += delta
        self.expect(error, lambda: inv.adjust(self.ctx, *key, delta, reason="count"))

    @rule(p=st.integers(0, 1), src=st.integers(0, 1), n=st.integers(1, 20))
    def transfer(self, p: int, src: int, n: int) -> None:
        a, b = self.key(p, src), self.key(p, 1 - src)
        rows = self.model.rows
        if a not in rows:
            error: type[StockctlError] | None = InventoryNotFound
        elif rows[a][0] - n < rows[a][1]:
            error = InsufficientStock
        else:
            error = None
            rows[a][0] -= n
            rows.setdefault(b, [0, 0])[0] += n
        self.expect(error, lambda: inv.transfer(self.ctx, a[0], a[1], b[1], n))

    # -- holds ---------------------------------------------------------------------------

    @rule(
        p=st.integers(0, 1),
        w=st.sampled_from([0, 1, None]),
        n=st.integers(1, 12),
        ttl=TTL_MINUTES,
        order=st.integers(0, 1),
    )
    def reserve(self, p: int, w: int | None, n: int, ttl: int, order: int) -> None:
        self.hold(p, w, n, ttl, order)

    @precondition(lambda self: self.model.rows)
    @rule(i=st.integers(0, 3), extra=st.integers(1, 6), ttl=TTL_MINUTES)
    def reserve_more_than_sellable(self, i: int, extra: int, ttl: int) -> None:
        """Ask a row for more than its sellable units: only overdue holds can make room."""
        key = sorted(self.model.rows)[i % len(self.model.rows)]
        p, w = self.products.index(key[0]), self.warehouses.index(key[1])
        self.hold(p, w, max(self.model.sellable(key), 0) + extra, ttl, 0)

    def hold(self, p: int, w: int | None, n: int, ttl: int, order: int) -> None:
        now, model = self.clock.now, self.model
        before = snapshot_model(model)
        chosen: tuple[str, str] | None = None
        error: type[StockctlError] | None = None
        if w is not None:
            key = self.key(p, w)
            if key not in model.rows:
                error = InventoryNotFound
            else:
                if model.sellable(key) < n:
                    model.expire_overdue(key, now)
                if model.sellable(key) < n:
                    error = InsufficientStock
                chosen = key
        else:
            present = [self.key(p, i) for i in (0, 1) if self.key(p, i) in model.rows]
            for key in present:
                if model.sellable(key) < n:
                    model.expire_overdue(key, now)
            chosen = next((k for k in present if model.sellable(k) >= n), None)
            error = InsufficientStock if chosen is None else None
        if error is not None:
            self.model = before  # the whole transaction rolled back, expiries included
        call = lambda: reservations.reserve(  # noqa: E731
            self.ctx,
            self.products[p],
            None if w is None else self.warehouses[w],
            n,
            ttl=timedelta(minutes=ttl),
            order_id=self.orders[order],
        )
        r: Reservation | None = self.expect(error, call)
        if r is not None:
            assert chosen is not None and (r.product_id, r.warehouse_id) == chosen
            assert r.expires_at == now + timedelta(minutes=ttl)
            model.holds[r.id] = Hold(chosen, n, "ACTIVE", r.expires_at, self.orders[order])
            model.rows[chosen][1] += n

    @rule(
        lines=st.lists(
            st.tuples(st.integers(0, 1), st.integers(0, 1), st.integers(1, 8)),
            min_size=1,
            max_size=3,
        )
    )
    def checkout(self, lines: list[tuple[int, int, int]]) -> None:
        now, model = self.clock.now, self.model
        before = snapshot_model(model)
        totals: dict[tuple[str, str], int] = {}
        for p, w, n in lines:
            totals[self.key(p, w)] = totals.get(self.key(p, w), 0) + n
        error: type[StockctlError] | None = None
        for key, n in totals.items():
            if key not in model.rows:
                error = InventoryNotFound
                break
            if model.sellable(key) < n:
                model.expire_overdue(key, now)
            if model.sellable(key) < n:
                error = InsufficientStock
                break
            model.rows[key][1] += n
        if error is not None:
            self.model = before
        items = [reservations.Line(self.products[p], self.warehouses[w], n) for p, w, n in lines]
        call = lambda: reservations.checkout(self.ctx, items)  # noqa: E731
        made: list[Reservation] | None = self.expect(error, call)
        if made is not None:
            assert [((r.product_id, r.warehouse_id), r.quantity) for r in made] == list(
                totals.items()
            )
            for r in made:
                model.holds[r.id] = Hold(
                    (r.product_id, r.warehouse_id), r.quantity, "ACTIVE", r.expires_at, ""
                )

    @precondition(lambda self: self.model.holds)
    @rule(i=st.integers(0, 10**6))
    def confirm(self, i: int) -> None:
        rid, model = self.pick(i), self.model
        hold = model.holds[rid]
        error: type[StockctlError] | None = None
        if model.overdue(rid, self.clock.now):
            model.end(rid, "EXPIRED")
            error = ReservationExpired
        elif hold.status == "EXPIRED":
            error = ReservationExpired
        elif hold.status == "RELEASED":
            error = InvalidTransition
        elif hold.status == "ACTIVE":
            hold.status = "CONFIRMED"
        r = self.expect(error, lambda: lifecycle.confirm(self.ctx, rid))
        if r is not None:
            assert r.status.value == hold.status

    @precondition(lambda self: self.model.holds)
    @rule(i=st.integers(0, 10**6))
    def release(self, i: int) -> None:
        rid, model = self.pick(i), self.model
        hold = model.holds[rid]
        error: type[StockctlError] | None = None
        if model.overdue(rid, self.clock.now):
            model.end(rid, "EXPIRED")
        elif hold.status == "FULFILLED":
            error = InvalidTransition
        elif hold.status in HOLDING:
            model.end(rid, "RELEASED")
        r = self.expect(error, lambda: lifecycle.release(self.ctx, rid))
        if r is not None:
            assert r.status.value == hold.status

    @precondition(lambda self: self.model.holds)
    @rule(i=st.integers(0, 10**6), ttl=TTL_MINUTES)
    def extend(self, i: int, ttl: int) -> None:
        rid, model, now = self.pick(i), self.model, self.clock.now
        hold = model.holds[rid]
        error: type[StockctlError] | None = None
        if model.overdue(rid, now):
            model.end(rid, "EXPIRED")
            error = ReservationExpired
        elif hold.status == "EXPIRED":
            error = ReservationExpired
        elif hold.status != "ACTIVE":
            error = InvalidTransition
        else:
            hold.expires_at = now + timedelta(minutes=ttl)
        r = self.expect(error, lambda: lifecycle.extend(self.ctx, rid, timedelta(minutes=ttl)))
        if r is not None:
            assert r.expires_at == hold.expires_at

    @precondition(lambda self: self.model.holds)
    @rule(i=st.integers(0, 10**6))
    def fulfil(self, i: int) -> None:
        rid, model = self.pick(i), self.model
        hold = model.holds[rid]
        error: type[StockctlError] | None = None
        if model.overdue(rid, self.clock.now):
            model.end(rid, "EXPIRED")
            error = ReservationExpired
        elif hold.status == "EXPIRED":
            error = ReservationExpired
        elif hold.status in ("ACTIVE", "RELEASED"):
            error = InvalidTransition
        elif hold.status == "CONFIRMED":
            model.end(rid, "FULFILLED")
            model.rows[hold.key][0] -= hold.quantity
        r = self.expect(error, lambda: lifecycle.fulfil(self.ctx, rid))
        if r is not None:
            assert r.status.value == hold.status

    @rule(order=st.integers(0, 1))
    def release_order(self, order: int) -> None:
        model, now = self.model, self.clock.now
        expected = {}
        for rid, hold in model.holds.items():
            if hold.order_id == self.orders[order] and hold.status in HOLDING:
                model.end(rid, "EXPIRED" if model.overdue(rid, now) else "RELEASED")
                expected[rid] = hold.status
        done = lifecycle.release_order(self.ctx, self.orders[order])
        assert {r.id: r.status.value for r in done} == expected

    @rule()
    def expire_due(self) -> None:
        now, model = self.clock.now, self.model
        due = [rid for rid in model.holds if model.overdue(rid, now)]
        for rid in due:
            model.end(rid, "EXPIRED")
        assert lifecycle.expire_due(self.ctx) == len(due)

    @rule(minutes=TTL_MINUTES)
    def advance_time(self, minutes: int) -> None:
        self.clock.advance(minutes=minutes)

    # -- checks --------------------------------------------------------------------------

    @invariant()
    def database_matches_model(self) -> None:
        i, t = inventory_table, reservations_table
        with engine_of(self.sc).connect() as conn:
            rows = {
                (r.product_id, r.warehouse_id): [r.quantity_available, r.quantity_reserved]
                for r in conn.execute(select(i).where(i.c.product_id.in_(self.products)))
            }
            holds = {
                r.id: (r.status, r.quantity, r.expires_at)
                for r in conn.execute(select(t).where(t.c.product_id.in_(self.products)))
            }
        assert rows == self.model.rows
        assert holds == {
            rid: (h.status, h.quantity, h.expires_at) for rid, h in self.model.holds.items()
        }
        for key, (available, reserved) in rows.items():
            assert 0 <= reserved <= available
            assert reserved == sum(
                h.quantity
                for h in self.model.holds.values()
                if h.key == key and h.status in HOLDING
            )

    @invariant()
    def no_reserved_drift(self) -> None:
        assert self.sc.verify_reserved() == []

    def teardown(self) -> None:
        # Leave no ACTIVE hold behind for the next example's global sweep.
        lifecycle.expire_due(self.ctx, now=START + timedelta(days=3650), limit=100_000)


def test_reservations_match_a_simple_model(sc: Stockctl) -> None:
    run_state_machine_as_test(
        type("Machine", (ReservationMachine,), {"sc": sc}),
        settings=settings(
            max_examples=30,
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
