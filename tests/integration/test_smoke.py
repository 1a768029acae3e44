from __future__ import annotations

from stockctl.library import Stockctl
from tests.conftest import new_id


def test_receive_then_adjust_records_ledger_and_outbox(sc: Stockctl) -> None:
    p, w = new_id("P"), new_id("W")
    sc.add_product(p)
    sc.add_warehouse(w)
    sc.receive(p, w, 20)
    row = sc.adjust(p, w, -5, reason="damage")
    assert (row.on_hand, row.reserved, row.version) == (15, 0, 2)
    moves = sc.history(p)
    assert [m.kind.value for m in moves] == ["adjust", "receive"]
    assert moves[0].reason == "damage" and moves[0].delta_on_hand == -5
