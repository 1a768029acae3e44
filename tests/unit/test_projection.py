"""The cache projection: key names, the version guard, product totals, and reading stock events.

Expected values are written out by hand from DESIGN.md ("Stock cache"), not computed with the
module under test.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockctl.core import events as ev
from stockctl.core.envelope import Incoming, InvalidEvent
from stockctl.core.model import Inventory, StockStatus
from stockctl.core.projection import (
    CacheKeys,
    ProductStock,
    RowState,
    StockUpdate,
    merge,
    product_values,
    update_from_event,
)

# -- keys


def test_keys_are_the_designed_plain_names() -> None:
    k = CacheKeys()
    assert k.warehouse("P1", "W1") == "catalog:stock:P1:warehouse:W1"
    assert k.total("P1") == "catalog:stock:P1:total"
    assert k.available("P1") == "catalog:stock:P1:available"
    assert k.status("P1") == "catalog:stock:P1:status"
    assert k.low_stock("P1") == "catalog:stock:P1:low_stock"
    assert k.product("P1") == "catalog:product:P1"
    assert k.processed("e-1") == "catalog:event:processed:e-1"
    assert k.rows("P1") == "catalog:stock:P1:rows"


def test_a_prefix_replaces_catalog_everywhere() -> None:
    k = CacheKeys("shop2")
    assert k.total("P1") == "shop2:stock:P1:total"
    assert k.product("P1") == "shop2:product:P1"
    assert k.processed("e") == "shop2:event:processed:e"
    assert k.warehouse("P1", "W1") == "shop2:stock:P1:warehouse:W1"


def test_hash_tags_put_every_key_of_a_product_in_one_cluster_slot() -> None:
    k = CacheKeys(hash_tags=True)
    assert k.total("P1") == "catalog:stock:{P1}:total"
    assert k.warehouse("P1", "W1") == "catalog:stock:{P1}:warehouse:W1"
    assert k.product("P1") == "catalog:product:{P1}"
    assert k.rows("P1") == "catalog:stock:{P1}:rows"
    assert k.processed("e-1") == "catalog:event:processed:e-1"  # not a product key
    for key in [*k.product_keys("P1"), k.warehouse("P1", "W9")]:
        tag = key[key.index("{") + 1 : key.index("}")]
        assert tag == "P1", key


def test_product_keys_lists_every_fixed_key() -> None:
    k = CacheKeys()
    assert sorted(k.product_keys("P")) == sorted(
        [
            "catalog:stock:P:total",
            "catalog:stock:P:available",
            "catalog:stock:P:status",
            "catalog:stock:P:low_stock",
            "catalog:stock:P:rows",
            "catalog:product:P",
        ]
    )


# -- rows


def test_row_state_encodes_and_decodes() -> None:
    row = RowState("W1", 12, 40, 7, 5)
    assert row.encode() == "12:40:7:5"
    assert RowState.decode("W1", "12:40:7:5") == row
    assert row.sellable == 33


def test_row_state_of_an_inventory_row() -> None:
    inv = Inventory("P1", "W1", 9, 4, 3, 17, datetime(2024, 1, 1, tzinfo=UTC))
    assert RowState.of(inv) == RowState("W1", 17, 9, 4, 3)


# -- the version guard


def test_merge_keeps_only_newer_versions() -> None:
    held = {"W1": RowState("W1", 5, 10, 0, 0), "W2": RowState("W2", 2, 3, 0, 0)}
    merged = merge(
        held,
        [
            RowState("W1", 4, 99, 0, 0),  # older: ignored
            RowState("W2", 2, 99, 0, 0),  # same version: ignored
            RowState("W1", 6, 11, 1, 0),  # newer: taken
            RowState("W3", 1, 5, 0, 0),  # unknown warehouse: added
        ],
    )
    assert merged == {
        "W1": RowState("W1", 6, 11, 1, 0),
        "W2": RowState("W2", 2, 3, 0, 0),
        "W3": RowState("W3", 1, 5, 0, 0),
    }
    assert held["W1"].version == 5  # the held mapping is not modified


@settings(max_examples=100, deadline=None)
@given(
    versions=st.dictionaries(
        st.sampled_from(["W1", "W2", "W3"]),
        st.lists(st.integers(0, 1000), min_size=1, max_size=20, unique=True),
        min_size=1,
    ),
    seed=st.integers(0, 2**32),
    split=st.integers(0, 60),
)
def test_merge_ends_at_the_newest_version_in_any_order_and_any_batching(
    versions: dict[str, list[int]], seed: int, split: int
) -> None:
    updates = [RowState(w, v, v * 3, v, 1) for w, vs in versions.items() for v in vs]
    updates += updates  # every update delivered twice
    random.Random(seed).shuffle(updates)
    held = merge({}, updates[:split])
    held = merge(held, updates[split:])
    assert held == {w: RowState(w, max(vs), max(vs) * 3, max(vs), 1) for w, vs in versions.items()}


# -- product totals


def stock(*rows: tuple[str, int, int, int]) -> ProductStock:
    """rows: (warehouse, available, reserved, threshold)."""
    return ProductStock("P1", tuple(RowState(w, 1, a, r, t) for w, a, r, t in rows))


@pytest.mark.parametrize(
    ("rows", "total", "available", "status"),
    [
        ((), 0, 0, StockStatus.OUT_OF_STOCK),
        ((("W1", 0, 0, 5),), 0, 0, StockStatus.OUT_OF_STOCK),
        ((("W1", 8, 8, 5),), 8, 0, StockStatus.OUT_OF_STOCK),  # all reserved
        ((("W1", 5, 0, 5),), 5, 5, StockStatus.LOW_STOCK),  # at the threshold
        ((("W1", 6, 0, 5),), 6, 6, StockStatus.IN_STOCK),  # above it
        ((("W1", 1, 0, 0),), 1, 1, StockStatus.IN_STOCK),  # threshold 0: never low
        ((("W1", 4, 1, 2), ("W2", 3, 0, 10)), 7, 6, StockStatus.LOW_STOCK),  # highest threshold
        ((("W1", 30, 10, 2), ("W2", 3, 0, 10)), 33, 23, StockStatus.IN_STOCK),
        ((("W1", 2, 5, 0), ("W2", 3, 0, 0)), 5, 3, StockStatus.IN_STOCK),  # negative clamps to 0
    ],
)
def test_product_totals_and_status(
    rows: tuple[tuple[str, int, int, int], ...], total: int, available: int, status: StockStatus
) -> None:
    s = stock(*rows)
    assert (s.on_hand, s.sellable, s.status) == (total, available, status)


def test_product_detail_and_plain_values() -> None:
    s = stock(("W1", 10, 3, 4), ("W2", 2, 2, 1))
    assert s.detail() == {
        "product_id": "P1",
        "total": 12,
        "available": 7,
        "status": "in_stock",
        "warehouses": {"W1": 7, "W2": 0},
    }
    values = product_values(CacheKeys(), s)
    product = json.loads(values.pop("catalog:product:P1"))
    assert product == s.detail()
    assert values == {
        "catalog:stock:P1:warehouse:W1": "7",
        "catalog:stock:P1:warehouse:W2": "0",
        "catalog:stock:P1:total": "12",
        "catalog:stock:P1:available": "7",
        "catalog:stock:P1:status": "in_stock",
        "catalog:stock:P1:low_stock": "0",
    }


def test_low_stock_flag_is_one_only_when_low() -> None:
    low = product_values(CacheKeys(), stock(("W1", 3, 0, 5)))
    out = product_values(CacheKeys(), stock(("W1", 3, 3, 5)))
    assert (low["catalog:stock:P1:low_stock"], low["catalog:stock:P1:status"]) == ("1", "low_stock")
    assert (out["catalog:stock:P1:low_stock"], out["catalog:stock:P1:status"]) == (
        "0",
        "out_of_stock",
    )


# -- reading stock events


def stock_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "product_id": "P1",
        "warehouse_id": "W1",
        "quantity_available": 20,
        "quantity_reserved": 3,
        "sellable": 17,
        "low_stock_threshold": 5,
        "delta": -1,
        "version": 9,
    }
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    return data


def incoming(data: Any, type_: str = ev.STOCK_UPDATED) -> Incoming:
    return Incoming(id="e-1", type=type_, source="test", data=data, subject="P1")


@pytest.mark.parametrize("type_", ev.STOCK_EVENT_TYPES)
def test_every_stock_event_type_carries_a_row_update(type_: str) -> None:
    assert update_from_event(incoming(stock_data(), type_)) == StockUpdate(
        "e-1", "P1", RowState("W1", 9, 20, 3, 5)
    )


def test_a_missing_threshold_counts_as_zero() -> None:
    update = update_from_event(incoming(stock_data(low_stock_threshold=None)))
    assert update is not None and update.row.threshold == 0


@pytest.mark.parametrize("type_", ["order.cancelled", "payment.failed", "something.else"])
def test_other_event_types_are_not_stock_updates(type_: str) -> None:
    assert update_from_event(incoming({"order_id": "O1"}, type_)) is None


@pytest.mark.parametrize("data", [None, [], "P1", 5, [stock_data()]])
def test_a_stock_event_without_a_data_object_is_invalid(data: Any) -> None:
    with pytest.raises(InvalidEvent, match="data object"):
        update_from_event(incoming(data))


@pytest.mark.parametrize(
    "field", ["product_id", "warehouse_id", "version", "quantity_available", "quantity_reserved"]
)
def test_a_stock_event_lacking_a_field_is_invalid(field: str) -> None:
    with pytest.raises(InvalidEvent, match=field):
        update_from_event(incoming(stock_data(**{field: None})))


@pytest.mark.parametrize(
    "changes",
    [
        {"product_id": "P:1"},  # a ':' would break the key layout
        {"product_id": ""},
        {"product_id": "x" * 65},
        {"product_id": 7},
        {"warehouse_id": "W 1"},
        {"warehouse_id": ["W1"]},
        {"version": -1},
        {"version": "9"},
        {"version": 9.0},
        {"version": True},
        {"version": 2**53 + 1},
        {"quantity_available": -5},
        {"quantity_available": "20"},
        {"quantity_reserved": 1.5},
        {"quantity_reserved": False},
        {"low_stock_threshold": "5"},
        {"low_stock_threshold": -1},
    ],
)
def test_a_stock_event_with_bad_values_is_invalid(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidEvent):
        update_from_event(incoming(stock_data(**changes)))


def test_the_largest_version_is_accepted() -> None:
    update = update_from_event(incoming(stock_data(version=2**53)))
    assert update is not None and update.row.version == 2**53
