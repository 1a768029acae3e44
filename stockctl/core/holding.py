"""Holding units in one transaction: the rows of a reserve or checkout locked in
(product, warehouse) order, so two checkouts over the same rows cannot deadlock; a row short of
stock first gives back its overdue holds, then is tried once more. Also the store's
one-round-trip reserve, and the idempotent write both paths replay through.

``reservations`` (the use cases) and ``reserve_merge`` (merged reserves of a hot row) build on
this module; it knows neither.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from stockctl.core import events as ev
from stockctl.core.context import Context, record_change, write
from stockctl.core.lifecycle import end_reservation
from stockctl.core.lines import Line
from stockctl.core.mappings import reservation_fields, reservation_from, to_json
from stockctl.core.model import Inventory, MovementKind, Reservation, ReservationStatus
from stockctl.core.ports import FastRequest, StoreTx
from stockctl.core.rows import check_pair
from stockctl.errors import (
    InsufficientStock,
    InventoryNotFound,
    ProductNotFound,
)


def encode_reservation(r: Reservation) -> dict[str, Any]:
    """The reservation as an idempotent answer is stored (``mappings``, JSON-safe)."""
    return to_json(reservation_fields(r))


decode_reservation = reservation_from


def fast_request(
    ctx: Context,
    product_id: str,
    warehouse_id: str,
    quantity: int,
    ttl: timedelta,
    order_id: str | None,
) -> FastRequest | None:
    """The reservation and its candidate events, as the one-statement reserve takes them."""
    rid = ctx.store.fast_reservation_id()
    if rid is None:
        return None
    now = ctx.clock()
    r = new_reservation(rid, product_id, warehouse_id, quantity, now, ttl, order_id)
    row = Inventory(product_id, warehouse_id, 0, 0, 0, 0, now)  # quantities set by the store
    common = {"delta": -quantity, "delta_available": 0, "delta_reserved": quantity}
    context = event_context(r)
    reserved = ev.row_event(ev.STOCK_RESERVED, row, ctx.source, **common, **context)
    out = ev.row_event(ev.OUT_OF_STOCK, row, ctx.source, delta=-quantity)
    low = ev.row_event(ev.LOW_STOCK, row, ctx.source, delta=-quantity)
    return (r, reserved, out, low)


def reserve_fast(
    ctx: Context,
    product_id: str,
    warehouse_id: str,
    quantity: int,
    ttl: timedelta,
    order_id: str | None,
) -> Reservation | None:
    """The store's one-round-trip reserve, when it has one and the row has the stock.

    The events are the same as the general path's; the store fills in the row's quantities.
    """
    request = fast_request(ctx, product_id, warehouse_id, quantity, ttl, order_id)
    if request is None:  # no one-statement reserve on this store
        return None
    r, reserved, out, low = request
    return r if ctx.store.reserve_fast(r, ctx.actor, reserved, out, low) else None


def _as_now(ctx: Context, replayed: list[Reservation]) -> list[Reservation]:
    """A replayed answer's holds as they are now: released or expired since, they say so (a
    caller must not take a hold that is gone for one it still has)."""
    return [ctx.store.get_reservation(r.id) or r for r in replayed]


def new_reservation(
    rid: int,
    product_id: str,
    warehouse_id: str,
    quantity: int,
    now: datetime,
    ttl: timedelta,
    order_id: str | None,
) -> Reservation:
    return Reservation(
        id=rid,
        product_id=product_id,
        warehouse_id=warehouse_id,
        quantity=quantity,
        status=ReservationStatus.ACTIVE,
        created_at=now,
        expires_at=now + ttl,
        updated_at=now,
        order_id=order_id,
    )


def event_context(r: Reservation) -> dict[str, Any]:
    return {
        "reason": "reserved",
        "reference": r.order_id,
        "reservation_id": r.id,
        "order_id": r.order_id,
        "quantity": r.quantity,
        "expires_at": r.expires_at.isoformat(),
    }


def hold_lines(
    ctx: Context,
    lines: list[Line],
    ttl: timedelta,
    order_id: str | None,
    key: str | None,
    allow_split: bool,
    operation: str,
) -> list[Reservation]:
    def apply(tx: StoreTx, now: datetime) -> list[Reservation]:
        return _reserve_lines(ctx, tx, lines, now, ttl, order_id, allow_split)

    request = {
        "lines": [[x.product_id, x.warehouse_id, x.quantity] for x in lines],
        "ttl": ttl.total_seconds(),
        "order": order_id,
        "split": allow_split,
    }
    return write(
        ctx,
        operation,
        request,
        key,
        apply,
        lambda rs: [encode_reservation(r) for r in rs],
        lambda data: _as_now(ctx, [decode_reservation(d) for d in data]),
    )


def _reserve_lines(
    ctx: Context,
    tx: StoreTx,
    lines: list[Line],
    now: datetime,
    ttl: timedelta,
    order_id: str | None,
    allow_split: bool,
) -> list[Reservation]:
    to_allocate = sorted({x.product_id for x in lines if x.warehouse_id is None})
    keys = {(x.product_id, x.warehouse_id) for x in lines if x.warehouse_id is not None}
    candidates = tx.product_warehouses(to_allocate) if to_allocate else {}
    for product in to_allocate:
        keys.update((product, w.id) for w in candidates.get(product, []))
    rows = tx.lock_inventory(sorted(keys))  # one fixed order for every transaction
    made: list[Reservation] = []
    for line in lines:
        if line.warehouse_id is not None:
            plan = [(line.warehouse_id, line.quantity)]
            _require_row(tx, rows, line.product_id, line.warehouse_id)
        else:
            order = [w.id for w in candidates.get(line.product_id, [])]
            plan = _allocate(ctx, tx, rows, line, order, now, allow_split)
        for warehouse_id, qty in plan:
            made.append(
                _hold(ctx, tx, rows, line.product_id, warehouse_id, qty, now, ttl, order_id)
            )
    tx.add_reservations(made)
    return made


def _require_row(
    tx: StoreTx, rows: dict[tuple[str, str], Inventory], product_id: str, warehouse_id: str
) -> None:
    if (product_id, warehouse_id) in rows:
        return
    check_pair(tx, product_id, warehouse_id)
    raise InventoryNotFound(f"no stock of {product_id!r} in warehouse {warehouse_id!r}")


def _allocate(
    ctx: Context,
    tx: StoreTx,
    rows: dict[tuple[str, str], Inventory],
    line: Line,
    warehouse_order: list[str],
    now: datetime,
    allow_split: bool,
) -> list[tuple[str, int]]:
    """Choose warehouses for a line: the first that can serve it whole, else a split."""
    present = [w for w in warehouse_order if (line.product_id, w) in rows]
    if not present:
        if tx.get_product(line.product_id) is None:
            raise ProductNotFound(f"unknown product {line.product_id!r}")
        raise InsufficientStock(f"{line.product_id}: no stock in any active warehouse")
    for w in present:
        if rows[(line.product_id, w)].sellable < line.quantity:
            _expire_overdue(ctx, tx, rows, line.product_id, w, now)
    if ctx.allocation_strategy == "most_stock":
        present.sort(key=lambda w: -rows[(line.product_id, w)].sellable)
    for w in present:
        if rows[(line.product_id, w)].sellable >= line.quantity:
            return [(w, line.quantity)]
    return _split(rows, line, present, allow_split)


def _split(
    rows: dict[tuple[str, str], Inventory], line: Line, present: list[str], allow_split: bool
) -> list[tuple[str, int]]:
    """Spread a line over warehouses in order, or refuse naming what there is."""
    total = sum(max(rows[(line.product_id, w)].sellable, 0) for w in present)
    if not allow_split or total < line.quantity:
        raise InsufficientStock(
            f"{line.product_id}: asked {line.quantity}, no single warehouse has it "
            f"(sellable {total} over {len(present)} warehouses"
            f"{'' if allow_split else '; allow_split would spread it'})",
            asked=line.quantity,
            sellable=total,
        )
    plan, left = [], line.quantity
    for w in present:
        take = min(left, max(rows[(line.product_id, w)].sellable, 0))
        if take:
            plan.append((w, take))
            left -= take
        if not left:
            break
    return plan


def _hold(
    ctx: Context,
    tx: StoreTx,
    rows: dict[tuple[str, str], Inventory],
    product_id: str,
    warehouse_id: str,
    quantity: int,
    now: datetime,
    ttl: timedelta,
    order_id: str | None,
) -> Reservation:
    key = (product_id, warehouse_id)
    if rows[key].sellable < quantity:
        _expire_overdue(ctx, tx, rows, product_id, warehouse_id, now)
    before = rows[key]
    if before.sellable < quantity:
        raise InsufficientStock(
            f"insufficient stock of {product_id} in {warehouse_id}: asked {quantity}, "
            f"sellable {before.sellable}",
            product_id=product_id,
            warehouse_id=warehouse_id,
            asked=quantity,
            sellable=before.sellable,
        )
    after = before.with_quantities(
        before.on_hand, before.reserved + quantity, now, InsufficientStock
    )
    reservation = new_reservation(
        tx.new_reservation_id(), product_id, warehouse_id, quantity, now, ttl, order_id
    )
    record_change(
        ctx,
        tx,
        before,
        after,
        kind=MovementKind.RESERVE,
        event_type=ev.STOCK_RESERVED,
        **event_context(reservation),
    )
    rows[key] = after
    return reservation


def _expire_overdue(
    ctx: Context,
    tx: StoreTx,
    rows: dict[tuple[str, str], Inventory],
    product_id: str,
    warehouse_id: str,
    now: datetime,
) -> None:
    """Give back the row's ACTIVE holds past their expiry, in this transaction.

    Holds locked by another transaction (being confirmed or released) are skipped, not waited
    for: waiting here, with the inventory row locked, could deadlock against them.
    """
    for r in tx.lock_overdue_for_row(product_id, warehouse_id, now):
        key = (product_id, warehouse_id)
        rows[key] = end_reservation(
            ctx, tx, rows[key], r, ReservationStatus.EXPIRED, now, "expired"
        )


def with_status(r: Reservation, status: ReservationStatus, now: datetime) -> Reservation:
    return replace(r, status=status, updated_at=now)
