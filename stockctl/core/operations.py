"""The operations contract: one set of stock operations, one signature each.

``stockctl.connect()`` (the library, on a database) and ``stockctl.WarehouseClient`` (over the
HTTP API) implement ``StockOperations``; ``stockctl.AsyncWarehouseClient`` implements
``AsyncStockOperations``, its awaitable twin. The CLI talks to whichever of the first two
``--api-url`` selects, so a command means the same thing in both places. Parameters come in
one order everywhere: product, warehouse, quantity (as in ``Line`` and checkout tuples), then
keyword-only options.

``check_stock`` is the guide's ``CheckStock(product, warehouse, quantity)``: it returns when
enough is sellable and raises ``InsufficientStock`` otherwise; ``sellable`` returns the number.
The guide's other names stay as aliases on the clients: ``reserve_stock``,
``confirm_reservation`` and ``release_reservation``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol, runtime_checkable

from stockctl.core.lines import Line
from stockctl.core.model import Inventory, Movement, Reservation, StockSummary
from stockctl.core.values import check_quantity
from stockctl.errors import InsufficientStock, InvalidInput

# A checkout line: a ``Line`` or the tuple (product, warehouse or None, quantity).
LineLike = Line | tuple[str, str | None, int]

# The operations every implementation offers, by name (the conformance suite walks them).
OPERATIONS = (
    "stock",
    "sellable",
    "check_stock",
    "history",
    "receive",
    "set_stock",
    "adjust",
    "transfer",
    "reserve",
    "checkout",
    "confirm",
    "release",
    "release_order",
    "extend",
    "fulfil",
    "get_reservation",
    "list_reservations",
)


def enough(product_id: str, warehouse_id: str | None, quantity: int, sellable: int) -> None:
    """``check_stock``'s rule: ``InsufficientStock`` unless ``quantity`` units are sellable."""
    check_quantity(quantity)
    if sellable < quantity:
        where = f" in {warehouse_id}" if warehouse_id else ""
        raise InsufficientStock(
            f"insufficient stock of {product_id}{where}: asked {quantity}, sellable {sellable}",
            product_id=product_id,
            warehouse_id=warehouse_id,
            asked=quantity,
            sellable=sellable,
        )


def as_lines(lines: Sequence[LineLike]) -> list[Line]:
    """Checkout lines from ``Line``s or (product, warehouse, quantity) tuples; anything else
    is ``InvalidInput``."""
    if isinstance(lines, str | bytes) or not isinstance(lines, Sequence):
        raise InvalidInput("lines must be a list of Line or (product, warehouse, quantity)")
    out = []
    for x in lines:
        if isinstance(x, Line):
            out.append(x)
        elif isinstance(x, tuple | list) and len(x) == 3:
            out.append(Line(x[0], x[1], x[2]))
        else:
            raise InvalidInput(
                f"malformed checkout line {str(x)[:60]!r}: use Line(product, warehouse, quantity) "
                "or the tuple (product, warehouse or None, quantity)"
            )
    return out


@runtime_checkable
class StockOperations(Protocol):
    """Stock and reservations of one stockctl, wherever it runs."""

    def stock(self, product_id: str, warehouse_id: str | None = None) -> StockSummary: ...

    def sellable(self, product_id: str, warehouse_id: str | None = None) -> int: ...

    def check_stock(self, product_id: str, warehouse_id: str | None, quantity: int) -> None: ...

    def history(
        self, product_id: str, warehouse_id: str | None = None, limit: int = 50
    ) -> list[Movement]: ...

    def receive(
        self,
        product_id: str,
        warehouse_id: str,
        quantity: int,
        *,
        reason: str | None = None,
        reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> Inventory: ...

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
    ) -> Inventory: ...

    def adjust(
        self,
        product_id: str,
        warehouse_id: str,
        delta: int,
        *,
        reason: str,
        reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> Inventory: ...

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
    ) -> tuple[Inventory, Inventory]: ...

    def reserve(
        self,
        product_id: str,
        warehouse_id: str | None,
        quantity: int,
        *,
        ttl: timedelta | None = None,
        order_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Reservation: ...

    def checkout(
        self,
        lines: Sequence[LineLike],
        *,
        ttl: timedelta | None = None,
        order_id: str | None = None,
        allow_split: bool = False,
        idempotency_key: str | None = None,
    ) -> list[Reservation]: ...

    def confirm(self, reservation_id: int) -> Reservation: ...

    def release(self, reservation_id: int, reason: str = "released") -> Reservation: ...

    def release_order(
        self, order_id: str, reason: str = "order_cancelled"
    ) -> list[Reservation]: ...

    def extend(self, reservation_id: int, ttl: timedelta) -> Reservation: ...

    def fulfil(self, reservation_id: int) -> Reservation: ...

    def get_reservation(self, reservation_id: int) -> Reservation: ...

    def list_reservations(
        self,
        *,
        status: str | None = None,
        product_id: str | None = None,
        order_id: str | None = None,
        expired: bool = False,
        limit: int = 100,
    ) -> list[Reservation]: ...

    def close(self) -> None: ...


class AsyncStockOperations(Protocol):
    """``StockOperations`` as coroutines: the same names, parameters and order."""

    async def stock(self, product_id: str, warehouse_id: str | None = None) -> StockSummary: ...

    async def sellable(self, product_id: str, warehouse_id: str | None = None) -> int: ...

    async def check_stock(
        self, product_id: str, warehouse_id: str | None, quantity: int
    ) -> None: ...

    async def history(
        self, product_id: str, warehouse_id: str | None = None, limit: int = 50
    ) -> list[Movement]: ...

    async def receive(
        self,
        product_id: str,
        warehouse_id: str,
        quantity: int,
        *,
        reason: str | None = None,
        reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> Inventory: ...

    async def set_stock(
        self,
        product_id: str,
        warehouse_id: str,
        quantity: int,
        *,
        expect_version: int | None = None,
        low_stock_threshold: int | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> Inventory: ...

    async def adjust(
        self,
        product_id: str,
        warehouse_id: str,
        delta: int,
        *,
        reason: str,
        reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> Inventory: ...

    async def transfer(
        self,
        product_id: str,
        from_warehouse: str,
        to_warehouse: str,
        quantity: int,
        *,
        reason: str | None = None,
        reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Inventory, Inventory]: ...

    async def reserve(
        self,
        product_id: str,
        warehouse_id: str | None,
        quantity: int,
        *,
        ttl: timedelta | None = None,
        order_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Reservation: ...

    async def checkout(
        self,
        lines: Sequence[LineLike],
        *,
        ttl: timedelta | None = None,
        order_id: str | None = None,
        allow_split: bool = False,
        idempotency_key: str | None = None,
    ) -> list[Reservation]: ...

    async def confirm(self, reservation_id: int) -> Reservation: ...

    async def release(self, reservation_id: int, reason: str = "released") -> Reservation: ...

    async def release_order(
        self, order_id: str, reason: str = "order_cancelled"
    ) -> list[Reservation]: ...

    async def extend(self, reservation_id: int, ttl: timedelta) -> Reservation: ...

    async def fulfil(self, reservation_id: int) -> Reservation: ...

    async def get_reservation(self, reservation_id: int) -> Reservation: ...

    async def list_reservations(
        self,
        *,
        status: str | None = None,
        product_id: str | None = None,
        order_id: str | None = None,
        expired: bool = False,
        limit: int = 100,
    ) -> list[Reservation]: ...

    async def aclose(self) -> None: ...
