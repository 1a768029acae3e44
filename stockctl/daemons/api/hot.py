"""The stock check on the event loop: ``GET /inventory?product_id=&warehouse_id=`` reads its
row with the store's async fast reads (PostgreSQL: ``psycopg.AsyncConnection``), so the hottest
route costs no thread-pool hop at all. Anything else the check may have to do (a row that is not
there: which of product, warehouse or row is unknown; SQLite) is the core's ``inventory.stock``,
run in the API's worker threads, so answers and errors are the core's own."""

from __future__ import annotations

from stockctl.bootstrap import App
from stockctl.core import inventory
from stockctl.core.model import Inventory
from stockctl.core.values import check_id
from stockctl.daemons.api.fastpath import in_worker


async def stock_row(app: App, product_id: str, warehouse_id: str) -> Inventory:
    store = app.ctx.store
    if getattr(store, "reads_async", False):
        check_id(product_id, "product")  # as inventory.stock checks them, first
        check_id(warehouse_id, "warehouse")
        row: Inventory | None = await store.get_inventory_async(product_id, warehouse_id)  # type: ignore[attr-defined]
        if row is not None:
            return row
    summary = await in_worker(inventory.stock, app.ctx, product_id, warehouse_id)
    found: Inventory = summary.rows[0]
    return found
