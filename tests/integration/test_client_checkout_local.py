"""``stockctl.checkout`` over the local library (``stockctl.connect(url)``): the same interface
as over the warehouse client, on SQLite and on PostgreSQL (the ``sc`` fixture)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

import stockctl
from stockctl import errors
from stockctl.core.lines import Line
from stockctl.core.model import Reservation, ReservationStatus
from stockctl.library import Stockctl
from tests.conftest import new_id

S = ReservationStatus


@pytest.fixture
def stock(sc: Stockctl) -> tuple[str, str]:
    a, b = new_id("P"), new_id("P")
    for w in ("W-1", "W-2"):
        sc.add_warehouse(w)
    for p in (a, b):
        sc.add_product(p)
    sc.receive(a, "W-1", 10)
    sc.receive(b, "W-2", 4)
    return a, b


def reserved(sc: Stockctl, product: str) -> int:
    return sum(r.reserved for r in sc.stock(product).rows)


def test_happy_path_confirms(sc: Stockctl, stock: tuple[str, str]) -> None:
    a, b = stock
    seen: list[Reservation] = []

    def create_order(held: list[Reservation]) -> str:
        seen.extend(held)
        return "written"

    order = new_id("O")
    assert stockctl.checkout(
        sc, [(a, "W-1", 3), Line(b, None, 4)], create_order, order_id=order
    ) == ("written")
    assert sorted((r.product_id, r.warehouse_id, r.quantity) for r in seen) == sorted(
        [(a, "W-1", 3), (b, "W-2", 4)]
    )
    assert {sc.get_reservation(r.id).status for r in seen} == {S.CONFIRMED}
    assert (reserved(sc, a), reserved(sc, b)) == (3, 4)


def test_failure_releases_and_allow_split(sc: Stockctl, stock: tuple[str, str]) -> None:
    a, _ = stock
    sc.receive(a, "W-2", 5)
    seen: list[Reservation] = []

    def create_order(held: list[Reservation]) -> None:
        seen.extend(held)
        assert reserved(sc, a) == 12
        raise RuntimeError("order insert failed")

    with pytest.raises(RuntimeError):
        stockctl.checkout(sc, [(a, None, 12)], create_order, allow_split=True)
    assert sum(r.quantity for r in seen) == 12 and {r.warehouse_id for r in seen} == {"W-1", "W-2"}
    assert {sc.get_reservation(r.id).status for r in seen} == {S.RELEASED}
    assert reserved(sc, a) == 0


def test_refusal_holds_nothing(sc: Stockctl, stock: tuple[str, str]) -> None:
    a, b = stock
    with pytest.raises(errors.InsufficientStock):
        stockctl.checkout(sc, [(a, "W-1", 1), (b, "W-2", 5)], lambda held: None)
    assert (reserved(sc, a), reserved(sc, b)) == (0, 0)


def test_unconfirmed_holds_expire_at_their_ttl(
    sc: Stockctl, stock: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A confirm that fails (here: the hold already expired) is logged; the sweeper gives the
    units back."""
    caplog.set_level(logging.WARNING, "stockctl.checkout")
    a, _ = stock
    seen: list[Reservation] = []

    def slow_order(held: list[Reservation]) -> str:
        seen.extend(held)
        assert sc.expire_due(now=datetime.now(UTC) + timedelta(minutes=2)) == 1  # time passes
        return "written late"

    got = stockctl.checkout(sc, [(a, "W-1", 2)], slow_order, ttl=timedelta(seconds=60))
    assert got == "written late"
    assert [sc.get_reservation(r.id).status for r in seen] == [S.EXPIRED]
    assert any(m.startswith(f"confirm of reservation {seen[0].id} failed") for m in caplog.messages)
    assert reserved(sc, a) == 0


def test_a_retry_after_a_failed_order_holds_stock_again(
    sc: Stockctl, stock: tuple[str, str]
) -> None:
    """The same order id after ``create_order`` failed (an order id from a sequence whose
    insert rolled back): the first attempt's holds were released, so the retry must not get
    them back as if held, but hold stock afresh."""
    a, _ = stock
    order = new_id("O")

    def failing(held: list[Reservation]) -> None:
        raise RuntimeError("order insert failed")

    with pytest.raises(RuntimeError):
        stockctl.checkout(sc, [(a, "W-1", 3)], failing, order_id=order)
    assert reserved(sc, a) == 0

    seen: list[Reservation] = []
    stockctl.checkout(sc, [(a, "W-1", 3)], seen.extend, order_id=order)
    assert reserved(sc, a) == 3
    assert [sc.get_reservation(r.id).status for r in seen] == [S.CONFIRMED]

    again: list[Reservation] = []  # a crash-retry of the created order: the same holds, no more
    stockctl.checkout(sc, [(a, "W-1", 3)], again.extend, order_id=order)
    assert reserved(sc, a) == 3
    assert [r.id for r in again] == [r.id for r in seen]
