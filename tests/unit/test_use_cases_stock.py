"""The stock use cases (``stockctl.core.inventory``) on the in-memory store: rows, ledger,
events and refusals, with no database."""

from __future__ import annotations

import json

import pytest

from stockctl.core import events as ev
from stockctl.core import inventory
from stockctl.core.context import Context
from stockctl.core.model import MovementKind
from stockctl.errors import (
    AlreadyExists,
    BelowReserved,
    IdempotencyConflict,
    InsufficientStock,
    InvalidInput,
    InventoryNotFound,
    ProductNotFound,
    VersionConflict,
    WarehouseNotFound,
)
from tests.fakes.clock import ManualClock
from tests.fakes.store import FakeStore


@pytest.fixture
def stocked(ctx: Context) -> Context:
    inventory.add_product(ctx, "P1", "Widget")
    inventory.add_warehouse(ctx, "W1", priority=1)
    inventory.add_warehouse(ctx, "W2", priority=2)
    inventory.receive(ctx, "P1", "W1", 50)
    return ctx


def types_of(store: FakeStore, product: str) -> list[str]:
    return [e.topic for e in reversed(store.outbox_for(product, 100))]


def test_first_receipt_creates_the_row_with_a_ledger_line_and_an_event(
    ctx: Context, store: FakeStore, clock: ManualClock
) -> None:
    inventory.add_product(ctx, "P1")
    inventory.add_warehouse(ctx, "W1")
    row = inventory.receive(ctx, "P1", "W1", 7, reason="po-1")
    assert (row.on_hand, row.reserved, row.version) == (7, 0, 1)
    assert row.id is not None and row.last_movement_at == clock.now
    (line,) = store.history("P1", "W1", 10)
    assert (line.kind, line.delta_on_hand, line.on_hand, line.reason) == (
        MovementKind.RECEIVE,
        7,
        7,
        "po-1",
    )
    assert types_of(store, "P1") == [ev.STOCK_UPDATED, ev.BACK_IN_STOCK]  # from 0 to 7
    for entry in store.outbox_for("P1", 10):
        assert json.loads(entry.payload)["data"]["version"] == 1


def test_receipts_count_up_one_version_each(stocked: Context, store: FakeStore) -> None:
    for _ in range(3):
        inventory.receive(stocked, "P1", "W1", 1)
    row = store.get_inventory("P1", "W1")
    assert row is not None and (row.on_hand, row.version) == (53, 4)
    assert [m.version for m in store.history("P1", "W1", 10)] == [4, 3, 2, 1]


def test_unknown_product_or_warehouse_is_refused_and_nothing_is_written(
    ctx: Context, store: FakeStore
) -> None:
    inventory.add_product(ctx, "P1")
    inventory.add_warehouse(ctx, "W1")
    with pytest.raises(ProductNotFound):
        inventory.receive(ctx, "P9", "W1", 1)
    with pytest.raises(WarehouseNotFound):
        inventory.receive(ctx, "P1", "W9", 1)
    assert store.product_inventory("P1") == [] and store.history("P1", None, 10) == []


def test_duplicate_product_id_is_refused(ctx: Context) -> None:
    inventory.add_product(ctx, "P1")
    with pytest.raises(AlreadyExists):
        inventory.add_product(ctx, "P1")


@pytest.mark.parametrize("quantity", [0, -1, 10**12])
def test_bad_quantities_are_refused(stocked: Context, store: FakeStore, quantity: int) -> None:
    with pytest.raises(InvalidInput):
        inventory.receive(stocked, "P1", "W1", quantity)
    row = store.get_inventory("P1", "W1")
    assert row is not None and row.version == 1


def test_adjust_needs_a_reason_and_cannot_go_below_reserved(
    stocked: Context, store: FakeStore
) -> None:
    with pytest.raises(InvalidInput):
        inventory.adjust(stocked, "P1", "W1", -1, reason=None)
    with pytest.raises((BelowReserved, InsufficientStock)):
        inventory.adjust(stocked, "P1", "W1", -51, reason="count")
    row = inventory.adjust(stocked, "P1", "W1", -5, reason="damaged")
    assert (row.on_hand, row.version) == (45, 2)
    assert store.history("P1", "W1", 1)[0].kind is MovementKind.ADJUST


def test_adjust_of_a_missing_row_is_not_found(stocked: Context) -> None:
    with pytest.raises(InventoryNotFound):
        inventory.adjust(stocked, "P1", "W2", -1, reason="count")


def test_set_stock_is_a_compare_and_set_on_the_version(stocked: Context, store: FakeStore) -> None:
    with pytest.raises(VersionConflict):
        inventory.set_stock(stocked, "P1", "W1", 10, expect_version=7)
    row = inventory.set_stock(stocked, "P1", "W1", 10, expect_version=1, low_stock_threshold=3)
    assert (row.on_hand, row.low_stock_threshold, row.version) == (10, 3, 2)


def test_transfer_moves_units_between_rows_atomically(stocked: Context, store: FakeStore) -> None:
    src, dst = inventory.transfer(stocked, "P1", "W1", "W2", 20)
    assert (src.on_hand, dst.on_hand) == (30, 20)
    assert dst.version == 1 and dst.id is not None and dst.id != src.id
    kinds = {m.warehouse_id: m.kind for m in store.history("P1", None, 2)}
    assert kinds == {"W1": MovementKind.TRANSFER_OUT, "W2": MovementKind.TRANSFER_IN}
    total = sum(r.on_hand for r in store.product_inventory("P1"))
    assert total == 50


def test_a_transfer_that_does_not_fit_changes_neither_row(
    stocked: Context, store: FakeStore
) -> None:
    before = store.product_inventory("P1")
    with pytest.raises(InsufficientStock):
        inventory.transfer(stocked, "P1", "W1", "W2", 51)
    with pytest.raises(InventoryNotFound):
        inventory.transfer(stocked, "P1", "W2", "W1", 1)
    with pytest.raises(InvalidInput):
        inventory.transfer(stocked, "P1", "W1", "W1", 1)
    assert store.product_inventory("P1") == before


def test_threshold_events_fire_once_on_the_crossing(stocked: Context, store: FakeStore) -> None:
    inventory.set_stock(stocked, "P1", "W1", 50, low_stock_threshold=10)
    inventory.adjust(stocked, "P1", "W1", -45, reason="count")  # 5 left: low
    inventory.adjust(stocked, "P1", "W1", -1, reason="count")  # still low: no second event
    inventory.adjust(stocked, "P1", "W1", -4, reason="count")  # 0: out of stock
    inventory.receive(stocked, "P1", "W1", 30)  # back in stock
    alerts = [t for t in types_of(store, "P1") if t.startswith("warehouse.inventory.")]
    # the first receipt (0 -> 50) came back in stock; then each crossing once
    assert alerts == [ev.BACK_IN_STOCK, ev.LOW_STOCK, ev.OUT_OF_STOCK, ev.BACK_IN_STOCK]


def test_an_idempotency_key_replays_the_first_answer(stocked: Context, store: FakeStore) -> None:
    first = inventory.receive(stocked, "P1", "W1", 5, idempotency_key="k-1")
    again = inventory.receive(stocked, "P1", "W1", 5, idempotency_key="k-1")
    assert again == first
    row = store.get_inventory("P1", "W1")
    assert row is not None and row.on_hand == 55
    with pytest.raises(IdempotencyConflict):
        inventory.receive(stocked, "P1", "W1", 6, idempotency_key="k-1")


def test_an_idempotency_key_is_free_again_after_its_window(
    stocked: Context, store: FakeStore, clock: ManualClock
) -> None:
    inventory.receive(stocked, "P1", "W1", 5, idempotency_key="k-1")
    clock.advance(hours=25)
    inventory.receive(stocked, "P1", "W1", 5, idempotency_key="k-1")
    row = store.get_inventory("P1", "W1")
    assert row is not None and row.on_hand == 60


def test_stock_and_history_read_what_was_written(stocked: Context) -> None:
    inventory.transfer(stocked, "P1", "W1", "W2", 10)
    summary = inventory.stock(stocked, "P1")
    assert [(r.warehouse_id, r.on_hand) for r in summary.rows] == [
        ("W1", 40),
        ("W2", 10),
    ]
    assert summary.total_sellable == 50
    assert [m.kind for m in inventory.history(stocked, "P1", "W2")] == [MovementKind.TRANSFER_IN]
