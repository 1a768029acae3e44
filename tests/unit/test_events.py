"""CloudEvents for stock changes: the envelope, the payload, and the threshold crossings."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from stockctl.core import events as ev
from stockctl.core.model import Inventory

T0 = datetime(2026, 3, 1, 8, 30, 0, 123456, tzinfo=UTC)
SOURCE = "stockctl/test"


def at(available: int, reserved: int = 0, threshold: int = 5, version: int = 1) -> Inventory:
    return Inventory("P-9", "W-2", available, reserved, threshold, version, T0)


def change(before: Inventory, available: int, reserved: int | None = None) -> Inventory:
    reserved = before.reserved if reserved is None else reserved
    return before.with_quantities(available, reserved, T0 + timedelta(minutes=1))


def types(events: list[ev.CloudEvent]) -> list[str]:
    return [e.type for e in events]


# the envelope ------------------------------------------------------------------------------------


def test_cloud_event_envelope_has_every_required_field() -> None:
    event = ev.row_event(ev.STOCK_UPDATED, at(12), SOURCE, delta=2)
    body = json.loads(event.to_json())
    assert set(body) == {
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "datacontenttype",
        "subject",
        "data",
    }
    assert body["specversion"] == "1.0"
    assert str(uuid.UUID(body["id"])) == body["id"]
    assert body["source"] == SOURCE
    assert body["type"] == "warehouse.stock.updated"
    assert body["time"] == "2026-03-01T08:30:00.123456Z"
    assert body["datacontenttype"] == "application/json"
    assert body["subject"] == "P-9"
    assert event.to_dict() == body


def test_event_data_carries_the_row_after_the_change() -> None:
    row = at(12, reserved=4, threshold=5, version=7)
    data = ev.row_event(ev.STOCK_ADJUSTED, row, SOURCE, delta=-3, reason="damage").data
    assert data == {
        "product_id": "P-9",
        "warehouse_id": "W-2",
        "quantity_available": 12,
        "quantity_reserved": 4,
        "sellable": 8,
        "low_stock_threshold": 5,
        "delta": -3,
        "version": 7,
        "reason": "damage",
    }


def test_context_values_that_are_none_are_left_out() -> None:
    data = ev.row_event(ev.STOCK_UPDATED, at(1), SOURCE, reference=None, reason="x").data
    assert "reference" not in data and data["reason"] == "x"


def test_every_event_gets_its_own_id() -> None:
    ids = {ev.row_event(ev.STOCK_UPDATED, at(1), SOURCE).id for _ in range(50)}
    assert len(ids) == 50


def test_topic_is_the_type() -> None:
    event = ev.row_event(ev.LOW_STOCK, at(1), SOURCE)
    assert event.topic == event.type == "warehouse.inventory.low_stock"


def test_event_type_names_follow_the_seed() -> None:
    assert ev.STOCK_EVENT_TYPES == (
        "warehouse.stock.updated",
        "warehouse.stock.adjusted",
        "warehouse.stock.transferred",
        "warehouse.stock.reserved",
        "warehouse.stock.released",
        "warehouse.inventory.low_stock",
        "warehouse.inventory.out_of_stock",
        "warehouse.inventory.back_in_stock",
    )


# change_events -----------------------------------------------------------------------------------


def test_change_events_primary_event_carries_sellable_and_quantity_deltas() -> None:
    before = at(20, reserved=5)
    after = change(before, 17, reserved=6)
    [primary] = ev.change_events(ev.STOCK_ADJUSTED, before, after, SOURCE, reason="recount")
    assert primary.type == ev.STOCK_ADJUSTED
    assert primary.time == after.last_movement_at
    assert primary.data["delta"] == (17 - 6) - (20 - 5)
    assert primary.data["delta_available"] == -3
    assert primary.data["delta_reserved"] == 1
    assert primary.data["version"] == 2
    assert primary.data["reason"] == "recount"


def test_change_events_puts_the_primary_event_first() -> None:
    before = at(20)
    out = ev.change_events(ev.STOCK_ADJUSTED, before, change(before, 0), SOURCE)
    assert types(out) == [ev.STOCK_ADJUSTED, ev.OUT_OF_STOCK]


# threshold crossings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("was", "now", "expected"),
    [
        pytest.param(20, 3, [ev.LOW_STOCK], id="in-stock-to-low"),
        pytest.param(20, 5, [ev.LOW_STOCK], id="in-stock-to-exactly-threshold"),
        pytest.param(6, 5, [ev.LOW_STOCK], id="one-above-threshold-to-threshold"),
        pytest.param(20, 0, [ev.OUT_OF_STOCK], id="in-stock-to-zero"),
        pytest.param(3, 0, [ev.OUT_OF_STOCK], id="low-to-zero"),
        pytest.param(0, 3, [ev.BACK_IN_STOCK], id="zero-to-low"),
        pytest.param(0, 20, [ev.BACK_IN_STOCK], id="zero-to-in-stock"),
        pytest.param(20, 6, [], id="stays-above-threshold"),
        pytest.param(4, 2, [], id="stays-low"),
        pytest.param(2, 4, [], id="low-going-up-but-still-low"),
        pytest.param(3, 20, [], id="low-to-in-stock"),
        pytest.param(5, 6, [], id="threshold-to-above"),
        pytest.param(0, 0, [], id="stays-zero"),
    ],
)
def test_threshold_events(was: int, now: int, expected: list[str]) -> None:
    before = at(was, threshold=5)
    out = ev.threshold_events(before, change(before, now), SOURCE)
    assert types(out) == expected
    for event in out:
        assert event.data["delta"] == now - was
        assert event.data["sellable"] == now
        assert event.subject == "P-9"


def test_reserving_the_last_units_is_out_of_stock_and_releasing_is_back_in_stock() -> None:
    before = at(10, reserved=0)
    held = change(before, 10, reserved=10)
    assert types(ev.threshold_events(before, held, SOURCE)) == [ev.OUT_OF_STOCK]
    released = change(held, 10, reserved=0)
    assert types(ev.threshold_events(held, released, SOURCE)) == [ev.BACK_IN_STOCK]


def test_threshold_of_zero_never_reports_low_stock() -> None:
    before = at(5, threshold=0)
    assert types(ev.threshold_events(before, change(before, 1), SOURCE)) == []
    assert types(ev.threshold_events(before, change(before, 0), SOURCE)) == [ev.OUT_OF_STOCK]
