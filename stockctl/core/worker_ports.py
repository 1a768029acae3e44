"""Ports of the worker jobs (``stockctl.daemons.workers``): what the outbox relay, the event
processor and the embedded pipeline need of the adapters. ``stockctl.bootstrap.App`` builds
the adapters (``stockctl.store``, ``stockctl.redis``); the jobs see only these types.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from stockctl.core.cache_ports import ApplyResult
from stockctl.core.model import Inventory
from stockctl.core.ports import OutboxEntry, StoreTx
from stockctl.core.projection import RowState, StockUpdate


# Not frozen: the processor builds one per event, and a frozen dataclass costs five times as
# much to build (0.8 against 0.16 us for five fields). Treat it as a value: never assign to it.
@dataclass(slots=True)
class Delivery:
    """One entry read from an event stream: its stream (the topic), id and fields."""

    stream: str
    entry_id: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> str | None:
        return self.fields.get("data")


class EventConsumer(Protocol):
    """One consumer of the app's consumer group on the event streams (at-least-once)."""

    def read(self, count: int, block_ms: int | None) -> list[Delivery]:
        """New entries, waiting up to ``block_ms`` for some."""
        ...

    def read_pending(self, count: int) -> list[Delivery]:
        """This consumer's own entries read but not acknowledged."""
        ...

    def claim_idle(self, min_idle_ms: int, count: int) -> list[Delivery]:
        """Entries another consumer left pending for ``min_idle_ms`` or longer."""
        ...

    def ack(self, deliveries: Sequence[Delivery], *, with_next_read: bool = False) -> None: ...

    def flush_acks(self) -> None: ...

    def delivery_count(self, d: Delivery) -> int: ...

    def dead_letter(self, d: Delivery, reason: str) -> None: ...

    def close(self) -> None: ...


class OutboxWaiter(Protocol):
    """Waits until a commit wrote events (PostgreSQL's NOTIFY), or the timeout passes."""

    @property
    def listens(self) -> bool:
        """True: every commit wakes the waiter, so a claim short of a batch took all there was."""
        ...

    def wait(self, timeout: float, stop: threading.Event) -> None: ...

    def close(self) -> None: ...


class OutboxClaims(Protocol):
    """The outbox statements of a unit of work."""

    def take_outbox(self, limit: int, at: datetime) -> list[OutboxEntry]:
        """Claim up to ``limit`` unpublished rows and mark them published at ``at``; they stay
        locked (and the marks roll back) until the transaction ends."""
        ...

    def unpublish_outbox_since(self, since: datetime) -> int:
        """Mark the rows published at or after ``since`` unpublished again; how many."""
        ...


class OutboxStore(Protocol):
    """What the outbox relay needs of the store."""

    def transaction(self) -> AbstractContextManager[OutboxClaims]: ...

    def prune_outbox(self, published_before: datetime, limit: int = 10_000) -> int: ...

    def outbox_waiter(self) -> OutboxWaiter: ...


class PipelineTx(StoreTx, OutboxClaims, Protocol):
    """A unit of work of the embedded pipeline: claims outbox rows and projects them (and
    releases cancelled orders) in the same transaction. ``conn`` is its connection, which the
    in-transaction cache writes on."""

    conn: Any


class PipelineStore(Protocol):
    def transaction(self) -> AbstractContextManager[PipelineTx]: ...

    def inventory_for_products(self, product_ids: Sequence[str]) -> dict[str, list[Inventory]]: ...


class InTransactionCache(Protocol):
    """The embedded cache (database tables), written in the caller's transaction."""

    def apply_in(self, conn: Any, updates: Sequence[StockUpdate]) -> ApplyResult: ...

    def fill_in(self, conn: Any, products: Mapping[str, Sequence[RowState]]) -> None: ...

    def claim_events_in(self, conn: Any, event_ids: Sequence[str]) -> list[bool]: ...
