"""Catalog routes: bulk stock and products with stock, served from the cache."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from stockctl.core import cache
from stockctl.core.model import StockStatus
from stockctl.core.projection import StockLevel
from stockctl.daemons.api import schemas
from stockctl.daemons.api.deps import AppDep, require
from stockctl.daemons.api.strict import StrictJSONRoute
from stockctl.errors import ProductNotFound

router = APIRouter(tags=["catalog"], route_class=StrictJSONRoute)
READ = [Depends(require("read"))]


def _out(s: StockLevel) -> schemas.ProductStockOut:
    return schemas.ProductStockOut(
        product_id=s.product_id,
        total=s.on_hand,
        available=s.sellable,
        status=s.status.value,
        low_stock=s.low_stock,
        warehouses=dict(sorted(s.warehouses.items())),
    )


@router.post("/batch/stock", dependencies=READ)
def bulk_stock(app: AppDep, body: schemas.BulkStock) -> schemas.BulkStockOut:
    """Sellable units of up to 1000 products (in one warehouse, or summed over all)."""
    stocks, missing = cache.bulk_sellable(
        app.store, app.read_cache(), body.product_ids, body.warehouse_id, app.read_counters
    )
    return schemas.BulkStockOut(stocks=stocks, missing=missing)


@router.get("/products/{product_id}", dependencies=READ)
def product(app: AppDep, product_id: str) -> schemas.ProductStockOut:
    """A product's stock as the catalog shows it."""
    reads = app.read_cache()
    found = cache.get_stock(app.store, reads, [product_id], app.read_counters)[product_id]
    if found is None:
        raise ProductNotFound(f"unknown product {product_id!r}")
    return _out(found)


@router.get("/products", dependencies=READ)
def products(
    app: AppDep,
    limit: Annotated[int, Query(ge=1, le=1000), schemas.query_whole("limit", 1, 1000)] = 100,
    offset: Annotated[
        int, Query(ge=0, le=10_000_000), schemas.query_whole("offset", 0, 10_000_000)
    ] = 0,
) -> schemas.ProductsOut:
    """Products by id with their stock."""
    ids = [p.id for p in app.store.list_products(limit, offset)]
    found = cache.get_stock(app.store, app.read_cache(), ids, app.read_counters) if ids else {}
    return schemas.ProductsOut(
        products=[
            _out(s) if s else _out(StockLevel(p, 0, 0, StockStatus.OUT_OF_STOCK, {}))
            for p, s in found.items()
        ],
        limit=limit,
        offset=offset,
    )
