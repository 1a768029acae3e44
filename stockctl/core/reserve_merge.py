"""Merged reservations of one hot row: concurrent reserves of the same (product, warehouse) in
this process become one store call (``stockctl.core.hot_rows`` decides who merges with whom).

The outcome is the one-by-one outcome in arrival order: the store walks the requests against the
row's sellable units, takes those that fit and refuses the others with ``InsufficientStock``;
each taken request gets its own reservation, ledger row and events. Where one by one would do
more than that single statement can (expire the row's overdue holds first, name a missing row
or product), the store changes nothing and the merge runs one by one, through today's path.
A merge of one is today's one-statement reserve. Reserves with an idempotency key or without a
warehouse never come here.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from stockctl.core import holding
from stockctl.core.context import Context
from stockctl.core.hot_rows import HotRows
from stockctl.core.lines import Line
from stockctl.core.model import Reservation
from stockctl.core.ports import FastRequest
from stockctl.errors import InsufficientStock


@dataclass(frozen=True, slots=True)
class Pending:
    """One reserve waiting for its merge, built (ids, time, envelopes) when it arrived."""

    ctx: Context
    request: FastRequest
    ttl: timedelta

    @property
    def reservation(self) -> Reservation:
        return self.request[0]


def merger(window_seconds: float, max_merge: int) -> HotRows[Pending, Reservation]:
    """The coordinator a ``Context`` carries as ``hot_rows``."""
    return HotRows(run_merge, window=window_seconds, max_merge=max_merge)


def reserve_merged(
    ctx: Context,
    product_id: str,
    warehouse_id: str,
    quantity: int,
    ttl: timedelta,
    order_id: str | None,
) -> Reservation:
    """Reserve through the context's coordinator (checked arguments)."""
    assert ctx.hot_rows is not None
    request = holding.fast_request(ctx, product_id, warehouse_id, quantity, ttl, order_id)
    if request is None:  # the store has no one-statement reserve: today's path
        return _one_by_one(ctx, product_id, warehouse_id, quantity, ttl, order_id)
    key = (id(ctx.store), product_id, warehouse_id)
    outcome: Reservation = ctx.hot_rows.submit(key, Pending(ctx, request, ttl))
    return outcome


def run_merge(key: Hashable, items: list[Pending]) -> Sequence[Reservation | Exception]:
    """Carry out one merge (all items share one row and one context)."""
    ctx = items[0].ctx
    if len(items) == 1:
        return [_alone(items[0])]
    outcomes = ctx.store.reserve_merged([p.request for p in items], ctx.actor)
    if outcomes is None:
        return [_alone(p) for p in items]
    return [
        p.reservation if taken else _refusal(p.reservation, sellable)
        for p, (taken, sellable) in zip(items, outcomes, strict=True)
    ]


def _alone(p: Pending) -> Reservation | Exception:
    """One request as it runs without merging: the one-statement reserve, else the general
    path (which expires overdue holds, or says what is missing)."""
    r, reserved, out, low = p.request
    try:
        if p.ctx.store.reserve_fast(r, p.ctx.actor, reserved, out, low):
            return r
        return _general(p.ctx, r.product_id, r.warehouse_id, r.quantity, p.ttl, r.order_id)
    except Exception as exc:  # this request's own outcome, raised in its caller
        return exc


def _one_by_one(
    ctx: Context,
    product_id: str,
    warehouse_id: str,
    quantity: int,
    ttl: timedelta,
    order_id: str | None,
) -> Reservation:
    fast = holding.reserve_fast(ctx, product_id, warehouse_id, quantity, ttl, order_id)
    return fast or _general(ctx, product_id, warehouse_id, quantity, ttl, order_id)


def _general(
    ctx: Context,
    product_id: str,
    warehouse_id: str,
    quantity: int,
    ttl: timedelta,
    order_id: str | None,
) -> Reservation:
    line = Line(product_id, warehouse_id, quantity)
    (only,) = holding.hold_lines(
        ctx, [line], ttl, order_id, None, allow_split=False, operation="reserve"
    )
    return only


def _refusal(r: Reservation, sellable: int) -> InsufficientStock:
    """What the general path says to a reserve the row cannot serve (``holding._hold``)."""
    return InsufficientStock(
        f"insufficient stock of {r.product_id} in {r.warehouse_id}: asked {r.quantity}, "
        f"sellable {sellable}",
        product_id=r.product_id,
        warehouse_id=r.warehouse_id,
        asked=r.quantity,
        sellable=sellable,
    )
