"""Warehouse routes: inventory reads and writes, reservations, checkout, recently updated."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BeforeValidator

from stockctl.core import cache, inventory, lifecycle, reservations
from stockctl.core.lines import Line
from stockctl.daemons.api import hot, schemas
from stockctl.daemons.api.deps import (
    AppDep,
    IdemKey,
    movement_out,
    require,
    reservation_out,
    row_out,
)
from stockctl.daemons.api.strict import StrictJSONRoute

router = APIRouter(tags=["inventory"], route_class=StrictJSONRoute)
READ = [Depends(require("read"))]
RESERVE = [Depends(require("reserve"))]
ADMIN = [Depends(require("admin"))]

IdQuery = Annotated[str, Query(min_length=1, max_length=64)]
# A reservation id in the path, read by the core's rule (the library's message on a bad one).
ReservationRef = Annotated[int, BeforeValidator(lifecycle.check_reservation_id)]


def _ttl(seconds: int | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)


@router.get("/inventory", dependencies=READ)
async def get_inventory(
    app: AppDep, product_id: IdQuery, warehouse_id: IdQuery
) -> schemas.InventoryRow:
    """One (product, warehouse) row: available, reserved, sellable."""
    return row_out(await hot.stock_row(app, product_id, warehouse_id))  # on the event loop


@router.get("/inventory/product/{product_id}", dependencies=READ)
def product_inventory(app: AppDep, product_id: str) -> schemas.ProductInventory:
    """Every warehouse of a product, with totals."""
    s = inventory.stock(app.ctx, product_id)
    return schemas.ProductInventory(
        product_id=s.product_id,
        warehouses=[row_out(r) for r in s.rows],
        total_available=s.total_on_hand,
        total_reserved=s.total_reserved,
        total_sellable=s.total_sellable,
    )


@router.put("/inventory/product/{product_id}", dependencies=ADMIN)
def set_stock(
    app: AppDep, product_id: str, body: schemas.SetStock, key: IdemKey
) -> schemas.InventoryRow:
    """Set quantity_available of the (product, body's warehouse_id) row, creating it if needed
    (a stock take); expect_version makes it compare-and-set."""
    return row_out(
        inventory.set_stock(
            app.ctx,
            product_id,
            body.warehouse_id,
            body.quantity_available,
            expect_version=body.expect_version,
            low_stock_threshold=body.low_stock_threshold,
            reason=body.reason,
            idempotency_key=key,
        )
    )


@router.put("/inventory/{inventory_id}", dependencies=ADMIN)
def set_row(
    app: AppDep, inventory_id: str, body: schemas.SetRow, key: IdemKey
) -> schemas.InventoryRow:
    """Set quantity_available of the inventory row with this id (the guide's form, e.g.
    ``{"quantity_available": 100}``); expect_version makes it compare-and-set. By product and
    warehouse: ``PUT /inventory/product/{product_id}`` with ``warehouse_id`` in the body."""
    product_id, warehouse_id = inventory.row_key(app.ctx, inventory_id)
    return row_out(
        inventory.set_stock(
            app.ctx,
            product_id,
            warehouse_id,
            body.quantity_available,
            expect_version=body.expect_version,
            low_stock_threshold=body.low_stock_threshold,
            reason=body.reason,
            idempotency_key=key,
        )
    )


@router.post("/inventory/receive", dependencies=ADMIN)
def receive(app: AppDep, body: schemas.Receive, key: IdemKey) -> schemas.InventoryRow:
    return row_out(
        inventory.receive(
            app.ctx,
            body.product_id,
            body.warehouse_id,
            body.quantity,
            reason=body.reason,
            reference=body.reference,
            idempotency_key=key,
        )
    )


@router.post("/inventory/adjust", dependencies=ADMIN)
def adjust(app: AppDep, body: schemas.Adjust, key: IdemKey) -> schemas.InventoryRow:
    """Correct available by a signed delta, with a reason."""
    return row_out(
        inventory.adjust(
            app.ctx,
            body.product_id,
            body.warehouse_id,
            body.delta,
            reason=body.reason,
            reference=body.reference,
            idempotency_key=key,
        )
    )


@router.post("/inventory/transfer", dependencies=ADMIN)
def transfer(app: AppDep, body: schemas.Transfer, key: IdemKey) -> schemas.TransferResult:
    src, dst = inventory.transfer(
        app.ctx,
        body.product_id,
        body.from_warehouse_id,
        body.to_warehouse_id,
        body.quantity,
        reason=body.reason,
        reference=body.reference,
        idempotency_key=key,
    )
    return schemas.TransferResult(source=row_out(src), destination=row_out(dst))


@router.post("/inventory/reserve", dependencies=RESERVE, status_code=201)
def reserve(app: AppDep, body: schemas.Reserve, key: IdemKey) -> schemas.Reserved:
    """Hold units until expires_at; without warehouse_id the allocation strategy picks one.
    The answer is the guide's: ``{"reservation": {"id": <int64>, ...}}``."""
    held = reservations.reserve(
        app.ctx,
        body.product_id,
        body.warehouse_id,
        body.quantity,
        ttl=_ttl(body.ttl_seconds),
        order_id=body.order_id,
        idempotency_key=key,
    )
    return schemas.Reserved(reservation=reservation_out(held))


@router.post("/inventory/checkout", dependencies=RESERVE, status_code=201)
def checkout(app: AppDep, body: schemas.Checkout, key: IdemKey) -> schemas.Reservations:
    """Reserve every item or none."""
    lines = [Line(i.product_id, i.warehouse_id, i.quantity) for i in body.items]
    made = reservations.checkout(
        app.ctx,
        lines,
        ttl=_ttl(body.ttl_seconds),
        order_id=body.order_id,
        allow_split=body.allow_split,
        idempotency_key=key,
    )
    return schemas.Reservations(reservations=[reservation_out(r) for r in made])


@router.get("/inventory/history", dependencies=READ)
def history(
    app: AppDep,
    product_id: IdQuery,
    warehouse_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[
        int,
        Query(ge=1, le=inventory.MAX_LIST),
        schemas.query_whole("limit", 1, inventory.MAX_LIST),
    ] = 50,
) -> schemas.Movements:
    """The ledger of a product (one warehouse, or all), newest first."""
    moves = inventory.history(app.ctx, product_id, warehouse_id, limit)
    return schemas.Movements(movements=[movement_out(m) for m in moves])


@router.get("/inventory/reservations", dependencies=READ)
def list_reservations(
    app: AppDep,
    status: Annotated[str | None, Query(max_length=16)] = None,
    product_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    order_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    expired: bool = False,
    limit: Annotated[
        int,
        Query(ge=1, le=lifecycle.MAX_LIST),
        schemas.query_whole("limit", 1, lifecycle.MAX_LIST),
    ] = 100,
) -> schemas.Reservations:
    """Reservations, newest first; ``expired``: ACTIVE holds past expiry, not yet swept."""
    found = lifecycle.list_reservations(
        app.ctx,
        status=status,
        product_id=product_id,
        order_id=order_id,
        expired=expired,
        limit=limit,
    )
    return schemas.Reservations(reservations=[reservation_out(r) for r in found])


@router.get("/inventory/reservations/{reservation_id}", dependencies=READ)
def get_reservation(app: AppDep, reservation_id: ReservationRef) -> schemas.ReservationOut:
    from stockctl.errors import ReservationNotFound

    found = app.store.get_reservation(lifecycle.check_reservation_id(reservation_id))
    if found is None:
        raise ReservationNotFound(f"no reservation {reservation_id}")
    return reservation_out(found)


@router.post("/inventory/reservations/{reservation_id}/confirm", dependencies=RESERVE)
def confirm(app: AppDep, reservation_id: ReservationRef) -> schemas.ReservationOut:
    return reservation_out(lifecycle.confirm(app.ctx, reservation_id))


@router.post("/inventory/reservations/{reservation_id}/release", dependencies=RESERVE)
def release(
    app: AppDep, reservation_id: ReservationRef, body: schemas.Release | None = None
) -> schemas.ReservationOut:
    reason = (body.reason if body else None) or "released"
    return reservation_out(lifecycle.release(app.ctx, reservation_id, reason))


@router.post("/inventory/reservations/{reservation_id}/extend", dependencies=RESERVE)
def extend(
    app: AppDep, reservation_id: ReservationRef, body: schemas.Extend
) -> schemas.ReservationOut:
    return reservation_out(
        lifecycle.extend(app.ctx, reservation_id, timedelta(seconds=body.ttl_seconds))
    )


@router.post("/inventory/reservations/{reservation_id}/fulfil", dependencies=ADMIN)
def fulfil(app: AppDep, reservation_id: ReservationRef) -> schemas.ReservationOut:
    return reservation_out(lifecycle.fulfil(app.ctx, reservation_id))


@router.post("/inventory/reservations/release-order", dependencies=RESERVE)
def release_order(app: AppDep, body: schemas.ReleaseOrder) -> schemas.Reservations:
    released = lifecycle.release_order(app.ctx, body.order_id, body.reason or "order_cancelled")
    return schemas.Reservations(reservations=[reservation_out(r) for r in released])


@router.post("/inventory/recently-updated", dependencies=READ)
def recently_updated(app: AppDep, body: schemas.RecentlyUpdated) -> schemas.RecentlyUpdatedOut:
    """Rows changed since a time, ordered by (last_movement_at, product, warehouse)."""
    page = cache.recently_updated(app.store, body.since, body.warehouse_id, body.page, body.limit)
    return schemas.RecentlyUpdatedOut(
        items=[row_out(r) for r in page.rows],
        page=page.page,
        limit=page.limit,
        has_more=page.has_more,
    )
