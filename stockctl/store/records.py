"""Rows of the SQL tables as the core's models, and the models as insert values."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from stockctl.core.events import CloudEvent
from stockctl.core.mappings import movement_fields, reservation_fields
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
    """Insert values of a ledger line: its columns are the edge names ``core.mappings`` spells
    (the id is the database's)."""
    values = movement_fields(m)
    del values["id"]
    return values


def event_values(e: CloudEvent) -> dict[str, Any]:
    return {
        "event_id": e.id,
        "topic": e.topic,
        "subject": e.subject,
        "payload": e.to_json(),
        "created_at": e.time,
    }


def reservation_values(r: Reservation) -> dict[str, Any]:
    """Insert values of a reservation: its columns are the edge names ``core.mappings`` spells."""
    return reservation_fields(r)
