"""Low-stock, out-of-stock and back-in-stock events land in the outbox with their change."""

from __future__ import annotations

from stockctl.core import events as ev
from stockctl.library import Stockctl
from tests import dbutil
from tests.conftest import new_id


def topics_after(sc: Stockctl, p: str, seen: int) -> list[str]:
    return [e["topic"] for e in dbutil.outbox_events(sc, p)[seen:]]


def test_threshold_crossings_on_one_row(sc: Stockctl) -> None:
    p, w = new_id("P"), new_id("W")
    sc.add_product(p)
    sc.add_warehouse(w)
    steps = [
        (
            lambda: sc.set_stock(p, w, 20, low_stock_threshold=5),
            [ev.STOCK_UPDATED, ev.BACK_IN_STOCK],
        ),
        (lambda: sc.adjust(p, w, -10, reason="damage"), [ev.STOCK_ADJUSTED]),
        (lambda: sc.adjust(p, w, -6, reason="damage"), [ev.STOCK_ADJUSTED, ev.LOW_STOCK]),
        (lambda: sc.adjust(p, w, -2, reason="damage"), [ev.STOCK_ADJUSTED]),
        (lambda: sc.adjust(p, w, -2, reason="damage"), [ev.STOCK_ADJUSTED, ev.OUT_OF_STOCK]),
        (lambda: sc.receive(p, w, 3), [ev.STOCK_UPDATED, ev.BACK_IN_STOCK]),
        (lambda: sc.receive(p, w, 30), [ev.STOCK_UPDATED]),
        (lambda: sc.set_stock(p, w, 0), [ev.STOCK_UPDATED, ev.OUT_OF_STOCK]),
    ]
    seen = 0
    for number, (change, expected) in enumerate(steps, start=1):
        row = change()
        assert row.version == number
        got = dbutil.outbox_events(sc, p)[seen:]
        assert [e["topic"] for e in got] == expected, f"step {number}"
        for e in got:  # every event of a change carries the row as it is after it
            data = e["event"]["data"]
            assert (data["version"], data["quantity_available"]) == (
                row.version,
                row.on_hand,
            )
            assert e["event"]["type"] == e["topic"] and e["subject"] == p
        seen += len(got)


def test_transfer_emptying_the_source_reports_out_of_stock_there(sc: Stockctl) -> None:
    p, a, b = new_id("P"), new_id("W"), new_id("W")
    sc.add_product(p)
    sc.add_warehouse(a)
    sc.add_warehouse(b)
    sc.receive(p, a, 8)
    seen = len(dbutil.outbox_events(sc, p))
    sc.transfer(p, a, b, 8)
    got = [
        (e["topic"], e["event"]["data"]["warehouse_id"]) for e in dbutil.outbox_events(sc, p)[seen:]
    ]
    assert got == [
        (ev.STOCK_TRANSFERRED, a),
        (ev.OUT_OF_STOCK, a),
        (ev.STOCK_TRANSFERRED, b),
        (ev.BACK_IN_STOCK, b),
    ]


def test_held_units_count_for_thresholds(sc: Stockctl) -> None:
    p, w = new_id("P"), new_id("W")
    sc.add_product(p)
    sc.add_warehouse(w)
    sc.set_stock(p, w, 30, low_stock_threshold=5)
    dbutil.force_reserved(sc, p, w, 20)  # sellable 10
    seen = len(dbutil.outbox_events(sc, p))
    sc.adjust(p, w, -6, reason="damage")  # sellable 4: low, though 24 are on hand
    assert topics_after(sc, p, seen) == [ev.STOCK_ADJUSTED, ev.LOW_STOCK]
