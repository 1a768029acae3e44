"""After a hold: confirm, release, extend, fulfil, expire, and release every hold of an order.

Lifecycle (DESIGN.md): ACTIVE -> CONFIRMED -> FULFILLED; ACTIVE -> RELEASED | EXPIRED;
CONFIRMED -> RELEASED. Releasing a released or expired hold is a no-op; confirming an expired
one is ``ReservationExpired``; confirming a confirmed one is a no-op.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from stockctl.core import events as ev
from stockctl.core.context import Context, record_change
from stockctl.core.lines import check_ttl
from stockctl.core.model import (
    Inventory,
    MovementKind,
    Reservation,
    ReservationStatus,
    check_id,
    check_reason,
)
from stockctl.core.ports import StoreTx
from stockctl.core.values import check_order_id
from stockctl.errors import InvalidInput, InvalidTransition, ReservationExpired, ReservationNotFound

S = ReservationStatus


MAX_RESERVATION_ID = 2**63 - 1  # the guide's int64


def check_reservation_id(reservation_id: object) -> int:
    """A reservation id: the guide's int64 (1 to 2**63 - 1), as an int or its decimal digits
    (a path segment, a CLI argument); no sign, spaces, float or boolean."""
    value = reservation_id
    if isinstance(value, str) and re.fullmatch(r"[1-9][0-9]{0,18}", value):
        value = int(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= MAX_RESERVATION_ID
    ):
        raise InvalidInput(
            f"malformed reservation id {str(reservation_id)[:40]!r}: expected a whole number "
            f"from 1 to {MAX_RESERVATION_ID}"
        )
    return value


def end_reservation(
    ctx: Context,
    tx: StoreTx,
    row: Inventory,
    r: Reservation,
    status: ReservationStatus,
    now: datetime,
    reason: str,
) -> Inventory:
    """Release or expire a hold that holds stock: its units go back to sellable."""
    after = row.with_quantities(row.on_hand, row.reserved - r.quantity, now)
    kind = MovementKind.EXPIRE if status is S.EXPIRED else MovementKind.RELEASE
    record_change(
        ctx,
        tx,
        row,
        after,
        kind=kind,
        event_type=ev.STOCK_RELEASED,
        reason=reason,
        reference=r.order_id,
        reservation_id=r.id,
        order_id=r.order_id,
        quantity=r.quantity,
    )
    tx.update_reservation(replace(r, status=status, updated_at=now))
    return after


def _locked(tx: StoreTx, reservation_id: int) -> tuple[Reservation, Inventory]:
    r = tx.lock_reservation(reservation_id)
    if r is None:
        raise ReservationNotFound(f"no reservation {reservation_id}")
    row = tx.lock_inventory([(r.product_id, r.warehouse_id)])[(r.product_id, r.warehouse_id)]
    return r, row


def _overdue(r: Reservation, now: datetime) -> bool:
    return r.status is S.ACTIVE and r.expires_at <= now


Step = Callable[[StoreTx, Reservation, Inventory, datetime], Reservation]


def _run(
    ctx: Context, reservation_id: int, step: Step, on_expired: Callable[[Reservation], Reservation]
) -> Reservation:
    """Lock the hold and apply ``step``. An overdue ACTIVE hold is expired first, and that
    expiry commits even though the operation then answers as for an expired hold."""
    reservation_id = check_reservation_id(reservation_id)
    now = ctx.clock()
    with ctx.store.transaction() as tx:
        r, row = _locked(tx, reservation_id)
        if r.status is S.EXPIRED:
            expired = r
        elif not _overdue(r, now):
            return step(tx, r, row, now)
        else:
            end_reservation(ctx, tx, row, r, S.EXPIRED, now, "expired")
            expired = replace(r, status=S.EXPIRED, updated_at=now)
    return on_expired(expired)


def _expired_error(action: str) -> Callable[[Reservation], Reservation]:
    def refuse(r: Reservation) -> Reservation:
        raise ReservationExpired(
            f"reservation {r.id} expired at {r.expires_at:%Y-%m-%d %H:%M:%S}Z; {action}"
        )

    return refuse


def confirm(ctx: Context, reservation_id: int) -> Reservation:
    """The order committed: the hold no longer expires."""

    def step(tx: StoreTx, r: Reservation, row: Inventory, now: datetime) -> Reservation:
        if r.status is S.RELEASED:
            raise InvalidTransition(f"reservation {r.id} was released; reserve again")
        if r.status in (S.CONFIRMED, S.FULFILLED):
            return r
        confirmed = replace(r, status=S.CONFIRMED, updated_at=now)
        tx.update_reservation(confirmed)
        return confirmed

    return _run(ctx, reservation_id, step, _expired_error("reserve again"))


def release(ctx: Context, reservation_id: int, reason: str = "released") -> Reservation:
    """Give the units back (cancel, payment failure). Safe to retry."""
    why = check_reason(reason, required=False) or "released"

    def step(tx: StoreTx, r: Reservation, row: Inventory, now: datetime) -> Reservation:
        if r.status is S.RELEASED:
            return r
        if r.status is S.FULFILLED:
            raise InvalidTransition(f"reservation {r.id} was fulfilled (shipped); adjust instead")
        end_reservation(ctx, tx, row, r, S.RELEASED, now, why)
        return replace(r, status=S.RELEASED, updated_at=now)

    return _run(ctx, reservation_id, step, lambda r: r)


def extend(ctx: Context, reservation_id: int, ttl: timedelta) -> Reservation:
    """Push an ACTIVE hold's expiry to now + ttl."""
    hold = check_ttl(ctx, ttl)

    def step(tx: StoreTx, r: Reservation, row: Inventory, now: datetime) -> Reservation:
        if r.status is not S.ACTIVE:
            raise InvalidTransition(f"reservation {r.id} is {r.status.value}; only ACTIVE extends")
        extended = replace(r, expires_at=now + hold, updated_at=now)
        tx.update_reservation(extended)
        return extended

    return _run(ctx, reservation_id, step, _expired_error("reserve again"))


def fulfil(ctx: Context, reservation_id: int) -> Reservation:
    """Shipped: available and reserved both drop by the held quantity."""

    def step(tx: StoreTx, r: Reservation, row: Inventory, now: datetime) -> Reservation:
        if r.status is S.FULFILLED:
            return r
        if r.status is not S.CONFIRMED:
            raise InvalidTransition(f"reservation {r.id} is {r.status.value}; confirm it first")
        after = row.with_quantities(row.on_hand - r.quantity, row.reserved - r.quantity, now)
        record_change(
            ctx,
            tx,
            row,
            after,
            kind=MovementKind.FULFIL,
            event_type=ev.STOCK_UPDATED,
            reason="fulfilled",
            reference=r.order_id,
            reservation_id=r.id,
            order_id=r.order_id,
        )
        done = replace(r, status=S.FULFILLED, updated_at=now)
        tx.update_reservation(done)
        return done

    return _run(ctx, reservation_id, step, _expired_error("nothing to ship"))


def release_order(
    ctx: Context, order_id: str, reason: str = "order_cancelled"
) -> list[Reservation]:
    """Release every ACTIVE or CONFIRMED hold of an order; returns those released."""
    check_order_id(order_id)
    why = check_reason(reason, required=False) or "order_cancelled"
    with ctx.store.transaction() as tx:
        return release_order_in(ctx, tx, order_id, why, ctx.clock())


def release_order_in(
    ctx: Context, tx: StoreTx, order_id: str, reason: str, now: datetime
) -> list[Reservation]:
    """``release_order`` inside a caller's transaction (the embedded event pipeline's)."""
    held = tx.lock_order_reservations(order_id)
    rows = tx.lock_inventory(sorted({(r.product_id, r.warehouse_id) for r in held}))
    released = []
    for r in held:
        key = (r.product_id, r.warehouse_id)
        status = S.EXPIRED if _overdue(r, now) else S.RELEASED
        why = "expired" if status is S.EXPIRED else reason
        rows[key] = end_reservation(ctx, tx, rows[key], r, status, now, why)
        released.append(replace(r, status=status, updated_at=now))
    return released


def expire_due(ctx: Context, now: datetime | None = None, limit: int = 1000) -> int:
    """Expire up to ``limit`` overdue ACTIVE holds; concurrent sweepers take disjoint rows."""
    if not 1 <= limit <= 100_000:
        raise InvalidInput("limit must be between 1 and 100000")
    if now is not None and (not isinstance(now, datetime) or now.utcoffset() is None):
        raise InvalidInput("now must be a timezone-aware datetime")
    at = now or ctx.clock()
    with ctx.store.transaction() as tx:
        due = tx.claim_due_reservations(at, limit)
        rows = tx.lock_inventory(sorted({(r.product_id, r.warehouse_id) for r in due}))
        for r in due:
            key = (r.product_id, r.warehouse_id)
            rows[key] = end_reservation(ctx, tx, rows[key], r, S.EXPIRED, at, "expired")
        return len(due)


MAX_LIST = 10_000


def list_reservations(
    ctx: Context,
    *,
    status: str | None = None,
    product_id: str | None = None,
    order_id: str | None = None,
    expired: bool = False,
    limit: int = 100,
) -> list[Reservation]:
    """Reservations, newest first; ``expired``: ACTIVE holds past expiry, not yet swept."""
    if status is not None:
        valid = [s.value for s in ReservationStatus]
        if not isinstance(status, str) or status.upper() not in valid:
            raise InvalidInput(f"unknown status {status!r}: one of {', '.join(valid)}")
        status = status.upper()
    if product_id is not None:
        check_id(product_id, "product")
    if order_id is not None:
        check_order_id(order_id)
    if not isinstance(expired, bool):
        raise InvalidInput("expired must be true or false")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST:
        raise InvalidInput(f"limit must be a whole number between 1 and {MAX_LIST}")
    return ctx.store.list_reservations(
        status=status,
        product_id=product_id,
        order_id=order_id,
        overdue_at=ctx.clock() if expired else None,
        limit=limit,
    )
