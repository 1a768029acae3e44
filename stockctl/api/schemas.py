"""Request and response models of the HTTP API (field names as in the seed)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from stockctl.core.model import MAX_QUANTITY

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
Qty = Annotated[int, Field(ge=1, le=MAX_QUANTITY)]
Reason = Annotated[str, Field(min_length=1, max_length=200)]
OrderId = Annotated[str, Field(min_length=1, max_length=128)]
TtlSeconds = Annotated[int, Field(ge=1, le=30 * 86400)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InventoryRow(BaseModel):
    product_id: str
    warehouse_id: str
    quantity_available: int
    quantity_reserved: int
    sellable: int
    low_stock_threshold: int
    status: str
    version: int
    last_movement_at: datetime | None


class ProductInventory(BaseModel):
    product_id: str
    warehouses: list[InventoryRow]
    total_available: int
    total_reserved: int
    total_sellable: int


class SetStock(Strict):
    warehouse_id: Id
    quantity_available: Annotated[int, Field(ge=0, le=MAX_QUANTITY)]
    expect_version: Annotated[int, Field(ge=0)] | None = None
    low_stock_threshold: Annotated[int, Field(ge=0, le=MAX_QUANTITY)] | None = None
    reason: Reason | None = None


class Receive(Strict):
    product_id: Id
    warehouse_id: Id
    quantity: Qty
    reason: Reason | None = None
    reference: OrderId | None = None


class Adjust(Strict):
    product_id: Id
    warehouse_id: Id
    delta: Annotated[int, Field(ge=-MAX_QUANTITY, le=MAX_QUANTITY)]
    reason: Reason
    reference: OrderId | None = None


class Transfer(Strict):
    product_id: Id
    from_warehouse_id: Id
    to_warehouse_id: Id
    quantity: Qty
    reason: Reason | None = None
    reference: OrderId | None = None


class TransferResult(BaseModel):
    source: InventoryRow
    destination: InventoryRow


class Reserve(Strict):
    product_id: Id
    warehouse_id: Id | None = None
    quantity: Qty
    ttl_seconds: TtlSeconds | None = None
    order_id: OrderId | None = None


class CheckoutItem(Strict):
    product_id: Id
    warehouse_id: Id | None = None
    quantity: Qty


class Checkout(Strict):
    items: Annotated[list[CheckoutItem], Field(min_length=1, max_length=1000)]
    order_id: OrderId | None = None
    ttl_seconds: TtlSeconds | None = None
    allow_split: bool = False


class ReservationOut(BaseModel):
    id: str
    product_id: str
    warehouse_id: str
    quantity: int
    status: str
    order_id: str | None
    created_at: datetime
    expires_at: datetime
    updated_at: datetime


class Reservations(BaseModel):
    reservations: list[ReservationOut]


class Release(Strict):
    reason: Reason = "released"


class Extend(Strict):
    ttl_seconds: TtlSeconds


class ReleaseOrder(Strict):
    order_id: OrderId
    reason: Reason = "order_cancelled"


class BulkStock(Strict):
    product_ids: Annotated[list[Id], Field(min_length=1, max_length=1000)]
    warehouse_id: Id | None = None


class BulkStockOut(BaseModel):
    stocks: dict[str, int]
    missing: list[str] = []


class RecentlyUpdated(Strict):
    since: datetime
    warehouse_id: Id | None = None
    page: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    limit: Annotated[int, Field(ge=1, le=1000)] = 1000


class RecentlyUpdatedOut(BaseModel):
    items: list[InventoryRow]
    page: int
    limit: int
    has_more: bool


class ProductStockOut(BaseModel):
    product_id: str
    total: int
    available: int
    status: str
    low_stock: bool
    warehouses: dict[str, int]


class ProductsOut(BaseModel):
    products: list[ProductStockOut]
    limit: int
    offset: int


class DaprSubscription(BaseModel):
    pubsubname: str
    topic: str
    route: str


class DaprStatus(BaseModel):
    status: Literal["SUCCESS", "RETRY", "DROP"]


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``); ``type`` is stable per error
    class, ``errors`` lists the fields of a 422."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded", "down"]
    checks: dict[str, dict[str, str | float | None]] = {}
