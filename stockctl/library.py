"""The library face of stockctl: ``stockctl.connect()`` and the operations on it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from stockctl.bootstrap import App, bootstrap
from stockctl.core import consistency, inventory, lifecycle, reservations
from stockctl.core.consistency import DriftResult
from stockctl.core.model import (
    Inventory,
    Movement,
    Product,
    Reservation,
    StockSummary,
    Warehouse,
)
from stockctl.core.operations import LineLike, as_lines, enough
from stockctl.errors import ReservationNotFound
from stockctl.settings import load_settings


class Stockctl:
    """Stock operations on one database (``StockOperations``, as ``WarehouseClient`` offers
    them over HTTP). Thread-safe; close it (or use ``with``) when done."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._ctx = app.ctx

    @property
    def settings(self) -> Any:
        return self._app.settings

    @property
    def app(self) -> App:
        """The wiring this client runs on (``stockctl.bootstrap.App``: its settings, store,
        cache, streams, metrics and use-case context), for operator tooling and tests that
        need more than the stock operations; ``Stockctl(app)`` is the way back."""
        return self._app

    def init(self) -> None:
        """Create or upgrade the schema to the latest migration."""
        self._app.store.upgrade_schema()

    def add_product(self, product_id: str, name: str | None = None) -> Product:
        return inventory.add_product(self._ctx, product_id, name)

    def add_warehouse(
        self, warehouse_id: str, name: str | None = None, priority: int = 100, active: bool = True
    ) -> Warehouse:
        return inventory.add_warehouse(self._ctx, warehouse_id, name, priority, active)

    def receive(
        self,
        product_id: str,
        warehouse_id: str,
        quantity: int,
        *,
        reason: str | None = None,
        reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> Inventory:
        """Book received units; creates the (product, warehouse) row on first receipt."""
        return inventory.receive(
            self._ctx,
            product_id,
            warehouse_id,
            quantity,
            reason=reason,
            reference=reference,
            idempotency_key=idempotency_key,
        )

    def set_stock(
        self,
        product_id: str,
        warehouse_id: str,
        quantity: int,
        *,
        expect_version: int | None = None,
        low_stock_threshold: int | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> Inventory:
        """Set available to an absolute count; ``expect_version`` makes it compare-and-set."""
        return inventory.set_stock(
            self._ctx,
            product_id,
            warehouse_id,
            quantity,
            expect_version=expect_version,
            low_stock_threshold=low_stock_threshold,
            reason=reason,
            idempotency_key=idempotency_key,
        )

    def adjust(
        self,
        product_id: str,
        warehouse_id: str,
        delta: int,
        *,
        reason: str,
        reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> Inventory:
        """Correct available by a signed delta; the reason is required."""
        return inventory.adjust(
            self._ctx,
            product_id,
            warehouse_id,
            delta,
            reason=reason,
            reference=reference,
            idempotency_key=idempotency_key,
        )

    def transfer(
        self,
        product_id: str,
        from_warehouse: str,
        to_warehouse: str,
        quantity: int,
        *,
        reason: str | None = None,
        reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Inventory, Inventory]:
        """Move units between two warehouses atomically; returns (source, destination)."""
        return inventory.transfer(
            self._ctx,
            product_id,
            from_warehouse,
            to_warehouse,
            quantity,
            reason=reason,
            reference=reference,
            idempotency_key=idempotency_key,
        )

    def stock(self, product_id: str, warehouse_id: str | None = None) -> StockSummary:
        return inventory.stock(self._ctx, product_id, warehouse_id)

    def sellable(self, product_id: str, warehouse_id: str | None = None) -> int:
        """Sellable units of a product (in one warehouse, or over all)."""
        return self.stock(product_id, warehouse_id).total_sellable

    def check_stock(self, product_id: str, warehouse_id: str | None, quantity: int) -> None:
        """The guide's ``CheckStock``: returns when ``quantity`` units are sellable (in the
        warehouse, or over all with None), else raises ``InsufficientStock``."""
        enough(product_id, warehouse_id, quantity, self.sellable(product_id, warehouse_id))

    def history(
        self, product_id: str, warehouse_id: str | None = None, limit: int = 50
    ) -> list[Movement]:
        return inventory.history(self._ctx, product_id, warehouse_id, limit)

    # reservations

    def reserve(
        self,
        product_id: str,
        warehouse_id: str | None,
        quantity: int,
        *,
        ttl: timedelta | None = None,
        order_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Reservation:
        """Hold units in one warehouse (None: the allocation strategy chooses)."""
        return reservations.reserve(
            self._ctx,
            product_id,
            warehouse_id,
            quantity,
            ttl=ttl,
            order_id=order_id,
            idempotency_key=idempotency_key,
        )

    def checkout(
        self,
        lines: Sequence[LineLike],
        *,
        ttl: timedelta | None = None,
        order_id: str | None = None,
        allow_split: bool = False,
        idempotency_key: str | None = None,
    ) -> list[Reservation]:
        """Reserve every line or none; a line is a ``Line`` or (product, warehouse, qty)."""
        return reservations.checkout(
            self._ctx,
            as_lines(lines),
            ttl=ttl,
            order_id=order_id,
            allow_split=allow_split,
            idempotency_key=idempotency_key,
        )

    def confirm(self, reservation_id: int) -> Reservation:
        return lifecycle.confirm(self._ctx, reservation_id)

    def release(self, reservation_id: int, reason: str = "released") -> Reservation:
        return lifecycle.release(self._ctx, reservation_id, reason)

    def release_order(self, order_id: str, reason: str = "order_cancelled") -> list[Reservation]:
        return lifecycle.release_order(self._ctx, order_id, reason)

    def extend(self, reservation_id: int, ttl: timedelta) -> Reservation:
        return lifecycle.extend(self._ctx, reservation_id, ttl)

    def fulfil(self, reservation_id: int) -> Reservation:
        return lifecycle.fulfil(self._ctx, reservation_id)

    def expire_due(self, now: datetime | None = None, limit: int = 1000) -> int:
        return lifecycle.expire_due(self._ctx, now, limit)

    def get_reservation(self, reservation_id: int) -> Reservation:
        found = self._app.store.get_reservation(lifecycle.check_reservation_id(reservation_id))
        if found is None:
            raise ReservationNotFound(f"no reservation {reservation_id}")
        return found

    def list_reservations(
        self,
        *,
        status: str | None = None,
        product_id: str | None = None,
        order_id: str | None = None,
        expired: bool = False,
        limit: int = 100,
    ) -> list[Reservation]:
        """Reservations, newest first; ``expired``: ACTIVE holds past expiry, not yet swept."""
        return lifecycle.list_reservations(
            self._ctx,
            status=status,
            product_id=product_id,
            order_id=order_id,
            expired=expired,
            limit=limit,
        )

    def verify_reserved(self, *, repair: bool = False, limit: int = 1000) -> list[DriftResult]:
        return consistency.verify_reserved(self._ctx, repair=repair, limit=limit)

    def close(self) -> None:
        self._app.close()

    def __enter__(self) -> Stockctl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    database_url: str | None = None, *, config_file: str | Path | None = None, **settings: Any
) -> Stockctl:
    """Open stockctl on a database (default: settings, else the embedded SQLite file).

    Keyword arguments override settings (``redis_url=...``, ``reservation_ttl_seconds=...``).
    """
    loaded = load_settings(
        Path(config_file) if config_file is not None else None,
        database_url=database_url,
        **settings,
    )
    return Stockctl(bootstrap(loaded))
