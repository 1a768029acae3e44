"""The threshold rule (low stock, out of stock, back in stock) is defined once, by
``stockctl.core.events.threshold_events``. The one-statement reserve of PostgreSQL evaluates it
inside its SQL (the row's quantities after the change exist only there); this suite holds that
SQL to the Python definition for any row, on the one-statement path and, with merging on, on
the merged path of a hot row, so the rule cannot exist twice in two versions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stockctl
from stockctl.core import events as ev
from stockctl.core.model import Inventory
from stockctl.library import Stockctl
from tests import dbutil
from tests.conftest import new_id

ALERTS = (ev.LOW_STOCK, ev.OUT_OF_STOCK, ev.BACK_IN_STOCK)


@pytest.fixture(scope="module")
def pg_one_by_one(pg_url_module: str) -> Iterator[Stockctl]:
    with stockctl.connect(pg_url_module, reserve_merge=False) as sc:
        sc.init()
        yield sc


@pytest.fixture(scope="module")
def pg_url_module() -> Iterator[str]:
    from tests.conftest import _fresh_pg_database

    yield from _fresh_pg_database()


def alerts_after(sc: Stockctl, p: str, seen: int) -> list[str]:
    return [e["topic"] for e in dbutil.outbox_events(sc, p)[seen:] if e["topic"] in ALERTS]


def expected(before: Inventory, taken: int) -> list[str]:
    after = replace(before, reserved=before.reserved + taken)
    return [e.type for e in ev.threshold_events(before, after, "test")]


rows = st.tuples(
    st.integers(0, 30),  # on hand
    st.integers(0, 30),  # reserved (capped at on hand)
    st.integers(0, 12),  # low-stock threshold
    st.integers(1, 12),  # units the reserve asks for
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows)
def test_the_one_statement_reserve_emits_what_the_rule_says(
    pg_one_by_one: Stockctl, row: tuple[int, int, int, int]
) -> None:
    sc = pg_one_by_one
    on_hand, reserved, threshold, q = row
    reserved = min(reserved, on_hand)
    p, w = new_id("P"), new_id("W")
    sc.add_product(p)
    sc.add_warehouse(w)
    sc.set_stock(p, w, on_hand, low_stock_threshold=threshold)
    if reserved:
        sc.reserve(p, w, reserved)
    (before,) = sc.stock(p, w).rows
    seen = len(dbutil.outbox_events(sc, p))
    try:
        sc.reserve(p, w, q)
    except stockctl.errors.InsufficientStock:
        assert q > before.sellable
        assert alerts_after(sc, p, seen) == []
        return
    assert alerts_after(sc, p, seen) == expected(before, q)


def test_merged_reserves_of_a_hot_row_emit_what_the_rule_says_one_by_one(pg_url: str) -> None:
    """16 reserves of 1 at once on a row with 10 sellable and threshold 4: merged or not, the
    alerts are the ones the rule gives for the same reserves one by one in arrival order."""
    with stockctl.connect(pg_url, reserve_merge=True, reserve_merge_window_ms=5) as sc:
        sc.init()
        p, w = new_id("P"), new_id("W")
        sc.add_product(p)
        sc.add_warehouse(w)
        sc.set_stock(p, w, 10, low_stock_threshold=4)
        (row,) = sc.stock(p, w).rows
        seen = len(dbutil.outbox_events(sc, p))
        start = threading.Barrier(16)

        def one() -> None:
            start.wait()
            try:
                sc.reserve(p, w, 1)
            except stockctl.errors.InsufficientStock:
                pass

        threads = [threading.Thread(target=one) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        want: list[str] = []
        for _ in range(10):  # ten fit, one unit each, in whatever order they arrived
            want += expected(row, 1)
            row = replace(row, reserved=row.reserved + 1)
        assert alerts_after(sc, p, seen) == want == [ev.LOW_STOCK, ev.OUT_OF_STOCK]
