"""An in-memory ``UseCaseStore``: what the use cases need of a store, in dicts.

A unit of work holds one lock for its whole length (transactions run one at a time, as on
SQLite) and works on a copy of the state that replaces the shared one only when the block
ends normally: an exception anywhere rolls everything back. It has no one-round-trip reserve
(``fast_reservation_id`` is None), so the use cases take their general path on it.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from stockctl.core.events import CloudEvent
from stockctl.core.model import (
    Inventory,
    Movement,
    Product,
    Reservation,
    ReservationStatus,
    Warehouse,
)
from stockctl.core.ports import (
    FastRequest,
    IdempotencyRecord,
    OutboxEntry,
    ReservedDrift,
    StoreTx,
    UseCaseStore,
)
from stockctl.errors import RetryableConflict

Key = tuple[str, str]


@dataclass
class State:
    products: dict[str, Product] = field(default_factory=dict)
    warehouses: dict[str, Warehouse] = field(default_factory=dict)
    inventory: dict[Key, Inventory] = field(default_factory=dict)
    movements: list[Movement] = field(default_factory=list)
    outbox: list[OutboxEntry] = field(default_factory=list)
    reservations: dict[int, Reservation] = field(default_factory=dict)
    idempotency: dict[str, IdempotencyRecord] = field(default_factory=dict)
    last_inventory_id: int = 0
    last_reservation_id: int = 0

    def copy(self) -> State:
        """A working copy: new containers over the same immutable values."""
        return State(
            dict(self.products),
            dict(self.warehouses),
            dict(self.inventory),
            list(self.movements),
            list(self.outbox),
            dict(self.reservations),
            dict(self.idempotency),
            self.last_inventory_id,
            self.last_reservation_id,
        )


class FakeTx:
    """One unit of work over a private copy of the state."""

    def __init__(self, state: State) -> None:
        self.s = state

    # catalog
    def get_product(self, product_id: str) -> Product | None:
        return self.s.products.get(product_id)

    def get_warehouse(self, warehouse_id: str) -> Warehouse | None:
        return self.s.warehouses.get(warehouse_id)

    def add_product(self, product: Product) -> bool:
        if product.id in self.s.products:
            return False
        self.s.products[product.id] = product
        return True

    def add_warehouse(self, warehouse: Warehouse) -> bool:
        if warehouse.id in self.s.warehouses:
            return False
        self.s.warehouses[warehouse.id] = warehouse
        return True

    def product_warehouses(self, product_ids: list[str]) -> dict[str, list[Warehouse]]:
        out: dict[str, list[Warehouse]] = {}
        for p, w in sorted(self.s.inventory):
            wh = self.s.warehouses[w]
            if p in product_ids and wh.active:
                out.setdefault(p, []).append(wh)
        return {p: sorted(ws, key=lambda wh: (wh.priority, wh.id)) for p, ws in out.items()}

    # inventory
    def lock_inventory(self, keys: Sequence[Key]) -> dict[Key, Inventory]:
        return {k: self.s.inventory[k] for k in sorted(set(keys)) if k in self.s.inventory}

    def new_inventory_id(self) -> int:
        self.s.last_inventory_id += 1
        return self.s.last_inventory_id

    def insert_inventory(self, row: Inventory) -> None:
        if row.id is None:
            raise ValueError("a new inventory row needs its id (new_inventory_id)")
        key = (row.product_id, row.warehouse_id)
        if key in self.s.inventory:
            raise RetryableConflict(
                f"inventory {row.product_id}@{row.warehouse_id} was created concurrently"
            )
        self.s.inventory[key] = row

    def update_inventory(self, row: Inventory) -> None:
        key = (row.product_id, row.warehouse_id)
        stored = self.s.inventory.get(key)
        if stored is None or stored.version != row.version - 1:
            raise RuntimeError(f"inventory {row.product_id}@{row.warehouse_id} changed under lock")
        self.s.inventory[key] = replace(row, id=stored.id)

    # ledger and outbox
    def add_movements(self, movements: Sequence[Movement]) -> None:
        for m in movements:
            self.s.movements.append(replace(m, id=len(self.s.movements) + 1))

    def add_events(self, events: Sequence[CloudEvent]) -> None:
        for e in events:
            entry = OutboxEntry(len(self.s.outbox) + 1, e.id, e.topic, e.to_json(), e.time, None)
            self.s.outbox.append(entry)

    # reservations
    def new_reservation_id(self) -> int:
        self.s.last_reservation_id += 1
        return self.s.last_reservation_id

    def add_reservations(self, reservations: Sequence[Reservation]) -> None:
        for r in reservations:
            if r.id in self.s.reservations:
                raise RuntimeError(f"reservation {r.id} exists")
            self.s.reservations[r.id] = r

    def lock_reservation(self, reservation_id: int) -> Reservation | None:
        return self.s.reservations.get(reservation_id)

    def lock_order_reservations(self, order_id: str) -> list[Reservation]:
        found = self.s.reservations.values()
        return sorted(
            (r for r in found if r.order_id == order_id and r.status.holds_stock),
            key=lambda r: r.id,
        )

    def lock_overdue_for_row(
        self, product_id: str, warehouse_id: str, now: datetime
    ) -> list[Reservation]:
        return sorted(
            (
                r
                for r in self.s.reservations.values()
                if (r.product_id, r.warehouse_id) == (product_id, warehouse_id)
                and r.status is ReservationStatus.ACTIVE
                and r.expires_at <= now
            ),
            key=lambda r: r.id,
        )

    def claim_due_reservations(self, now: datetime, limit: int) -> list[Reservation]:
        due = (
            r
            for r in self.s.reservations.values()
            if r.status is ReservationStatus.ACTIVE and r.expires_at <= now
        )
        return sorted(due, key=lambda r: (r.expires_at, r.id))[:limit]

    def update_reservation(self, r: Reservation) -> None:
        stored = self.s.reservations[r.id]
        self.s.reservations[r.id] = replace(
            stored, status=r.status, expires_at=r.expires_at, updated_at=r.updated_at
        )

    def held_quantity(self, product_id: str, warehouse_id: str) -> int:
        return _held(self.s).get((product_id, warehouse_id), 0)

    # idempotency
    def claim_idempotency_key(
        self, key: str, operation: str, request_hash: str, now: datetime, cutoff: datetime
    ) -> IdempotencyRecord | None:
        earlier = self.s.idempotency.get(key)
        if earlier is not None and earlier.created_at >= cutoff:
            return earlier
        self.s.idempotency[key] = IdempotencyRecord(key, operation, request_hash, None, now)
        return None

    def store_idempotent_response(self, key: str, response: str) -> None:
        self.s.idempotency[key] = replace(self.s.idempotency[key], response=response)


def _held(s: State) -> dict[Key, int]:
    held: dict[Key, int] = {}
    for r in s.reservations.values():
        if r.status.holds_stock:
            key = (r.product_id, r.warehouse_id)
            held[key] = held.get(key, 0) + r.quantity
    return held


class FakeStore:
    """``stockctl.core.ports.UseCaseStore`` in memory (plus the outbox reads tests look at)."""

    backend = "memory"

    def __init__(self) -> None:
        self._state = State()
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[FakeTx]:
        with self._lock:
            work = self._state.copy()
            yield FakeTx(work)
            self._state = work  # reached only when the block ended normally

    @property
    def _s(self) -> State:
        return self._state

    # catalog reads
    def list_products(self, limit: int, offset: int = 0) -> list[Product]:
        return [self._s.products[k] for k in sorted(self._s.products)][offset : offset + limit]

    def list_warehouses(self) -> list[Warehouse]:
        return sorted(self._s.warehouses.values(), key=lambda w: (w.priority, w.id))

    def get_product(self, product_id: str) -> Product | None:
        return self._s.products.get(product_id)

    def get_warehouse(self, warehouse_id: str) -> Warehouse | None:
        return self._s.warehouses.get(warehouse_id)

    def has_products(self) -> bool:
        return bool(self._s.products)

    def all_product_ids(self) -> list[str]:
        return sorted(self._s.products)

    def sample_product_ids(self, n: int) -> list[str]:
        ids = list(self._s.products)
        return random.sample(ids, min(n, len(ids)))

    # stock reads
    def get_inventory(self, product_id: str, warehouse_id: str) -> Inventory | None:
        return self._s.inventory.get((product_id, warehouse_id))

    def product_inventory(self, product_id: str) -> list[Inventory]:
        return [row for (p, _), row in sorted(self._s.inventory.items()) if p == product_id]

    def inventory_for_products(self, product_ids: Sequence[str]) -> dict[str, list[Inventory]]:
        out: dict[str, list[Inventory]] = {}
        wanted = set(product_ids)
        for (p, _), row in sorted(self._s.inventory.items()):
            if p in wanted:
                out.setdefault(p, []).append(row)
        return out

    def inventory_key(self, inventory_id: int) -> Key | None:
        for key, row in self._s.inventory.items():
            if row.id == inventory_id:
                return key
        return None

    def history(self, product_id: str, warehouse_id: str | None, limit: int) -> list[Movement]:
        lines = [
            m
            for m in reversed(self._s.movements)
            if m.product_id == product_id and warehouse_id in (None, m.warehouse_id)
        ]
        return lines[:limit]

    # reservation reads
    def get_reservation(self, reservation_id: int) -> Reservation | None:
        return self._s.reservations.get(reservation_id)

    def list_reservations(
        self,
        *,
        status: str | None = None,
        product_id: str | None = None,
        order_id: str | None = None,
        overdue_at: datetime | None = None,
        limit: int = 100,
    ) -> list[Reservation]:
        def wanted(r: Reservation) -> bool:
            return (
                status in (None, r.status.value)
                and product_id in (None, r.product_id)
                and order_id in (None, r.order_id)
                and (
                    overdue_at is None
                    or (r.status is ReservationStatus.ACTIVE and r.expires_at <= overdue_at)
                )
            )

        found = sorted(self._s.reservations.values(), key=lambda r: r.id)
        found.sort(key=lambda r: r.created_at, reverse=True)  # stable: id order within a time
        return [r for r in found if wanted(r)][:limit]

    def reserved_drift(self, limit: int) -> list[ReservedDrift]:
        held = _held(self._s)
        drift = [
            ReservedDrift(p, w, row.on_hand, row.reserved, held.get((p, w), 0))
            for (p, w), row in sorted(self._s.inventory.items())
            if row.reserved != held.get((p, w), 0)
        ]
        return drift[:limit]

    # no one-round-trip reserve here: the use cases take their general path
    def fast_reservation_id(self) -> int | None:
        return None

    def reserve_fast(
        self,
        reservation: Reservation,
        actor: str,
        reserved: CloudEvent,
        out_of_stock: CloudEvent,
        low_stock: CloudEvent,
    ) -> bool:
        return False

    def reserve_merged(
        self, requests: Sequence[FastRequest], actor: str
    ) -> list[tuple[bool, int]] | None:
        return None

    # what tests look at (``ReportReads.outbox_for`` / ``OutboxAdmin.outbox_backlog``)
    def outbox_for(self, product_id: str, limit: int) -> list[OutboxEntry]:
        return [e for e in reversed(self._s.outbox) if _subject(e) == product_id][:limit]

    def outbox_backlog(self) -> tuple[int, datetime | None]:
        waiting = [e for e in self._s.outbox if e.published_at is None]
        return len(waiting), min((e.created_at for e in waiting), default=None)


def _subject(entry: OutboxEntry) -> str | None:
    subject = json.loads(entry.payload).get("subject")
    return subject if isinstance(subject, str) else None


if TYPE_CHECKING:  # mypy (``make lint``) checks that the fake implements the whole port
    _: UseCaseStore = FakeStore()
    _tx: StoreTx = FakeTx(State())
