"""Properties of the domain rules over random sequences of changes, in memory.

Each step asks ``with_quantities`` for a new row. Whatever the sequence, an accepted change keeps
``0 <= reserved <= available <= MAX`` and bumps the version by one, a refused one leaves the row
as it was, and the events of a change report exactly the status transitions it made.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from stockctl.core import events as ev
from stockctl.core.model import (
    MAX_QUANTITY,
    Inventory,
    Movement,
    MovementKind,
    StockStatus,
)
from stockctl.errors import InvalidInput, StockRuleViolation

T0 = datetime(2026, 1, 1, tzinfo=UTC)

# Each step names the quantities it asks for: mostly small (so thresholds are crossed often),
# sometimes negative or past the maximum (so refusals are exercised too).
amounts = st.integers(min_value=0, max_value=40) | st.sampled_from(
    [-1, -25, MAX_QUANTITY, MAX_QUANTITY + 1]
)
steps = st.lists(st.tuples(amounts, amounts), min_size=1, max_size=40)


def expected_events(before: Inventory, after: Inventory) -> list[str]:
    was, now = before.status, after.status
    out = []
    if was is not StockStatus.OUT_OF_STOCK and now is StockStatus.OUT_OF_STOCK:
        out.append(ev.OUT_OF_STOCK)
    if was is StockStatus.OUT_OF_STOCK and now is not StockStatus.OUT_OF_STOCK:
        out.append(ev.BACK_IN_STOCK)
    if was is StockStatus.IN_STOCK and now is StockStatus.LOW_STOCK:
        out.append(ev.LOW_STOCK)
    return out


@given(threshold=st.integers(min_value=0, max_value=20), changes=steps)
def test_random_changes_keep_the_invariants(threshold: int, changes: list[tuple[int, int]]) -> None:
    row = Inventory("P", "W", 0, 0, threshold, 0, None)
    ledger: list[Movement] = []
    for i, (available, reserved) in enumerate(changes):
        at = T0 + timedelta(seconds=i)
        try:
            after = row.with_quantities(available, reserved, at)
        except (StockRuleViolation, InvalidInput):
            assert reserved < 0 or available < reserved or available > MAX_QUANTITY
            continue
        assert 0 <= after.reserved <= after.on_hand <= MAX_QUANTITY
        assert after.version == row.version + 1
        assert after.last_movement_at == at
        events = ev.change_events(ev.STOCK_UPDATED, row, after, "test")
        assert [e.type for e in events] == [ev.STOCK_UPDATED, *expected_events(row, after)]
        assert all(e.data["version"] == after.version for e in events)
        ledger.append(Movement.between(row, after, MovementKind.ADJUST))
        row = after
    assert row.version == len(ledger)
    assert sum(m.delta_on_hand for m in ledger) == row.on_hand
    assert sum(m.delta_reserved for m in ledger) == row.reserved
    assert [m.version for m in ledger] == list(range(1, len(ledger) + 1))
