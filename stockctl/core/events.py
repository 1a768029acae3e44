"""CloudEvents 1.0 for stock changes, and which events a change yields.

Every change yields its primary event (updated, adjusted, transferred, reserved, released) plus
threshold events when sellable crosses the row's low-stock threshold or zero. The topic of an
event is its type: the Redis stream key, as Dapr lays streams out.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from stockctl.core.model import Inventory

STOCK_UPDATED = "warehouse.stock.updated"
STOCK_ADJUSTED = "warehouse.stock.adjusted"
STOCK_TRANSFERRED = "warehouse.stock.transferred"
STOCK_RESERVED = "warehouse.stock.reserved"
STOCK_RELEASED = "warehouse.stock.released"
LOW_STOCK = "warehouse.inventory.low_stock"
OUT_OF_STOCK = "warehouse.inventory.out_of_stock"
BACK_IN_STOCK = "warehouse.inventory.back_in_stock"
ORDER_CANCELLED = "order.cancelled"
PAYMENT_FAILED = "payment.failed"

STOCK_EVENT_TYPES = (
    STOCK_UPDATED,
    STOCK_ADJUSTED,
    STOCK_TRANSFERRED,
    STOCK_RESERVED,
    STOCK_RELEASED,
    LOW_STOCK,
    OUT_OF_STOCK,
    BACK_IN_STOCK,
)


@dataclass(frozen=True, slots=True)
class CloudEvent:
    id: str
    type: str
    source: str
    subject: str
    time: datetime
    data: dict[str, Any]

    @property
    def topic(self) -> str:
        return self.type

    def to_dict(self) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json",
            "subject": self.subject,
            "data": self.data,
        }

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict()).decode()


def row_event(
    type_: str,
    row: Inventory,
    source: str,
    *,
    delta: int = 0,
    **context: Any,
) -> CloudEvent:
    """An event carrying a row's quantities after the change, and its version."""
    assert row.last_movement_at is not None
    data: dict[str, Any] = {
        "product_id": row.product_id,
        "warehouse_id": row.warehouse_id,
        "quantity_available": row.on_hand,
        "quantity_reserved": row.reserved,
        "sellable": row.sellable,
        "low_stock_threshold": row.low_stock_threshold,
        "delta": delta,
        "version": row.version,
    }
    data.update({k: v for k, v in context.items() if v is not None})
    return CloudEvent(
        id=str(uuid.uuid4()),
        type=type_,
        source=source,
        subject=row.product_id,
        time=row.last_movement_at,
        data=data,
    )


def threshold_events(before: Inventory, after: Inventory, source: str) -> list[CloudEvent]:
    """Events for sellable crossing zero or the low-stock threshold, in either direction."""
    was, now, limit = before.sellable, after.sellable, after.low_stock_threshold
    delta = now - was
    out: list[CloudEvent] = []
    if was > 0 >= now:
        out.append(row_event(OUT_OF_STOCK, after, source, delta=delta))
    elif was <= 0 < now:
        out.append(row_event(BACK_IN_STOCK, after, source, delta=delta))
    if 0 < now <= limit < was:
        out.append(row_event(LOW_STOCK, after, source, delta=delta))
    return out


def change_events(
    type_: str,
    before: Inventory,
    after: Inventory,
    source: str,
    **context: Any,
) -> list[CloudEvent]:
    """The primary event of a change followed by any threshold events it triggers.

    ``delta`` is the change of sellable units (what a catalog shows); the available and reserved
    deltas are carried beside it.
    """
    primary = row_event(
        type_,
        after,
        source,
        delta=after.sellable - before.sellable,
        delta_available=after.on_hand - before.on_hand,
        delta_reserved=after.reserved - before.reserved,
        **context,
    )
    return [primary, *threshold_events(before, after, source)]
