"""The library face of stockctl: ``stockctl.connect()`` and the operations on it."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from stockctl.bootstrap import App, bootstrap
from stockctl.core import inventory
from stockctl.core.model import Inventory, Movement, Product, StockSummary, Warehouse
from stockctl.settings import load_settings
from stockctl.store import migrate


class Stockctl:
    """Stock operations on one database. Thread-safe; close it (or use ``with``) when done."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._ctx = app.ctx

    @property
    def settings(self) -> Any:
        return self._app.settings

    def init(self) -> None:
        """Create or upgrade the schema to the latest migration."""
        migrate.upgrade(self._app.store.engine)

    def add_product(self, product_id: str, name: str | None = None) -> Product:
        return inventory.add_product(self._ctx, product_id, name)

    def add_warehouse(
        self, warehouse_id: str, name: str | None = None, priority: int = 100, active: bool = True
    ) -> Warehouse:
        return inventory.add_warehouse(self._ctx, warehouse_id, name, priority, active)

    def receive(self, product_id: str, warehouse_id: str, quantity: int, **kw: Any) -> Inventory:
        return inventory.receive(self._ctx, product_id, warehouse_id, quantity, **kw)

    def set_stock(self, product_id: str, warehouse_id: str, quantity: int, **kw: Any) -> Inventory:
        return inventory.set_stock(self._ctx, product_id, warehouse_id, quantity, **kw)

    def adjust(
        self, product_id: str, warehouse_id: str, delta: int, *, reason: str, **kw: Any
    ) -> Inventory:
        return inventory.adjust(self._ctx, product_id, warehouse_id, delta, reason=reason, **kw)

    def transfer(
        self, product_id: str, from_warehouse: str, to_warehouse: str, quantity: int, **kw: Any
    ) -> tuple[Inventory, Inventory]:
        return inventory.transfer(
            self._ctx, product_id, from_warehouse, to_warehouse, quantity, **kw
        )

    def stock(self, product_id: str, warehouse_id: str | None = None) -> StockSummary:
        return inventory.stock(self._ctx, product_id, warehouse_id)

    def history(
        self, product_id: str, warehouse_id: str | None = None, limit: int = 50
    ) -> list[Movement]:
        return inventory.history(self._ctx, product_id, warehouse_id, limit)

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
