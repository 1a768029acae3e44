"""The domain rules: ids, quantities, reasons, stock status and how a row may change."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stockctl.core.model import (
    MAX_QUANTITY,
    Inventory,
    Movement,
    MovementKind,
    ReservationStatus,
    StockStatus,
    StockSummary,
    check_delta,
    check_id,
    check_quantity,
    check_reason,
    stock_status,
)
from stockctl.errors import BelowReserved, InsufficientStock, InvalidInput

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=5)


def make_row(
    on_hand: int = 10, reserved: int = 0, threshold: int = 3, version: int = 4
) -> Inventory:
    return Inventory("P1", "W1", on_hand, reserved, threshold, version, T0)


# ids ---------------------------------------------------------------------------------------------

GOOD_IDS = ["P", "p1", "SKU-123_a.b", "0", "x" * 64, "A.-_"]
BAD_IDS = [
    "",
    "a:b",
    "x" * 65,
    " p",
    "p ",
    "p\n",
    "\np",
    "-p",
    ".p",
    "_p",
    "p/q",
    "p*",
    "ünïcode",
    "p\tq",
    "{p}",
]


@pytest.mark.parametrize("value", GOOD_IDS)
def test_check_id_accepts_well_formed_ids(value: str) -> None:
    assert check_id(value, "product") == value


@pytest.mark.parametrize("value", BAD_IDS)
def test_check_id_refuses_malformed_ids(value: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_id(value, "warehouse")
    assert "warehouse" in str(caught.value)
    assert caught.value.context == {"field": "warehouse"}


@pytest.mark.parametrize("value", [None, 12, b"p1", ["p1"]])
def test_check_id_refuses_non_strings(value: Any) -> None:
    with pytest.raises(InvalidInput):
        check_id(value, "product")


# quantities and deltas ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 2, 1000, MAX_QUANTITY])
def test_check_quantity_accepts_positive_whole_numbers(value: int) -> None:
    assert check_quantity(value) == value


@pytest.mark.parametrize("value", [0, -1, MAX_QUANTITY + 1, 2**63])
def test_check_quantity_refuses_out_of_range(value: int) -> None:
    with pytest.raises(InvalidInput):
        check_quantity(value)


def test_check_quantity_allow_zero_accepts_zero_only_down_to_zero() -> None:
    assert check_quantity(0, allow_zero=True) == 0
    with pytest.raises(InvalidInput):
        check_quantity(-1, allow_zero=True)
    with pytest.raises(InvalidInput):
        check_quantity(MAX_QUANTITY + 1, allow_zero=True)


@pytest.mark.parametrize("value", [True, False, 1.0, 2.5, "3", None])
def test_check_quantity_refuses_non_integers(value: Any) -> None:
    with pytest.raises(InvalidInput):
        check_quantity(value, allow_zero=True)


def test_check_quantity_names_the_field() -> None:
    with pytest.raises(InvalidInput, match="expect_version"):
        check_quantity(-3, "expect_version", allow_zero=True)


@pytest.mark.parametrize("value", [1, -1, MAX_QUANTITY, -MAX_QUANTITY, 17, -17])
def test_check_delta_accepts_non_zero_in_range(value: int) -> None:
    assert check_delta(value) == value


@pytest.mark.parametrize("value", [0, MAX_QUANTITY + 1, -MAX_QUANTITY - 1, True, 1.5, "2"])
def test_check_delta_refuses_zero_out_of_range_and_non_integers(value: Any) -> None:
    with pytest.raises(InvalidInput):
        check_delta(value)


# reasons -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   ", "\t\n"])
def test_required_reason_refuses_missing_or_blank(value: str | None) -> None:
    with pytest.raises(InvalidInput, match="reason"):
        check_reason(value, required=True)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_optional_reason_turns_blank_into_none(value: str | None) -> None:
    assert check_reason(value, required=False) is None


def test_reason_is_stripped_and_bounded() -> None:
    assert check_reason("  damage  ", required=True) == "damage"
    assert check_reason("r" * 200, required=True) == "r" * 200
    with pytest.raises(InvalidInput, match="200"):
        check_reason("r" * 201, required=False)


# stock status ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sellable", "threshold", "expected"),
    [
        (-5, 10, StockStatus.OUT_OF_STOCK),
        (0, 10, StockStatus.OUT_OF_STOCK),
        (0, 0, StockStatus.OUT_OF_STOCK),
        (1, 10, StockStatus.LOW_STOCK),
        (10, 10, StockStatus.LOW_STOCK),
        (11, 10, StockStatus.IN_STOCK),
        (1, 0, StockStatus.IN_STOCK),
    ],
)
def test_stock_status(sellable: int, threshold: int, expected: StockStatus) -> None:
    assert stock_status(sellable, threshold) is expected


def test_row_status_uses_sellable_not_available() -> None:
    row = make_row(on_hand=20, reserved=18, threshold=5)
    assert row.sellable == 2
    assert row.status is StockStatus.LOW_STOCK
    assert make_row(on_hand=20, reserved=20).status is StockStatus.OUT_OF_STOCK


# with_quantities ---------------------------------------------------------------------------------


def test_with_quantities_returns_a_new_row_with_version_and_time_bumped() -> None:
    before = make_row(on_hand=10, reserved=2, version=4)
    after = before.with_quantities(15, 3, T1)
    assert (after.on_hand, after.reserved) == (15, 3)
    assert after.version == 5
    assert after.last_movement_at == T1
    assert (after.product_id, after.warehouse_id, after.low_stock_threshold) == ("P1", "W1", 3)
    assert (before.on_hand, before.version, before.last_movement_at) == (10, 4, T0)


def test_rows_are_immutable() -> None:
    row = make_row()
    with pytest.raises(FrozenInstanceError):
        row.on_hand = 99  # type: ignore[misc]


def test_with_quantities_allows_the_boundaries() -> None:
    before = make_row(on_hand=5, reserved=5)
    assert before.with_quantities(5, 5, T1).sellable == 0
    assert before.with_quantities(0, 0, T1).on_hand == 0
    assert before.with_quantities(MAX_QUANTITY, 5, T1).on_hand == MAX_QUANTITY


def test_with_quantities_refuses_available_below_reserved() -> None:
    before = make_row(on_hand=10, reserved=8)
    with pytest.raises(BelowReserved) as caught:
        before.with_quantities(7, 8, T1)
    assert caught.value.context == {"available": 10, "reserved": 8}
    assert "P1@W1" in str(caught.value)


def test_with_quantities_raises_the_given_shortage_error() -> None:
    with pytest.raises(InsufficientStock):
        make_row(on_hand=3).with_quantities(-1, 0, T1, short=InsufficientStock)


def test_with_quantities_refuses_negative_reserved() -> None:
    with pytest.raises(BelowReserved):
        make_row(on_hand=3, reserved=1).with_quantities(3, -1, T1)


def test_with_quantities_refuses_taking_more_units_than_there_are() -> None:
    with pytest.raises(InsufficientStock):
        make_row(on_hand=3).with_quantities(-1, 0, T1)
    with pytest.raises(InsufficientStock):  # whatever shortage error the caller names
        make_row(on_hand=3, reserved=2).with_quantities(-1, 2, T1, short=BelowReserved)


def test_with_quantities_refuses_more_than_the_maximum() -> None:
    with pytest.raises(InvalidInput, match=str(MAX_QUANTITY)):
        make_row().with_quantities(MAX_QUANTITY + 1, 0, T1)


# movements, summaries, statuses ------------------------------------------------------------------


def test_movement_between_records_deltas_and_the_state_after() -> None:
    before = make_row(on_hand=10, reserved=2, version=4)
    after = before.with_quantities(7, 2, T1)
    move = Movement.between(before, after, MovementKind.ADJUST, reason="damage", actor="me")
    assert (move.delta_on_hand, move.delta_reserved) == (-3, 0)
    assert (move.on_hand, move.reserved, move.version) == (7, 2, 5)
    assert (move.created_at, move.reason, move.actor, move.kind) == (T1, "damage", "me", "adjust")


def test_summary_totals_ignore_negative_sellable() -> None:
    rows = [
        Inventory("P1", "W1", 10, 4, 3, 1, T0),
        Inventory("P1", "W2", 5, 5, 3, 1, T0),
        Inventory("P1", "W3", 0, 0, 3, 1, T0),
    ]
    summary = StockSummary("P1", rows)
    assert (summary.total_on_hand, summary.total_reserved, summary.total_sellable) == (15, 9, 6)
    assert StockSummary("P2").total_sellable == 0


def test_only_active_and_confirmed_reservations_hold_stock() -> None:
    holding = {s for s in ReservationStatus if s.holds_stock}
    assert holding == {ReservationStatus.ACTIVE, ReservationStatus.CONFIRMED}
