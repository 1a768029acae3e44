"""The reservation use cases (``stockctl.core.reservations`` and ``lifecycle``) on the
in-memory store: holds, their life cycle, expiry and the invariants between rows and holds."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockctl.core import inventory, lifecycle, reservations
from stockctl.core.context import Context
from stockctl.core.model import ReservationStatus as S
from stockctl.core.reservations import Line
from stockctl.errors import (
    InsufficientStock,
    InvalidInput,
    InvalidTransition,
    ReservationExpired,
    ReservationNotFound,
)
from tests.fakes.clock import ManualClock
from tests.fakes.store import FakeStore


@pytest.fixture
def stocked(ctx: Context) -> Context:
    inventory.add_product(ctx, "P1")
    inventory.add_product(ctx, "P2")
    inventory.add_warehouse(ctx, "W1", priority=1)
    inventory.add_warehouse(ctx, "W2", priority=2)
    inventory.receive(ctx, "P1", "W1", 10)
    inventory.receive(ctx, "P1", "W2", 10)
    inventory.receive(ctx, "P2", "W2", 3)
    return ctx


def reserved(store: FakeStore, p: str, w: str) -> tuple[int, int]:
    row = store.get_inventory(p, w)
    assert row is not None
    return row.on_hand, row.reserved


def assert_holds_match_rows(store: FakeStore) -> None:
    assert store.reserved_drift(100) == []


def test_reserve_holds_units_for_fifteen_minutes(
    stocked: Context, store: FakeStore, clock: ManualClock
) -> None:
    r = reservations.reserve(stocked, "P1", "W1", 4, order_id="O-1")
    assert (r.status, r.quantity, r.order_id) == (S.ACTIVE, 4, "O-1")
    assert r.expires_at == clock.now + timedelta(minutes=15)
    assert reserved(store, "P1", "W1") == (10, 4)
    assert store.get_reservation(r.id) == r
    assert_holds_match_rows(store)


def test_a_reserve_that_does_not_fit_is_refused_and_changes_nothing(
    stocked: Context, store: FakeStore
) -> None:
    with pytest.raises(InsufficientStock):
        reservations.reserve(stocked, "P1", "W1", 11)
    assert reserved(store, "P1", "W1") == (10, 0)
    assert store.list_reservations() == []


def test_without_a_warehouse_the_best_priority_that_fits_is_chosen(stocked: Context) -> None:
    assert reservations.reserve(stocked, "P1", None, 8).warehouse_id == "W1"
    assert reservations.reserve(stocked, "P1", None, 8).warehouse_id == "W2"  # W1 has 2 left
    with pytest.raises(InsufficientStock):
        reservations.reserve(stocked, "P1", None, 8)


def test_checkout_reserves_every_line_or_none(stocked: Context, store: FakeStore) -> None:
    with pytest.raises(InsufficientStock):
        reservations.checkout(stocked, [Line("P1", "W1", 2), Line("P2", "W2", 4)])
    assert store.list_reservations() == []
    assert reserved(store, "P1", "W1") == (10, 0)
    held = reservations.checkout(
        stocked, [Line("P1", "W1", 2), Line("P2", "W2", 3)], order_id="O-2"
    )
    assert sorted((r.product_id, r.quantity) for r in held) == [("P1", 2), ("P2", 3)]
    assert {r.order_id for r in held} == {"O-2"}
    assert_holds_match_rows(store)


def test_split_checkout_spreads_a_line_over_warehouses(stocked: Context) -> None:
    held = reservations.checkout(stocked, [Line("P1", None, 15)], allow_split=True)
    assert sorted((r.warehouse_id, r.quantity) for r in held) == [("W1", 10), ("W2", 5)]


def test_confirm_then_fulfil_ships_the_units(stocked: Context, store: FakeStore) -> None:
    r = reservations.reserve(stocked, "P1", "W1", 3)
    with pytest.raises(InvalidTransition):
        lifecycle.fulfil(stocked, r.id)  # not confirmed yet
    assert lifecycle.confirm(stocked, r.id).status is S.CONFIRMED
    assert lifecycle.confirm(stocked, r.id).status is S.CONFIRMED  # a retry is harmless
    assert lifecycle.fulfil(stocked, r.id).status is S.FULFILLED
    assert reserved(store, "P1", "W1") == (7, 0)
    with pytest.raises(InvalidTransition):
        lifecycle.release(stocked, r.id)
    assert_holds_match_rows(store)


def test_release_gives_the_units_back_and_is_safe_to_retry(
    stocked: Context, store: FakeStore
) -> None:
    r = reservations.reserve(stocked, "P1", "W1", 3)
    assert lifecycle.release(stocked, r.id, "payment_failed").status is S.RELEASED
    assert lifecycle.release(stocked, r.id).status is S.RELEASED
    assert reserved(store, "P1", "W1") == (10, 0)
    with pytest.raises(InvalidTransition):
        lifecycle.confirm(stocked, r.id)


def test_release_order_frees_every_hold_of_the_order(stocked: Context, store: FakeStore) -> None:
    reservations.checkout(stocked, [Line("P1", "W1", 2), Line("P2", "W2", 1)], order_id="O-3")
    other = reservations.reserve(stocked, "P1", "W1", 1, order_id="O-4")
    freed = lifecycle.release_order(stocked, "O-3")
    assert sorted(r.product_id for r in freed) == ["P1", "P2"]
    assert reserved(store, "P1", "W1") == (10, 1)
    assert store.get_reservation(other.id) == other


def test_an_overdue_hold_expires_and_refuses_confirm(
    stocked: Context, store: FakeStore, clock: ManualClock
) -> None:
    r = reservations.reserve(stocked, "P1", "W1", 5)
    clock.advance(minutes=15)
    with pytest.raises(ReservationExpired):
        lifecycle.confirm(stocked, r.id)
    # the expiry itself committed although the confirm was refused
    expired = store.get_reservation(r.id)
    assert expired is not None and expired.status is S.EXPIRED
    assert reserved(store, "P1", "W1") == (10, 0)


def test_expire_due_frees_overdue_holds_only(
    stocked: Context, store: FakeStore, clock: ManualClock
) -> None:
    early = reservations.reserve(stocked, "P1", "W1", 2)
    clock.advance(minutes=10)
    late = reservations.reserve(stocked, "P1", "W1", 3)
    clock.advance(minutes=6)
    assert lifecycle.expire_due(stocked) == 1
    statuses = {r.id: r.status for r in store.list_reservations()}
    assert statuses == {early.id: S.EXPIRED, late.id: S.ACTIVE}
    assert reserved(store, "P1", "W1") == (10, 3)
    with pytest.raises(InvalidInput):
        lifecycle.expire_due(stocked, limit=0)


def test_extend_pushes_the_expiry_of_an_active_hold(
    stocked: Context, store: FakeStore, clock: ManualClock
) -> None:
    r = reservations.reserve(stocked, "P1", "W1", 1)
    clock.advance(minutes=10)
    extended = lifecycle.extend(stocked, r.id, timedelta(minutes=30))
    assert extended.expires_at == clock.now + timedelta(minutes=30)
    clock.advance(minutes=20)
    assert lifecycle.expire_due(stocked) == 0


def test_a_short_row_takes_back_its_overdue_holds_before_refusing(
    stocked: Context, store: FakeStore, clock: ManualClock
) -> None:
    reservations.reserve(stocked, "P1", "W1", 10)
    clock.advance(minutes=16)  # overdue, but the expiry job has not run
    r = reservations.reserve(stocked, "P1", "W1", 6)
    assert r.status is S.ACTIVE
    assert reserved(store, "P1", "W1") == (10, 6)
    assert_holds_match_rows(store)


def test_unknown_reservation_is_not_found(stocked: Context) -> None:
    with pytest.raises(ReservationNotFound):
        lifecycle.confirm(stocked, 12345)


def test_an_idempotent_reserve_holds_once(stocked: Context, store: FakeStore) -> None:
    a = reservations.reserve(stocked, "P1", "W1", 2, idempotency_key="r-1")
    b = reservations.reserve(stocked, "P1", "W1", 2, idempotency_key="r-1")
    assert a == b
    assert reserved(store, "P1", "W1") == (10, 2)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["reserve", "confirm", "release", "fulfil", "tick", "expire"]),
            st.integers(1, 6),
        ),
        max_size=40,
    )
)
def test_any_sequence_keeps_rows_and_holds_consistent(ops: list[tuple[str, int]]) -> None:
    ctx = Context(store=FakeStore(), clock=ManualClock())
    store, clock = ctx.store, ctx.clock
    assert isinstance(store, FakeStore) and isinstance(clock, ManualClock)
    inventory.add_product(ctx, "P1")
    inventory.add_warehouse(ctx, "W1")
    inventory.receive(ctx, "P1", "W1", 12)
    ids: list[int] = []
    for op, n in ops:
        try:
            if op == "reserve":
                ids.append(reservations.reserve(ctx, "P1", "W1", n).id)
            elif op == "tick":
                clock.advance(minutes=4 * n)
            elif op == "expire":
                lifecycle.expire_due(ctx)
            elif ids:
                target = ids[n % len(ids)]
                getattr(lifecycle, op)(ctx, target)
        except (InsufficientStock, InvalidTransition, ReservationExpired):
            pass
        row = store.get_inventory("P1", "W1")
        assert row is not None and 0 <= row.reserved <= row.on_hand
        assert store.reserved_drift(10) == []
    shipped = sum(r.quantity for r in store.list_reservations(status="FULFILLED", limit=1000))
    assert reserved(store, "P1", "W1")[0] == 12 - shipped
