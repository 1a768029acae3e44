"""The operations contract: one set of stock operations, one signature each.

``stockctl.connect()`` (the library, on a database) and ``stockctl.WarehouseClient`` (over the
HTTP API) implement ``StockOperations``; ``stockctl.AsyncWarehouseClient`` implements
``AsyncStockOperations``, its awaitable twin. The CLI talks to whichever of the first two
``--api-url`` selects, so a command means the same thing in both places. Parameters come in
one order everywhere: product, warehouse, quantity (as in ``Line`` and checkout tuples), then
keyword-only options.

The seed's names stay as aliases on the clients: ``check_stock`` (sellable units),
``reserve_stock``, ``confirm_reservation`` and ``release_reservation``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol, runtime_checkable

from stockctl.core.model import Inventory, Movement, Reservation, StockSummary
from stockctl.core.reservations import Line

# A checkout line: a ``Line`` or the tuple (product, warehouse or None, quantity).
LineLike = Line | tuple[str, str | None, int]

# The operations every implementation offers, by name (the conformance suite walks them).
OPERATIONS = (
    "stock",
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


def as_lines(lines: Sequence[LineLike]) -> list[Line]:
    """Checkout lines from ``Line``s or (product, warehouse, quantity) tuples."""
    return [x if isinstance(x, Line) else Line(x[0], x[1], x[2]) for x in lines]


@runtime_checkable
class StockOperations(Protocol):
    """Stock and reservations of one stockctl, wherever it runs."""

    def stock(self, product_id: str, warehouse_id: str | None = None) -> StockSummary: ...

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

    def confirm(self, reservation_id: str) -> Reservation: ...

    def release(self, reservation_id: str, reason: str = "released") -> Reservation: ...

    def release_order(
        self, order_id: str, reason: str = "order_cancelled"
    ) -> list[Reservation]: ...

    def extend(self, reservation_id: str, ttl: timedelta) -> Reservation: ...

    def fulfil(self, reservation_id: str) -> Reservation: ...

    def get_reservation(self, reservation_id: str) -> Reservation: ...

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

    async def confirm(self, reservation_id: str) -> Reservation: ...

    async def release(self, reservation_id: str, reason: str = "released") -> Reservation: ...

    async def release_order(
        self, order_id: str, reason: str = "order_cancelled"
    ) -> list[Reservation]: ...

    async def extend(self, reservation_id: str, ttl: timedelta) -> Reservation: ...

    async def fulfil(self, reservation_id: str) -> Reservation: ...

    async def get_reservation(self, reservation_id: str) -> Reservation: ...

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
