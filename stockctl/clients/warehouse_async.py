"""The asyncio client of the warehouse HTTP API: ``WarehouseClient``'s awaitable twin, with
the same methods, parameters and errors (``stockctl.core.operations.AsyncStockOperations``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx

from stockctl.clients.breaker import Breaker
from stockctl.clients.warehouse import BULK_LIMIT, ClientOptions, _Base, _transport_error
from stockctl.clients.warehouse_wire import Call, Calls, Request, row
from stockctl.core.model import Inventory, Movement, Reservation, StockSummary
from stockctl.core.operations import LineLike, as_lines, enough

T = TypeVar("T")


class AsyncWarehouseClient(_Base):
    """Asyncio client with the same methods as ``WarehouseClient`` (as coroutines)."""

    def __init__(
        self,
        options: ClientOptions,
        breaker: Breaker | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(options, breaker)
        self._http = httpx.AsyncClient(
            base_url=options.base_url,
            headers=self._headers,
            timeout=options.timeout,
            limits=self._limits,
            transport=transport,
        )

    async def _send(self, call: Call) -> Any:
        attempts = self._attempts(call)
        for attempt in range(1, attempts + 1):
            trial = self.breaker.admit()
            try:
                response = await self._http.request(
                    call.method, call.path, json=call.json, params=call.params, headers=call.headers
                )
                body, error = self._outcome(response)
            except httpx.HTTPError as exc:
                body, error = None, _transport_error(exc, self.options.base_url)
            except BaseException:  # cancelled or broken: never leave a trial admitted
                self.breaker.failure(trial)
                raise
            self._report(trial, error)
            if error is None:
                return body
            if not self._retryable(error) or attempt == attempts:
                raise error
            await asyncio.sleep(self.options.backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def _do(self, request: Request[T]) -> T:
        return request.read(await self._send(request.call))

    # the operations contract (stockctl.core.operations.AsyncStockOperations)

    async def stock(self, product_id: str, warehouse_id: str | None = None) -> StockSummary:
        return await self._do(Calls.stock(product_id, warehouse_id))

    async def history(
        self, product_id: str, warehouse_id: str | None = None, limit: int = 50
    ) -> list[Movement]:
        return await self._do(Calls.history(product_id, warehouse_id, limit))

    async def receive(
        self,
        product_id: str,
        warehouse_id: str,
        quantity: int,
        *,
        reason: str | None = None,
        reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> Inventory:
        """Book received units (needs an admin token)."""
        return await self._do(
            Calls.receive(product_id, warehouse_id, quantity, reason, reference, idempotency_key)
        )

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
    ) -> Inventory:
        """Set available to an absolute count (needs an admin token)."""
        return await self._do(
            Calls.set_stock(
                product_id,
                warehouse_id,
                quantity,
                expect_version,
                low_stock_threshold,
                reason,
                idempotency_key,
            )
        )

    async def adjust(
        self,
        product_id: str,
        warehouse_id: str,
        delta: int,
        *,
        reason: str,
        reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> Inventory:
        """Correct available by a signed delta (needs an admin token)."""
        return await self._do(
            Calls.adjust(product_id, warehouse_id, delta, reason, reference, idempotency_key)
        )

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
    ) -> tuple[Inventory, Inventory]:
        """Move units between two warehouses (needs an admin token)."""
        return await self._do(
            Calls.transfer(
                product_id,
                from_warehouse,
                to_warehouse,
                quantity,
                reason,
                reference,
                idempotency_key,
            )
        )

    async def reserve(
        self,
        product_id: str,
        warehouse_id: str | None,
        quantity: int,
        *,
        ttl: timedelta | None = None,
        order_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Reservation:
        return await self._do(
            Calls.reserve(product_id, warehouse_id, quantity, ttl, order_id, idempotency_key)
        )

    async def checkout(
        self,
        lines: Sequence[LineLike],
        *,
        ttl: timedelta | None = None,
        order_id: str | None = None,
        allow_split: bool = False,
        idempotency_key: str | None = None,
    ) -> list[Reservation]:
        return await self._do(
            Calls.checkout(as_lines(lines), ttl, order_id, allow_split, idempotency_key)
        )

    async def confirm(self, reservation_id: int) -> Reservation:
        return await self._do(Calls.lifecycle(reservation_id, "confirm"))

    async def release(self, reservation_id: int, reason: str = "released") -> Reservation:
        return await self._do(Calls.lifecycle(reservation_id, "release", {"reason": reason}))

    async def release_order(
        self, order_id: str, reason: str = "order_cancelled"
    ) -> list[Reservation]:
        return await self._do(Calls.release_order(order_id, reason))

    async def extend(self, reservation_id: int, ttl: timedelta) -> Reservation:
        body = {"ttl_seconds": int(ttl.total_seconds())}
        return await self._do(Calls.lifecycle(reservation_id, "extend", body))

    async def fulfil(self, reservation_id: int) -> Reservation:
        return await self._do(Calls.lifecycle(reservation_id, "fulfil"))

    async def get_reservation(self, reservation_id: int) -> Reservation:
        return await self._do(Calls.get_reservation(reservation_id))

    async def sellable(self, product_id: str, warehouse_id: str | None = None) -> int:
        """Sellable units of a product (in one warehouse, or over all)."""
        return await self._do(Calls.sellable(product_id, warehouse_id))

    async def list_reservations(
        self,
        *,
        status: str | None = None,
        product_id: str | None = None,
        order_id: str | None = None,
        expired: bool = False,
        limit: int = 100,
    ) -> list[Reservation]:
        return await self._do(Calls.list_reservations(status, product_id, order_id, expired, limit))

    # the guide's names (its order service's client)

    async def check_stock(self, product_id: str, warehouse_id: str | None, quantity: int) -> None:
        """The guide's ``CheckStock``: returns when ``quantity`` units are sellable (in the
        warehouse, or over all with None), else raises ``InsufficientStock``."""
        enough(product_id, warehouse_id, quantity, await self.sellable(product_id, warehouse_id))

    async def get_product_inventory(self, product_id: str) -> StockSummary:
        return await self.stock(product_id)

    async def reserve_stock(
        self,
        product_id: str,
        quantity: int,
        warehouse_id: str | None = None,
        *,
        order_id: str | None = None,
        ttl: timedelta | None = None,
        idempotency_key: str | None = None,
    ) -> Reservation:
        """The guide's ``ReserveStock(productID, quantity, warehouseID)``: ``reserve``."""
        return await self.reserve(
            product_id,
            warehouse_id,
            quantity,
            ttl=ttl,
            order_id=order_id,
            idempotency_key=idempotency_key,
        )

    async def confirm_reservation(self, reservation_id: int) -> Reservation:
        return await self.confirm(reservation_id)

    async def release_reservation(
        self, reservation_id: int, reason: str = "released"
    ) -> Reservation:
        return await self.release(reservation_id, reason)

    # bulk reads of the order side

    async def get_bulk_stock(
        self, product_ids: Sequence[str], warehouse_id: str | None = None
    ) -> dict[str, int]:
        chunks = [product_ids[i : i + BULK_LIMIT] for i in range(0, len(product_ids), BULK_LIMIT)]
        if not chunks:
            return {}
        parts = await asyncio.gather(*(self._send(Calls.bulk(c, warehouse_id)) for c in chunks))
        return {k: v for part in parts for k, v in part["stocks"].items()}

    async def recently_updated(
        self, since: datetime, warehouse_id: str | None = None, limit: int = 1000
    ) -> AsyncIterator[Inventory]:
        page = 1
        while True:
            data = await self._send(Calls.recent(since, warehouse_id, page, limit))
            for r in data["items"]:
                yield row(r)
            if not data["has_more"]:
                return
            page += 1

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncWarehouseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
