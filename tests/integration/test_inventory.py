"""Receive, set, adjust and transfer on both backends: the row, its ledger line, its events.

Every check reads the tables directly (tests/dbutil.py), not through the library's own queries.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from stockctl.core import events as ev
from stockctl.library import Stockctl
from tests import dbutil
from tests.conftest import new_id


def setup_product(sc: Stockctl, warehouses: int = 2) -> tuple[str, list[str]]:
    p = new_id("P")
    sc.add_product(p)
    ws = [new_id("W") for _ in range(warehouses)]
    for w in ws:
        sc.add_warehouse(w)
    return p, ws


def primary(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Outbox rows that are the primary event of a change (not threshold events)."""
    return [e for e in events if e["topic"].startswith("warehouse.stock.")]


def test_products_and_warehouses_are_stored(sc: Stockctl) -> None:
    p, w = new_id("P"), new_id("W")
    product = sc.add_product(p, name="  Blue mug  ")
    warehouse = sc.add_warehouse(w, name="Leeds", priority=7, active=False)
    assert product.name == "Blue mug"
    assert (warehouse.priority, warehouse.active) == (7, False)
    stored = sc.app.store.get_warehouse(w)
    assert stored is not None and (stored.name, stored.priority, stored.active) == (
        "Leeds",
        7,
        False,
    )


def test_receive_creates_the_row_with_ledger_and_event(sc: Stockctl) -> None:
    p, [w, _] = setup_product(sc)
    started = datetime.now(UTC)
    result = sc.receive(p, w, 25, reason="PO arrived", reference="PO-77")

    stored = dbutil.row(sc, p, w)
    assert stored is not None
    assert (stored["quantity_available"], stored["quantity_reserved"], stored["version"]) == (
        25,
        0,
        1,
    )
    assert stored["low_stock_threshold"] == 10
    assert started - timedelta(seconds=1) <= stored["last_movement_at"] <= datetime.now(UTC)
    assert result.on_hand == 25 and result.version == 1
    assert result.last_movement_at == stored["last_movement_at"]

    [move] = dbutil.ledger(sc, p)
    assert move["kind"] == "receive"
    assert (move["delta_available"], move["delta_reserved"]) == (25, 0)
    assert (move["quantity_available"], move["quantity_reserved"], move["version"]) == (25, 0, 1)
    assert (move["reason"], move["reference"], move["warehouse_id"]) == ("PO arrived", "PO-77", w)
    assert move["actor"] == sc.settings.actor
    assert move["created_at"] == stored["last_movement_at"]

    event, back = dbutil.outbox_events(sc, p)
    assert back["topic"] == ev.BACK_IN_STOCK  # sellable went from 0 to 25
    body = event["event"]
    assert event["topic"] == body["type"] == ev.STOCK_UPDATED
    assert event["event_id"] == body["id"]
    assert event["published_at"] is None
    assert body["specversion"] == "1.0"
    assert body["subject"] == p
    assert body["source"] == sc.settings.event_source
    assert body["datacontenttype"] == "application/json"
    assert uuid.UUID(body["id"])
    assert datetime.fromisoformat(body["time"]) == stored["last_movement_at"]
    assert body["data"]["product_id"] == p and body["data"]["warehouse_id"] == w
    assert body["data"]["quantity_available"] == 25
    assert body["data"]["delta"] == 25
    assert body["data"]["version"] == 1
    assert body["data"]["reason"] == "PO arrived"
    assert body["data"]["reference"] == "PO-77"


def test_receive_again_adds_and_bumps_version_and_time(sc: Stockctl) -> None:
    p, [w, _] = setup_product(sc)
    first = sc.receive(p, w, 5)
    second = sc.receive(p, w, 7)
    assert (second.on_hand, second.version) == (12, 2)
    assert first.last_movement_at is not None and second.last_movement_at is not None
    assert second.last_movement_at >= first.last_movement_at
    assert [m["version"] for m in dbutil.ledger(sc, p)] == [1, 2]
    assert [m["reason"] for m in dbutil.ledger(sc, p)] == ["receive", "receive"]


def test_set_is_absolute_and_can_change_the_threshold(sc: Stockctl) -> None:
    p, [w, _] = setup_product(sc)
    sc.receive(p, w, 40)
    row = sc.set_stock(p, w, 15, low_stock_threshold=3, reason="stock take")
    assert (row.on_hand, row.low_stock_threshold, row.version) == (15, 3, 2)
    stored = dbutil.row(sc, p, w)
    assert stored is not None and stored["low_stock_threshold"] == 3
    move = dbutil.ledger(sc, p)[-1]
    assert (move["kind"], move["delta_available"], move["reason"]) == ("set", -25, "stock take")
    event = dbutil.outbox_events(sc, p)[-1]["event"]
    assert event["type"] == ev.STOCK_UPDATED
    assert event["data"]["delta"] == -25 and event["data"]["low_stock_threshold"] == 3


def test_set_creates_a_row_and_zero_is_allowed(sc: Stockctl) -> None:
    p, [w, w2] = setup_product(sc)
    assert sc.set_stock(p, w, 9).version == 1
    row = sc.set_stock(p, w2, 0)
    assert (row.on_hand, row.version) == (0, 1)
    assert len(dbutil.ledger(sc, p)) == 2


def test_set_with_the_current_version_succeeds(sc: Stockctl) -> None:
    p, [w, _] = setup_product(sc)
    sc.set_stock(p, w, 5, expect_version=0)  # a row that does not exist yet is version 0
    sc.receive(p, w, 1)
    row = sc.set_stock(p, w, 100, expect_version=2)
    assert (row.on_hand, row.version) == (100, 3)


def test_adjust_records_the_reason_in_ledger_event_and_history(sc: Stockctl) -> None:
    p, [w, _] = setup_product(sc)
    sc.receive(p, w, 20)
    row = sc.adjust(p, w, -5, reason="damage", reference="RMA-1")
    assert (row.on_hand, row.version) == (15, 2)
    move = dbutil.ledger(sc, p)[-1]
    assert (move["kind"], move["delta_available"], move["reason"], move["reference"]) == (
        "adjust",
        -5,
        "damage",
        "RMA-1",
    )
    event = dbutil.outbox_events(sc, p)[-1]
    assert event["topic"] == ev.STOCK_ADJUSTED
    assert event["event"]["data"]["reason"] == "damage"
    assert event["event"]["data"]["delta"] == -5
    latest = sc.history(p)[0]
    assert (latest.kind, latest.reason, latest.delta_on_hand) == ("adjust", "damage", -5)


def test_positive_adjust_creates_a_missing_row(sc: Stockctl) -> None:
    p, [w, _] = setup_product(sc)
    row = sc.adjust(p, w, 3, reason="found in aisle 4")
    assert (row.on_hand, row.version) == (3, 1)


def test_adjust_down_to_exactly_zero(sc: Stockctl) -> None:
    p, [w, _] = setup_product(sc)
    sc.receive(p, w, 4)
    assert sc.adjust(p, w, -4, reason="write-off").on_hand == 0


def test_transfer_moves_units_atomically_with_two_ledger_lines(sc: Stockctl) -> None:
    p, [a, b] = setup_product(sc)
    sc.receive(p, a, 30)
    src, dst = sc.transfer(p, a, b, 12, reference="TR-1")
    assert (src.on_hand, src.version) == (18, 2)
    assert (dst.on_hand, dst.version) == (12, 1)
    assert sc.stock(p).total_on_hand == 30

    out, into = dbutil.ledger(sc, p)[-2:]
    assert (out["kind"], out["warehouse_id"], out["delta_available"]) == ("transfer_out", a, -12)
    assert (into["kind"], into["warehouse_id"], into["delta_available"]) == ("transfer_in", b, 12)
    assert out["reference"] == into["reference"] == "TR-1"
    assert out["created_at"] == into["created_at"]

    events = [e for e in dbutil.outbox_events(sc, p) if e["topic"] == ev.STOCK_TRANSFERRED]
    assert [e["event"]["data"]["warehouse_id"] for e in events] == [a, b]
    for e in events:
        assert e["event"]["data"]["from_warehouse_id"] == a
        assert e["event"]["data"]["to_warehouse_id"] == b
    assert [e["event"]["data"]["delta"] for e in events] == [-12, 12]


def test_transfer_into_an_existing_row(sc: Stockctl) -> None:
    p, [a, b] = setup_product(sc)
    sc.receive(p, a, 10)
    sc.receive(p, b, 10)
    src, dst = sc.transfer(p, b, a, 10)
    assert (src.on_hand, dst.on_hand) == (0, 20)
    assert (src.version, dst.version) == (2, 2)


def test_stock_shows_every_warehouse_and_totals(sc: Stockctl) -> None:
    p, [a, b, c] = setup_product(sc, warehouses=3)
    sc.receive(p, a, 10)
    sc.receive(p, b, 5)
    dbutil.force_reserved(sc, p, b, 5)
    summary = sc.stock(p)
    assert {r.warehouse_id for r in summary.rows} == {a, b}  # c has no row
    assert c not in {r.warehouse_id for r in summary.rows}
    assert (summary.total_on_hand, summary.total_reserved, summary.total_sellable) == (15, 5, 10)
    only = sc.stock(p, a)
    assert [r.warehouse_id for r in only.rows] == [a]


def test_history_is_newest_first_and_filters_by_warehouse(sc: Stockctl) -> None:
    p, [a, b] = setup_product(sc)
    sc.receive(p, a, 10)
    sc.receive(p, b, 20)
    sc.adjust(p, a, -1, reason="damage")
    assert [(m.warehouse_id, m.kind) for m in sc.history(p)] == [
        (a, "adjust"),
        (b, "receive"),
        (a, "receive"),
    ]
    assert [m.kind for m in sc.history(p, a)] == ["adjust", "receive"]
    assert len(sc.history(p, limit=1)) == 1


def test_every_change_has_one_ledger_line_and_one_primary_event(sc: Stockctl) -> None:
    p, [a, b] = setup_product(sc)
    sc.receive(p, a, 50)
    sc.set_stock(p, a, 40)
    sc.adjust(p, a, -3, reason="damage")
    sc.transfer(p, a, b, 7)
    moves = dbutil.ledger(sc, p)
    events = primary(dbutil.outbox_events(sc, p))
    assert len(moves) == len(events) == 5
    for move, event in zip(moves, events, strict=True):
        data = event["event"]["data"]
        assert (data["warehouse_id"], data["version"]) == (move["warehouse_id"], move["version"])
        assert data["quantity_available"] == move["quantity_available"]
        assert event["created_at"] == move["created_at"]
