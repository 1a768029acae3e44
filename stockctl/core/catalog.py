"""The catalog side of events: project stock events into the cache, release cancelled orders.

Framework-free: the Redis worker, the embedded pipeline and the Dapr push route all hand their
parsed events to ``project``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stockctl.core import events as ev
from stockctl.core.cache_ports import ApplyResult, StockCache
from stockctl.core.context import Context
from stockctl.core.envelope import Incoming, InvalidEvent
from stockctl.core.events import CloudEvent
from stockctl.core.ports import Store
from stockctl.core.projection import RowState, StockUpdate, update_from_event
from stockctl.core.values import MAX_ORDER_ID, check_order_id
from stockctl.errors import InvalidInput

ORDER_TOPICS = (ev.ORDER_CANCELLED, ev.PAYMENT_FAILED)
_TOPIC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")
TOPICS = (*ev.STOCK_EVENT_TYPES, *ORDER_TOPICS)


@dataclass
class Outcome:
    """What happened to a batch; ``invalid`` holds (index, reason) of events never processable."""

    applied: int = 0
    duplicates: int = 0
    stale: int = 0
    filled: int = 0
    released: int = 0
    unknown: int = 0
    invalid: list[tuple[int, str]] = field(default_factory=list)


def order_id_of(event: Incoming) -> str:
    """The order id, validated as the release will validate it: an id the release refuses
    would fail its whole batch on every delivery instead of reaching the dead-letter stream."""
    data = event.data
    order = data.get("order_id") if isinstance(data, dict) else None
    if not isinstance(order, str) or not order.strip() or len(order) > MAX_ORDER_ID:
        raise InvalidEvent(f"{event.type} without a valid data.order_id")
    try:
        check_order_id(order)
    except InvalidInput:
        raise InvalidEvent(f"{event.type} with a malformed data.order_id") from None
    return order


def classify(
    events: Sequence[Incoming],
) -> tuple[list[StockUpdate], list[tuple[int, Incoming]], Outcome]:
    """Split a batch into stock updates and order events; count unknown and invalid ones."""
    out = Outcome()
    updates: list[StockUpdate] = []
    orders: list[tuple[int, Incoming]] = []
    for i, event in enumerate(events):
        try:
            update = update_from_event(event)
            if update is not None:
                updates.append(update)
            elif event.type in ORDER_TOPICS:
                order_id_of(event)
                orders.append((i, event))
            else:
                out.unknown += 1
        except InvalidEvent as exc:
            out.invalid.append((i, str(exc)))
    return updates, orders, out


def fill_incomplete(store: Store, cache: StockCache, result: ApplyResult) -> int:
    """Load products the cache could not complete from the database, and write them whole."""
    if not result.incomplete:
        return 0
    rows = store.inventory_for_products(result.incomplete)
    cache.fill({p: [RowState.of(r) for r in rs] for p, rs in rows.items()})
    return len(rows)


def project(
    store: Store,
    cache: StockCache,
    events: Sequence[Incoming],
    release_order: Callable[[str, str], object],
) -> Outcome:
    """Apply one batch: one cache round trip for the stock events, then order releases."""
    updates, orders, out = classify(events)
    result = cache.apply(updates)
    out.applied, out.duplicates, out.stale = result.applied, result.duplicates, result.stale
    out.filled = fill_incomplete(store, cache, result)
    if orders:
        # Release first, mark after: a release that fails is retried, not lost behind a marker.
        # Two consumers racing on one event both release; releasing twice is a no-op.
        seen = cache.processed([e.id for _, e in orders])
        todo = [e for (_, e), done in zip(orders, seen, strict=True) if not done]
        out.duplicates += len(orders) - len(todo)
        for event in todo:
            release_order(order_id_of(event), event.type.replace(".", "_"))
            out.released += 1
        cache.claim_events([e.id for e in todo])
    return out


def publish(
    ctx: Context, event_type: str, data: dict[str, Any], subject: str | None = None
) -> CloudEvent:
    """Write an arbitrary event to the outbox (runbooks, tests); the relay delivers it."""
    if not _TOPIC.match(event_type):
        raise InvalidInput(f"malformed event type {event_type!r}: letters, digits, '.', '_', '-'")
    if not isinstance(data, dict):
        raise InvalidInput("event data must be a JSON object")
    event = CloudEvent(
        id=str(uuid.uuid4()),
        type=event_type,
        source=ctx.source,
        subject=subject or str(data.get("product_id") or data.get("order_id") or event_type),
        time=ctx.clock(),
        data=data,
    )
    if len(event.to_json()) > 64 * 1024:
        raise InvalidInput("event larger than 64 KiB")
    with ctx.store.transaction() as tx:
        tx.add_events([event])
    return event
