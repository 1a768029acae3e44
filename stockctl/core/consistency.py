"""Is every reserved counter the sum of its holds? Find drift, and repair it with a ledger line."""

from __future__ import annotations

from dataclasses import dataclass

from stockctl.core import events as ev
from stockctl.core.context import Context, record_change
from stockctl.core.model import MovementKind
from stockctl.core.ports import ReservedDrift
from stockctl.errors import InvalidInput

MAX_REPORT = 100_000


@dataclass(frozen=True, slots=True)
class DriftResult:
    drift: ReservedDrift
    repaired: bool
    note: str = ""


def verify_reserved(ctx: Context, *, repair: bool = False, limit: int = 1000) -> list[DriftResult]:
    """Rows whose ``quantity_reserved`` differs from their ACTIVE + CONFIRMED holds.

    With ``repair`` each is recomputed under its row lock and set right, logged in the ledger
    (kind ``repair``) with a ``warehouse.stock.adjusted`` event. A row whose holds exceed its
    available units cannot be repaired this way and is reported as such.
    """
    if not 1 <= limit <= MAX_REPORT:
        raise InvalidInput(f"limit must be between 1 and {MAX_REPORT}")
    found = ctx.store.reserved_drift(limit)
    if not repair:
        return [DriftResult(d, repaired=False) for d in found]
    return [_repair(ctx, d) for d in found]


def _repair(ctx: Context, drift: ReservedDrift) -> DriftResult:
    now = ctx.clock()
    key = (drift.product_id, drift.warehouse_id)
    with ctx.store.transaction() as tx:
        row = tx.lock_inventory([key])[key]
        held = tx.held_quantity(*key)
        if held == row.reserved:
            return DriftResult(drift, repaired=False, note="already consistent")
        if held > row.on_hand:
            return DriftResult(
                drift, repaired=False, note=f"holds ({held}) exceed available; release some first"
            )
        after = row.with_quantities(row.on_hand, held, now)
        record_change(
            ctx,
            tx,
            row,
            after,
            kind=MovementKind.REPAIR,
            event_type=ev.STOCK_ADJUSTED,
            reason="reserved-repair",
        )
    return DriftResult(drift, repaired=True)
