"""Inventory use cases: products, warehouses, receive, set, adjust, transfer, and reads."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from stockctl.core import events as ev
from stockctl.core.context import Context, check_idempotency_key, record_change, write
from stockctl.core.mappings import row_fields, row_from, to_json
from stockctl.core.model import (
    Inventory,
    Movement,
    MovementKind,
    Product,
    StockSummary,
    Warehouse,
    check_delta,
    check_id,
    check_quantity,
    check_reason,
)
from stockctl.core.ports import StoreTx
from stockctl.core.rows import blank_row, check_pair, existing_row, row_or_new
from stockctl.core.values import check_name, check_reference, check_whole
from stockctl.errors import (
    AlreadyExists,
    InsufficientStock,
    InvalidInput,
    InventoryNotFound,
    ProductNotFound,
    VersionConflict,
    WarehouseNotFound,
)

MAX_LIST = 10_000


def add_product(ctx: Context, product_id: str, name: str | None = None) -> Product:
    product = Product(check_id(product_id, "product"), check_name(name or product_id), ctx.clock())
    with ctx.store.transaction() as tx:
        if not tx.add_product(product):
            raise AlreadyExists(f"product {product_id!r} already exists")
    return product


def add_warehouse(
    ctx: Context,
    warehouse_id: str,
    name: str | None = None,
    priority: int = 100,
    active: bool = True,
) -> Warehouse:
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 10_000:
        raise InvalidInput("priority must be a whole number from 0 to 10000 (lower is preferred)")
    warehouse = Warehouse(
        check_id(warehouse_id, "warehouse"),
        check_name(name or warehouse_id),
        priority,
        active,
        ctx.clock(),
    )
    with ctx.store.transaction() as tx:
        if not tx.add_warehouse(warehouse):
            raise AlreadyExists(f"warehouse {warehouse_id!r} already exists")
    return warehouse


def encode_row(row: Inventory) -> dict[str, Any]:
    """The row as an idempotent answer is stored (``mappings``, JSON-safe)."""
    return to_json(row_fields(row))


decode_row = row_from


def receive(
    ctx: Context,
    product_id: str,
    warehouse_id: str,
    quantity: int,
    *,
    reason: str | None = None,
    reference: str | None = None,
    idempotency_key: str | None = None,
) -> Inventory:
    """Units arrived: available goes up by ``quantity``. Creates the row on first receipt."""
    check_id(product_id, "product")
    check_id(warehouse_id, "warehouse")
    check_quantity(quantity)
    reason = check_reason(reason, required=False)
    reference = check_reference(reference)

    def apply(tx: StoreTx, now: Any) -> Inventory:
        before, created = row_or_new(tx, product_id, warehouse_id)
        after = before.with_quantities(before.on_hand + quantity, before.reserved, now)
        record_change(
            ctx,
            tx,
            before,
            after,
            kind=MovementKind.RECEIVE,
            event_type=ev.STOCK_UPDATED,
            created=created,
            reason=reason or "receive",
            reference=reference,
        )
        return after

    request = {"p": product_id, "w": warehouse_id, "q": quantity, "r": reason, "ref": reference}
    return write(
        ctx,
        "receive",
        request,
        check_idempotency_key(idempotency_key),
        apply,
        encode_row,
        decode_row,
    )


def set_stock(
    ctx: Context,
    product_id: str,
    warehouse_id: str,
    quantity: int,
    *,
    expect_version: int | None = None,
    low_stock_threshold: int | None = None,
    reason: str | None = None,
    idempotency_key: str | None = None,
) -> Inventory:
    """Set available to an absolute count (a stock take). ``expect_version`` makes it a CAS."""
    check_id(product_id, "product")
    check_id(warehouse_id, "warehouse")
    check_quantity(quantity, allow_zero=True)
    if expect_version is not None:
        check_quantity(expect_version, "expect_version", allow_zero=True)
    if low_stock_threshold is not None:
        check_quantity(low_stock_threshold, "low_stock_threshold", allow_zero=True)
    reason = check_reason(reason, required=False)

    def apply(tx: StoreTx, now: Any) -> Inventory:
        before, created = row_or_new(tx, product_id, warehouse_id)
        if expect_version is not None and before.version != expect_version:
            raise VersionConflict(
                f"{product_id}@{warehouse_id} is at version {before.version}, "
                f"not {expect_version}: re-read and retry",
                current_version=before.version,
            )
        base = before
        if low_stock_threshold is not None:
            base = replace(before, low_stock_threshold=low_stock_threshold)
        after = base.with_quantities(quantity, before.reserved, now)
        record_change(
            ctx,
            tx,
            before,
            after,
            kind=MovementKind.SET,
            event_type=ev.STOCK_UPDATED,
            created=created,
            reason=reason or "set",
        )
        return after

    request = {
        "p": product_id,
        "w": warehouse_id,
        "q": quantity,
        "v": expect_version,
        "t": low_stock_threshold,
        "r": reason,
    }
    return write(
        ctx, "set", request, check_idempotency_key(idempotency_key), apply, encode_row, decode_row
    )


def adjust(
    ctx: Context,
    product_id: str,
    warehouse_id: str,
    delta: int,
    *,
    reason: str,
    reference: str | None = None,
    idempotency_key: str | None = None,
) -> Inventory:
    """A signed correction (damage, count error, found units); the reason is required."""
    check_id(product_id, "product")
    check_id(warehouse_id, "warehouse")
    check_delta(delta)
    checked_reason = check_reason(reason, required=True)
    reference = check_reference(reference)

    def apply(tx: StoreTx, now: Any) -> Inventory:
        if delta < 0:
            before, created = existing_row(tx, product_id, warehouse_id), False
        else:
            before, created = row_or_new(tx, product_id, warehouse_id)
        after = before.with_quantities(before.on_hand + delta, before.reserved, now)
        record_change(
            ctx,
            tx,
            before,
            after,
            kind=MovementKind.ADJUST,
            event_type=ev.STOCK_ADJUSTED,
            created=created,
            reason=checked_reason,
            reference=reference,
        )
        return after

    request = {
        "p": product_id,
        "w": warehouse_id,
        "d": delta,
        "r": checked_reason,
        "ref": reference,
    }
    return write(
        ctx,
        "adjust",
        request,
        check_idempotency_key(idempotency_key),
        apply,
        encode_row,
        decode_row,
    )


def transfer(
    ctx: Context,
    product_id: str,
    from_warehouse: str,
    to_warehouse: str,
    quantity: int,
    *,
    reason: str | None = None,
    reference: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[Inventory, Inventory]:
    """Move sellable units between two warehouses of one product, atomically."""
    check_id(product_id, "product")
    check_id(from_warehouse, "warehouse")
    check_id(to_warehouse, "warehouse")
    check_quantity(quantity)
    if from_warehouse == to_warehouse:
        raise InvalidInput("transfer needs two different warehouses")
    reason = check_reason(reason, required=False) or "transfer"
    reference = check_reference(reference)

    def apply(tx: StoreTx, now: Any) -> tuple[Inventory, Inventory]:
        locked = tx.lock_inventory([(product_id, from_warehouse), (product_id, to_warehouse)])
        # Both rows are locked by that one ordered statement and never again: locking a row
        # that a concurrent writer created in between would take the locks out of order and
        # deadlock against a transfer the other way. A missing source is refused; a missing
        # destination is inserted, and if a concurrent writer inserted it first the whole
        # transaction reruns and finds it locked.
        src = locked.get((product_id, from_warehouse))
        if src is None:
            check_pair(tx, product_id, from_warehouse)  # the precise NotFound first
            raise InventoryNotFound(f"no stock of {product_id!r} in warehouse {from_warehouse!r}")
        dst, created = locked.get((product_id, to_warehouse)), False
        if dst is None:
            dst, created = blank_row(tx, product_id, to_warehouse), True
        src_after = src.with_quantities(
            src.on_hand - quantity, src.reserved, now, short=InsufficientStock
        )
        dst_after = dst.with_quantities(dst.on_hand + quantity, dst.reserved, now)
        sides = (
            (src, src_after, MovementKind.TRANSFER_OUT, False),
            (dst, dst_after, MovementKind.TRANSFER_IN, created),
        )
        for before, after, kind, new in sides:
            record_change(
                ctx,
                tx,
                before,
                after,
                kind=kind,
                event_type=ev.STOCK_TRANSFERRED,
                created=new,
                reason=reason,
                reference=reference,
                from_warehouse_id=from_warehouse,
                to_warehouse_id=to_warehouse,
            )
        return src_after, dst_after

    request = {
        "p": product_id,
        "f": from_warehouse,
        "t": to_warehouse,
        "q": quantity,
        "r": reason,
        "ref": reference,
    }
    return write(
        ctx,
        "transfer",
        request,
        check_idempotency_key(idempotency_key),
        apply,
        lambda pair: [encode_row(pair[0]), encode_row(pair[1])],
        lambda data: (decode_row(data[0]), decode_row(data[1])),
    )


def stock(ctx: Context, product_id: str, warehouse_id: str | None = None) -> StockSummary:
    """A product's rows (one warehouse or all) and totals."""
    check_id(product_id, "product")
    if warehouse_id is not None:
        check_id(warehouse_id, "warehouse")
    if warehouse_id is not None:  # one row: one indexed read (the stock-check hot path)
        row = ctx.store.get_inventory(product_id, warehouse_id)
        if row is not None:
            return StockSummary(product_id, [row])
        if ctx.store.get_product(product_id) is None:
            raise ProductNotFound(f"unknown product {product_id!r}")
        if ctx.store.get_warehouse(warehouse_id) is None:
            raise WarehouseNotFound(f"unknown warehouse {warehouse_id!r}")
        raise InventoryNotFound(f"no stock of {product_id!r} in warehouse {warehouse_id!r}")
    rows = ctx.store.product_inventory(product_id)
    if not rows and ctx.store.get_product(product_id) is None:
        raise ProductNotFound(f"unknown product {product_id!r}")
    return StockSummary(product_id, rows)


MAX_ROW_ID = 2**63 - 1


def row_key(ctx: Context, inventory_id: object) -> tuple[str, str]:
    """(product, warehouse) of the inventory row with this id (an int, or its digits)."""
    value = inventory_id
    if isinstance(value, str) and re.fullmatch(r"[1-9][0-9]{0,18}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ROW_ID:
        raise InvalidInput(
            f"malformed inventory id {str(inventory_id)[:40]!r}: expected a whole number from 1 "
            f"to {MAX_ROW_ID} (by product and warehouse: PUT /inventory/product/{{product_id}})"
        )
    key = ctx.store.inventory_key(value)
    if key is None:
        raise InventoryNotFound(f"no inventory row {value}")
    return key


def history(
    ctx: Context, product_id: str, warehouse_id: str | None = None, limit: int = 50
) -> list[Movement]:
    check_id(product_id, "product")
    if warehouse_id is not None:
        check_id(warehouse_id, "warehouse")
    check_whole(limit, "limit", 1, MAX_LIST)
    if ctx.store.get_product(product_id) is None:
        raise ProductNotFound(f"unknown product {product_id!r}")
    return ctx.store.history(product_id, warehouse_id, limit)
