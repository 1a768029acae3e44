"""Request and response models of the HTTP API (field names as in the guide)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from stockctl.core import values as v
from stockctl.errors import InvalidInput


def core(check: Callable[[Any], Any]) -> PlainValidator:
    """A field checked by the core's own definition of its kind (``stockctl.core.values``):
    the HTTP API refuses exactly what the library refuses, with the same message."""

    def run(value: Any) -> Any:
        try:
            return check(value)
        except InvalidInput as exc:
            raise PydanticCustomError(
                "invalid_input", "{message}", {"message": exc.message}
            ) from None

    return PlainValidator(run)


def number(low: int, high: int) -> WithJsonSchema:
    return WithJsonSchema({"type": "integer", "minimum": low, "maximum": high})


def whole(what: str, low: int, high: int) -> PlainValidator:
    """A JSON integer from ``low`` to ``high``: no string, boolean or float."""
    return core(partial(v.check_whole, what=what, low=low, high=high))


def text(what: str, max_length: int, *, strip: bool = True, required: bool = True) -> Any:
    """One line of text without control, invisible or bidirectional characters. Optional text
    that is empty (or only spaces) is absent, as in the library."""
    return core(
        partial(v.check_text, what=what, max_length=max_length, required=required, strip=strip)
    )


def query_whole(what: str, low: int, high: int) -> BeforeValidator:
    """A whole number in a query string, by the CLI's rule (``parse_whole``: ``5``, never
    `` 5``, ``+5``, ``5.0`` or ``1_000``) and bounds, refused as the library refuses it."""

    def read(value: Any) -> int:
        number = v.parse_whole(value, what) if isinstance(value, str) else value
        return v.check_whole(number, what, low, high)

    return BeforeValidator(read)


def string(max_length: int, pattern: str) -> WithJsonSchema:
    return WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": pattern}
    )


def optional_string(max_length: int) -> WithJsonSchema:
    text = {"type": "string", "maxLength": max_length, "pattern": v.TEXT_PATTERN}
    return WithJsonSchema({"anyOf": [text, {"type": "null"}]})


MAX = v.MAX_QUANTITY
ProductId = Annotated[str, core(partial(v.check_id, what="product")), string(64, v.ID_PATTERN)]
WarehouseId = Annotated[str, core(partial(v.check_id, what="warehouse")), string(64, v.ID_PATTERN)]
Qty = Annotated[int, core(v.check_quantity), number(1, MAX)]
Count = Annotated[int, whole("quantity_available", 0, MAX), number(0, MAX)]
Version = Annotated[int, whole("expect_version", 0, MAX), number(0, MAX)]
Threshold = Annotated[int, whole("low_stock_threshold", 0, MAX), number(0, MAX)]
Delta = Annotated[
    int,
    core(v.check_delta),
    WithJsonSchema({"type": "integer", "minimum": -MAX, "maximum": MAX, "not": {"const": 0}}),
]
TtlSeconds = Annotated[int, core(v.check_ttl_seconds), number(1, v.MAX_TTL_SECONDS)]
Page = Annotated[int, whole("page", 1, 1_000_000), number(1, 1_000_000)]
Limit = Annotated[int, whole("limit", 1, 1000), number(1, 1000)]
Reason = Annotated[str, text("reason", v.MAX_REASON), string(v.MAX_REASON, v.TEXT_PATTERN)]
OptionalReason = Annotated[
    str | None, text("reason", v.MAX_REASON, required=False), optional_string(v.MAX_REASON)
]
OptionalReference = Annotated[
    str | None,
    text("reference", v.MAX_REFERENCE, strip=False, required=False),
    optional_string(v.MAX_REFERENCE),
]
OrderId = Annotated[
    str, text("order id", v.MAX_ORDER_ID, strip=False), string(v.MAX_ORDER_ID, v.TEXT_PATTERN)
]
Timestamp = Annotated[
    datetime,
    core(v.check_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class Strict(BaseModel):
    """A request body: unknown fields refused, every field checked by the core's rules
    (duplicate keys are refused before, when the JSON is read: ``stockctl.daemons.api.strict``)."""

    model_config = ConfigDict(extra="forbid")


class InventoryRow(BaseModel):
    id: int | None  # the row's stable integer id (PUT /inventory/{id})
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
    warehouse_id: WarehouseId
    quantity_available: Count
    expect_version: Version | None = None
    low_stock_threshold: Threshold | None = None
    reason: OptionalReason = None


class SetRow(Strict):
    """``PUT /inventory/{id}``: the row is the path's."""

    quantity_available: Count
    expect_version: Version | None = None
    low_stock_threshold: Threshold | None = None
    reason: Reason | None = None


class Receive(Strict):
    product_id: ProductId
    warehouse_id: WarehouseId
    quantity: Qty
    reason: OptionalReason = None
    reference: OptionalReference = None


class Adjust(Strict):
    product_id: ProductId
    warehouse_id: WarehouseId
    delta: Delta
    reason: Reason
    reference: OptionalReference = None


class Transfer(Strict):
    product_id: ProductId
    from_warehouse_id: WarehouseId
    to_warehouse_id: WarehouseId
    quantity: Qty
    reason: OptionalReason = None
    reference: OptionalReference = None


class TransferResult(BaseModel):
    source: InventoryRow
    destination: InventoryRow


class Reserve(Strict):
    product_id: ProductId
    warehouse_id: WarehouseId | None = None
    quantity: Qty
    ttl_seconds: TtlSeconds | None = None
    order_id: OrderId | None = None


class CheckoutItem(Strict):
    product_id: ProductId
    warehouse_id: WarehouseId | None = None
    quantity: Qty


class Checkout(Strict):
    items: Annotated[list[CheckoutItem], Field(min_length=1, max_length=1000)]
    order_id: OrderId | None = None
    ttl_seconds: TtlSeconds | None = None
    allow_split: StrictBool = False


class ReservationOut(BaseModel):
    id: int
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


class Reserved(BaseModel):
    """The guide's reserve answer: the hold under ``reservation``."""

    reservation: ReservationOut


class Release(Strict):
    reason: OptionalReason = "released"


class Extend(Strict):
    ttl_seconds: TtlSeconds


class ReleaseOrder(Strict):
    order_id: OrderId
    reason: OptionalReason = "order_cancelled"


class BulkStock(Strict):
    product_ids: Annotated[list[ProductId], Field(min_length=1, max_length=1000)]
    warehouse_id: WarehouseId | None = None


class BulkStockOut(BaseModel):
    stocks: dict[str, int]
    missing: list[str] = []


class RecentlyUpdated(Strict):
    since: Timestamp
    warehouse_id: WarehouseId | None = None
    page: Page = 1
    limit: Limit = 1000


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


class MovementOut(BaseModel):
    id: int | None
    created_at: datetime
    product_id: str
    warehouse_id: str
    kind: str
    delta_available: int
    delta_reserved: int
    quantity_available: int
    quantity_reserved: int
    version: int
    reason: str | None
    reference: str | None
    reservation_id: int | None
    actor: str | None


class Movements(BaseModel):
    movements: list[MovementOut]
