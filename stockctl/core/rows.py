"""The inventory row a stock write starts from: the locked row, or a blank one for a pair that
has none yet, once its product and warehouse are known to exist."""

from __future__ import annotations

from stockctl.core.model import Inventory
from stockctl.core.ports import StoreTx
from stockctl.errors import InventoryNotFound, ProductNotFound, WarehouseNotFound

DEFAULT_LOW_STOCK_THRESHOLD = 10


def row_or_new(tx: StoreTx, product_id: str, warehouse_id: str) -> tuple[Inventory, bool]:
    """The locked row, or a blank version-0 row when the pair has none yet (after checking both
    the product and the warehouse exist)."""
    found = tx.lock_inventory([(product_id, warehouse_id)]).get((product_id, warehouse_id))
    if found is not None:
        return found, False
    return blank_row(tx, product_id, warehouse_id), True


def check_pair(tx: StoreTx, product_id: str, warehouse_id: str) -> None:
    if tx.get_product(product_id) is None:
        raise ProductNotFound(f"unknown product {product_id!r}")
    if tx.get_warehouse(warehouse_id) is None:
        raise WarehouseNotFound(f"unknown warehouse {warehouse_id!r}")


def blank_row(tx: StoreTx, product_id: str, warehouse_id: str) -> Inventory:
    """A version-0 row for a pair that has none yet; its product and warehouse must exist."""
    check_pair(tx, product_id, warehouse_id)
    return Inventory(
        product_id,
        warehouse_id,
        0,
        0,
        DEFAULT_LOW_STOCK_THRESHOLD,
        0,
        None,
        id=tx.new_inventory_id(),
    )


def existing_row(tx: StoreTx, product_id: str, warehouse_id: str) -> Inventory:
    row, created = row_or_new(tx, product_id, warehouse_id)
    if created:
        raise InventoryNotFound(f"no stock of {product_id!r} in warehouse {warehouse_id!r}")
    return row
