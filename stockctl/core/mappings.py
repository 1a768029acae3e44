"""Each model's fields under its edge names, once: the inventory row, the reservation and the
ledger line as the HTTP API, the CLI's JSON, the idempotency replay and the HTTP clients spell
them (the guide's ``quantity_available`` / ``quantity_reserved`` for on hand and reserved; the
README's vocabulary table says what each name means).

``*_fields`` give plain values (times as ``datetime``; callers that need text serialise them,
see ``to_json``); the ``*_from`` functions read such a mapping back, from datetimes or ISO text,
ignoring the derived fields (``sellable``, ``status``). Pure standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from stockctl.core.model import Inventory, Movement, MovementKind, Reservation, ReservationStatus
from stockctl.core.ports import ReservedDrift, WarehouseTotals


def row_fields(row: Inventory) -> dict[str, Any]:
    return {
        "id": row.id,
        "product_id": row.product_id,
        "warehouse_id": row.warehouse_id,
        "quantity_available": row.on_hand,
        "quantity_reserved": row.reserved,
        "sellable": row.sellable,
        "low_stock_threshold": row.low_stock_threshold,
        "status": row.status.value,
        "version": row.version,
        "last_movement_at": row.last_movement_at,
    }


def row_from(d: Mapping[str, Any]) -> Inventory:
    return Inventory(
        id=d.get("id"),  # idempotent answers stored before rows had ids have none
        product_id=d["product_id"],
        warehouse_id=d["warehouse_id"],
        on_hand=d["quantity_available"],
        reserved=d["quantity_reserved"],
        low_stock_threshold=d["low_stock_threshold"],
        version=d["version"],
        last_movement_at=_time(d.get("last_movement_at")),
    )


def reservation_fields(r: Reservation) -> dict[str, Any]:
    return {
        "id": r.id,
        "product_id": r.product_id,
        "warehouse_id": r.warehouse_id,
        "quantity": r.quantity,
        "status": r.status.value,
        "order_id": r.order_id,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "updated_at": r.updated_at,
    }


def reservation_from(d: Mapping[str, Any]) -> Reservation:
    return Reservation(
        id=int(d["id"]),
        product_id=d["product_id"],
        warehouse_id=d["warehouse_id"],
        quantity=d["quantity"],
        status=ReservationStatus(d["status"]),
        order_id=d.get("order_id"),
        created_at=_required_time(d["created_at"]),
        expires_at=_required_time(d["expires_at"]),
        updated_at=_required_time(d["updated_at"]),
    )


def movement_fields(m: Movement) -> dict[str, Any]:
    return {
        "id": m.id,
        "created_at": m.created_at,
        "product_id": m.product_id,
        "warehouse_id": m.warehouse_id,
        "kind": m.kind.value,
        "delta_available": m.delta_on_hand,
        "delta_reserved": m.delta_reserved,
        "quantity_available": m.on_hand,
        "quantity_reserved": m.reserved,
        "version": m.version,
        "reason": m.reason,
        "reference": m.reference,
        "reservation_id": m.reservation_id,
        "actor": m.actor,
    }


def movement_from(d: Mapping[str, Any]) -> Movement:
    return Movement(
        id=d.get("id"),
        created_at=_required_time(d["created_at"]),
        product_id=d["product_id"],
        warehouse_id=d["warehouse_id"],
        kind=MovementKind(d["kind"]),
        delta_on_hand=d["delta_available"],
        delta_reserved=d["delta_reserved"],
        on_hand=d["quantity_available"],
        reserved=d["quantity_reserved"],
        version=d["version"],
        reason=d.get("reason"),
        reference=d.get("reference"),
        reservation_id=d.get("reservation_id"),
        actor=d.get("actor"),
    )


def totals_fields(t: WarehouseTotals) -> dict[str, Any]:
    """A warehouse's stock totals (``stockctl overview``, ``warehouses list``)."""
    return {
        "warehouse_id": t.warehouse_id,
        "name": t.name,
        "priority": t.priority,
        "active": t.active,
        "products": t.products,
        "quantity_available": t.on_hand,
        "quantity_reserved": t.reserved,
        "out_of_stock": t.out_of_stock,
        "low_stock": t.low_stock,
    }


def drift_fields(d: ReservedDrift) -> dict[str, Any]:
    """A row whose reserved counter differs from its holds (``reservations verify``)."""
    return {
        "product_id": d.product_id,
        "warehouse_id": d.warehouse_id,
        "quantity_available": d.on_hand,
        "quantity_reserved": d.reserved,
        "expected_reserved": d.expected_reserved,
    }


def to_json(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``*_fields`` output made JSON-safe: datetimes as ISO 8601 text."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fields.items()}


def _time(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value) if value else None


def _required_time(value: datetime | str) -> datetime:
    found = _time(value)
    if found is None:
        raise ValueError("a time is required here")
    return found
