"""Rows of the SQL tables as the core's models, and the models as insert values."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from stockctl.core.events import CloudEvent
from stockctl.core.model import Inventory, Movement, MovementKind, Product, Reservation, Warehouse


def product_from_row(r: Row[Any]) -> Product:
    return Product(id=r.id, name=r.name, created_at=r.created_at)


def warehouse_from_row(r: Row[Any]) -> Warehouse:
    return Warehouse(
        id=r.id, name=r.name, priority=r.priority, active=bool(r.active), created_at=r.created_at
    )


def inventory_from_row(r: Row[Any]) -> Inventory:
    return Inventory(
        id=r.id,
        product_id=r.product_id,
        warehouse_id=r.warehouse_id,
        on_hand=r.quantity_available,
        reserved=r.quantity_reserved,
        low_stock_threshold=r.low_stock_threshold,
        version=r.version,
        last_movement_at=r.last_movement_at,
    )


def movement_from_row(r: Row[Any]) -> Movement:
    return Movement(
        id=r.id,
        product_id=r.product_id,
        warehouse_id=r.warehouse_id,
        kind=MovementKind(r.kind),
        delta_on_hand=r.delta_available,
        delta_reserved=r.delta_reserved,
        on_hand=r.quantity_available,
        reserved=r.quantity_reserved,
        version=r.version,
        reason=r.reason,
        reference=r.reference,
        reservation_id=r.reservation_id,
        actor=r.actor,
        created_at=r.created_at,
    )


def movement_values(m: Movement) -> dict[str, Any]:
    return {
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
        "created_at": m.created_at,
    }


def event_values(e: CloudEvent) -> dict[str, Any]:
    return {
        "event_id": e.id,
        "topic": e.topic,
        "subject": e.subject,
        "payload": e.to_json(),
        "created_at": e.time,
    }


def reservation_values(r: Reservation) -> dict[str, Any]:
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
