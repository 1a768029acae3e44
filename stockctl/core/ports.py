"""Ports the core talks to. Adapters in ``stockctl.store`` (SQL) and ``stockctl.redis`` implement
them; ``tests/fakes`` has in-memory ones for the use-case tests.

Each port is narrow: what one kind of use needs (``InventoryTx``, ``ReservationReads``...).
``UseCaseStore`` is what the use cases take; ``Store`` is everything a database adapter offers.
A ``Store`` hands out units of work (``StoreTx``): everything done through one commits together
or not at all, and rolls back unless the block ends normally.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from stockctl.core.events import CloudEvent
from stockctl.core.model import Inventory, Movement, Product, Reservation, Warehouse
from stockctl.core.projection import RowState


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    key: str
    operation: str
    request_hash: str
    response: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: int
    event_id: str
    topic: str
    payload: str
    created_at: datetime
    published_at: datetime | None


@dataclass(frozen=True, slots=True)
class WarehouseTotals:
    warehouse_id: str
    name: str
    priority: int
    active: bool
    products: int
    on_hand: int
    reserved: int
    out_of_stock: int
    low_stock: int


@dataclass(frozen=True, slots=True)
class ReservedDrift:
    """A row whose reserved counter differs from the sum of its ACTIVE and CONFIRMED holds."""

    product_id: str
    warehouse_id: str
    on_hand: int
    reserved: int
    expected_reserved: int


# A reserve as the one-statement path takes it: the reservation and its candidate events
# (reserved, out of stock, low stock), quantities filled in by the store.
FastRequest = tuple[Reservation, CloudEvent, CloudEvent, CloudEvent]


# --- in a unit of work ---------------------------------------------------------------------
# Each use case needs a few of these; a store's transaction offers them all (``StoreTx``).


class CatalogTx(Protocol):
    """Products and warehouses, inside a unit of work."""

    def get_product(self, product_id: str) -> Product | None: ...

    def get_warehouse(self, warehouse_id: str) -> Warehouse | None: ...

    def add_product(self, product: Product) -> bool:
        """Insert it unless the id exists; whether it was inserted."""
        ...

    def add_warehouse(self, warehouse: Warehouse) -> bool: ...

    def product_warehouses(self, product_ids: list[str]) -> dict[str, list[Warehouse]]:
        """Active warehouses holding a row of each product, best priority first."""
        ...


class InventoryTx(Protocol):
    """Inventory rows: read under a lock, then written back one version on."""

    def lock_inventory(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Inventory]:
        """Lock rows in (product, warehouse) order; missing rows are absent."""
        ...

    def new_inventory_id(self) -> int:
        """The id a row about to be inserted gets."""
        ...

    def insert_inventory(self, row: Inventory) -> None:
        """Insert a new row; ``RetryableConflict`` if a concurrent writer inserted it first."""
        ...

    def update_inventory(self, row: Inventory) -> None:
        """Write a locked row back; its version must be the stored one plus one."""
        ...


class LedgerTx(Protocol):
    """What a change leaves behind: ledger lines and the events for the outbox."""

    def add_movements(self, movements: Sequence[Movement]) -> None: ...

    def add_events(self, events: Sequence[CloudEvent]) -> None: ...


class ReservationTx(Protocol):
    """Reservations, inside a unit of work."""

    def new_reservation_id(self) -> int:
        """A fresh reservation id (int64), unique across processes."""
        ...

    def add_reservations(self, reservations: Sequence[Reservation]) -> None: ...

    def lock_reservation(self, reservation_id: int) -> Reservation | None: ...

    def lock_order_reservations(self, order_id: str) -> list[Reservation]:
        """An order's holds that still hold stock (ACTIVE, CONFIRMED), in id order, locked."""
        ...

    def lock_overdue_for_row(
        self, product_id: str, warehouse_id: str, now: datetime
    ) -> list[Reservation]:
        """Overdue ACTIVE holds of a row, skipping any another transaction has locked."""
        ...

    def claim_due_reservations(self, now: datetime, limit: int) -> list[Reservation]:
        """Overdue ACTIVE holds, soonest first, locked; ones another transaction holds are
        skipped."""
        ...

    def update_reservation(self, r: Reservation) -> None: ...

    def held_quantity(self, product_id: str, warehouse_id: str) -> int:
        """Units a row's ACTIVE and CONFIRMED holds keep."""
        ...


class IdempotencyTx(Protocol):
    def claim_idempotency_key(
        self, key: str, operation: str, request_hash: str, now: datetime, cutoff: datetime
    ) -> IdempotencyRecord | None:
        """Claim ``key`` for this transaction; if taken (and newer than cutoff), the record.

        A concurrent claim of the same key waits for this transaction to end.
        """
        ...

    def store_idempotent_response(self, key: str, response: str) -> None: ...


class StoreTx(CatalogTx, InventoryTx, LedgerTx, ReservationTx, IdempotencyTx, Protocol):
    """One unit of work of the use cases. Reads of inventory rows through it lock them until
    commit; everything done through it commits together or not at all."""


class OutboxTx(Protocol):
    """The relay's unit of work."""

    def take_outbox(self, limit: int, at: datetime) -> list[OutboxEntry]:
        """Unpublished rows, in id order, marked published at ``at`` and locked until the
        transaction ends; rows another transaction holds are skipped."""
        ...


# --- outside a unit of work --------------------------------------------------------------
# Read-only queries; they may go to a replica.


class CatalogReads(Protocol):
    def list_products(self, limit: int, offset: int = 0) -> list[Product]: ...

    def list_warehouses(self) -> list[Warehouse]: ...

    def get_product(self, product_id: str) -> Product | None: ...

    def get_warehouse(self, warehouse_id: str) -> Warehouse | None: ...

    def has_products(self) -> bool: ...

    def all_product_ids(self) -> list[str]: ...

    def sample_product_ids(self, n: int) -> list[str]: ...


class StockReads(Protocol):
    def get_inventory(self, product_id: str, warehouse_id: str) -> Inventory | None: ...

    def product_inventory(self, product_id: str) -> list[Inventory]:
        """A product's rows in warehouse order."""
        ...

    def inventory_for_products(self, product_ids: Sequence[str]) -> dict[str, list[Inventory]]:
        """Each product's rows in warehouse order; products without rows are absent."""
        ...

    def inventory_key(self, inventory_id: int) -> tuple[str, str] | None:
        """(product, warehouse) of the inventory row with this id."""
        ...

    def history(self, product_id: str, warehouse_id: str | None, limit: int) -> list[Movement]:
        """Ledger lines, newest first."""
        ...


class ReservationReads(Protocol):
    def get_reservation(self, reservation_id: int) -> Reservation | None: ...

    def list_reservations(
        self,
        *,
        status: str | None = None,
        product_id: str | None = None,
        order_id: str | None = None,
        overdue_at: datetime | None = None,
        limit: int = 100,
    ) -> list[Reservation]:
        """Newest first (by creation, then id)."""
        ...

    def reserved_drift(self, limit: int) -> list[ReservedDrift]: ...


class FastReserves(Protocol):
    """The one-round-trip reserve where a store has one (PostgreSQL); a store without it
    answers None / False and the use case takes the general path."""

    def fast_reservation_id(self) -> int | None:
        """A reservation id outside a transaction, where ``reserve_fast`` exists; else None."""
        ...

    def reserve_fast(
        self,
        reservation: Reservation,
        actor: str,
        reserved: CloudEvent,
        out_of_stock: CloudEvent,
        low_stock: CloudEvent,
    ) -> bool:
        """Reserve in one step if the store can and the row has the stock; else do nothing."""
        ...

    def reserve_merged(
        self, requests: Sequence[FastRequest], actor: str
    ) -> list[tuple[bool, int]] | None:
        """Reserves of one row in one step, walked in order: per request (taken, sellable
        before it); None, having done nothing, where they must run one by one."""
        ...


class UseCaseStore(CatalogReads, StockReads, ReservationReads, FastReserves, Protocol):
    """What the use cases (``stockctl.core.inventory``, ``reservations``, ``lifecycle``,
    ``catalog``) need of a store: units of work and the reads around them. The in-memory
    fake in ``tests/fakes`` implements exactly this."""

    @property
    def backend(self) -> str: ...

    def transaction(self) -> AbstractContextManager[StoreTx]: ...


class ReportReads(Protocol):
    """Overviews and scans for reports, diagnostics and the cache's warm and sync jobs."""

    def inventory_overview(self, limit: int) -> list[Inventory]: ...

    def count_rows(self) -> dict[str, int]: ...

    def warehouse_totals(self) -> list[WarehouseTotals]: ...

    def low_stock(self, limit: int) -> list[Inventory]: ...

    def reservation_stats(self, now: datetime, soon: datetime) -> dict[str, int]: ...

    def outbox_for(self, product_id: str, limit: int) -> list[OutboxEntry]: ...

    def iter_inventory(self, batch: int) -> Iterator[Inventory]: ...

    def iter_row_states(self, batch: int) -> Iterator[tuple[str, RowState]]: ...

    def recently_updated(
        self, since: datetime, warehouse_id: str | None, offset: int, limit: int
    ) -> list[Inventory]: ...

    def changed_since(self, since: datetime) -> Iterator[Inventory]: ...


class OutboxAdmin(Protocol):
    def outbox_backlog(self) -> tuple[int, datetime | None]: ...

    def prune_outbox(self, published_before: datetime, limit: int = 10_000) -> int: ...


class Maintenance(Protocol):
    def bulk_load(
        self,
        product_rows: Sequence[Product],
        warehouse_rows: Sequence[Warehouse],
        inventory_rows: Iterator[Inventory],
        movements: Iterator[Movement],
    ) -> None: ...

    def purge_idempotency_keys(self, cutoff: datetime) -> int: ...

    def ping(self, replica: bool = False) -> None: ...

    def close(self) -> None: ...


class Store(UseCaseStore, ReportReads, OutboxAdmin, Maintenance, Protocol):
    """Everything a database adapter (``stockctl.store.sql.SqlStore``) offers."""
