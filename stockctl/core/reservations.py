"""Reserve and checkout: hold units for an order, all lines or none, never more than sellable.

How the rows are locked and held is ``holding``; merged reserves of a hot row are
``reserve_merge``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from stockctl.core.context import Context, check_idempotency_key
from stockctl.core.holding import hold_lines, reserve_fast
from stockctl.core.lines import Line, check_ttl, merge_lines
from stockctl.core.model import Reservation
from stockctl.core.values import check_order_id

STRATEGIES = ("priority", "most_stock")


def reserve(
    ctx: Context,
    product_id: str,
    warehouse_id: str | None,
    quantity: int,
    *,
    ttl: timedelta | None = None,
    order_id: str | None = None,
    idempotency_key: str | None = None,
) -> Reservation:
    """Hold ``quantity`` units in one warehouse (given, or chosen by the allocation strategy)."""
    line = Line(product_id, warehouse_id, quantity).checked()
    hold = check_ttl(ctx, ttl)
    check_order_id(order_id)
    key = check_idempotency_key(idempotency_key)
    if key is None and warehouse_id is not None:
        if ctx.hot_rows is not None:
            from stockctl.core.reserve_merge import reserve_merged

            return reserve_merged(ctx, line.product_id, warehouse_id, quantity, hold, order_id)
        fast = reserve_fast(ctx, line.product_id, warehouse_id, quantity, hold, order_id)
        if fast is not None:
            return fast
    (only,) = hold_lines(ctx, [line], hold, order_id, key, allow_split=False, operation="reserve")
    return only


def checkout(
    ctx: Context,
    lines: Sequence[Line],
    *,
    ttl: timedelta | None = None,
    order_id: str | None = None,
    allow_split: bool = False,
    idempotency_key: str | None = None,
) -> list[Reservation]:
    """Reserve every line or none. With ``allow_split`` a line without a warehouse may be
    spread over several warehouses when no single one can serve it."""
    merged = merge_lines(lines)
    hold = check_ttl(ctx, ttl)
    check_order_id(order_id)
    key = check_idempotency_key(idempotency_key)
    return hold_lines(ctx, merged, hold, order_id, key, allow_split, operation="checkout")
