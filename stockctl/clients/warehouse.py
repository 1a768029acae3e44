"""Clients of the warehouse HTTP API (``stockctl serve``), behind a circuit breaker.

``WarehouseClient`` implements the operations contract (``stockctl.core.operations``) over
HTTP, with the library's names, parameters and typed errors; ``AsyncWarehouseClient``
(``stockctl.clients.warehouse_async``) is its awaitable twin. Both send the requests of
``stockctl.clients.warehouse_wire``. Retries (with backoff) only where safe: reads (GET, and the
read-only POSTs for bulk stock and recently updated), confirm, release and extend (idempotent
by the lifecycle), and writes carrying an idempotency key; every reserve and checkout gets one.
Any other write (release-order, fulfil, or receive/adjust/set/transfer without a key) is sent
once. 5xx, timeouts and connection errors count against the circuit; 4xx do not.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx

from stockctl import errors
from stockctl.clients.breaker import Breaker
from stockctl.clients.warehouse_wire import Call, Calls, Request, error_from, row
from stockctl.core.model import Inventory, Movement, Reservation, StockSummary
from stockctl.core.operations import LineLike, as_lines, enough

__all__ = ["Call", "ClientOptions", "WarehouseClient", "error_from"]

BULK_LIMIT = 1000
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
T = TypeVar("T")


@dataclass
class ClientOptions:
    base_url: str
    token: str | None = None
    timeout: float = 5.0
    retries: int = 2
    backoff: float = 0.1
    max_connections: int = 100


class _Base:
    def __init__(self, options: ClientOptions, breaker: Breaker | None) -> None:
        self.options = options
        self.breaker = breaker or Breaker()
        headers = {"User-Agent": "stockctl-client"}
        if options.token:
            headers["Authorization"] = f"Bearer {options.token}"
        self._headers = headers
        self._limits = httpx.Limits(
            max_connections=options.max_connections,
            max_keepalive_connections=options.max_connections,
        )

    def _attempts(self, call: Call) -> int:
        """Retry reads, calls marked safe and keyed writes; a write without a key goes once."""
        safe = call.safe or call.method in _READS or "Idempotency-Key" in call.headers
        return 1 + (self.options.retries if safe else 0)

    def _outcome(self, response: httpx.Response) -> tuple[Any, errors.StockctlError | None]:
        if response.status_code < 400:
            return (response.json() if response.content else None), None
        return None, error_from(response)

    @staticmethod
    def _retryable(exc: errors.StockctlError | None) -> bool:
        return isinstance(exc, errors.WarehouseUnavailable)

    def _report(self, trial: bool, error: errors.StockctlError | None) -> None:
        """5xx and transport errors count against the circuit; answers (even 4xx) do not."""
        if self._retryable(error):
            self.breaker.failure(trial)
        else:
            self.breaker.success(trial)


def _transport_error(exc: Exception, url: str) -> errors.WarehouseUnavailable:
    return errors.WarehouseUnavailable(f"warehouse API at {url} unreachable: {type(exc).__name__}")


class WarehouseClient(_Base):
    """Synchronous client; thread-safe, one connection pool per client."""

    def __init__(
        self,
        options: ClientOptions,
        breaker: Breaker | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(options, breaker)
        self._http = httpx.Client(
            base_url=options.base_url,
            headers=self._headers,
            timeout=options.timeout,
            limits=self._limits,
            transport=transport,
        )

    def _send(self, call: Call) -> Any:
        attempts = self._attempts(call)
        for attempt in range(1, attempts + 1):
            trial = self.breaker.admit()
            try:
                response = self._http.request(
                    call.method, call.path, json=call.json, params=call.params, headers=call.headers
                )
                body, error = self._outcome(response)
            except httpx.HTTPError as exc:
                body, error = None, _transport_error(exc, self.options.base_url)
            except BaseException:
                self.breaker.failure(trial)  # never leave a trial admitted
                raise
            self._report(trial, error)
            if error is None:
                return body
            if not self._retryable(error) or attempt == attempts:
                raise error
            time.sleep(self.options.backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def _do(self, request: Request[T]) -> T:
        return request.read(self._send(request.call))

    def ready(self) -> str:
        """``GET /health/ready`` once, no retry: a line saying so, or ``WarehouseUnavailable``."""
        try:
            response = self._http.get("/health/ready")
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.options.base_url) from None
        if response.status_code != 200:
            raise errors.WarehouseUnavailable(
                f"warehouse API at {self.options.base_url} not ready: HTTP {response.status_code}"
            )
        return f"{self.options.base_url} ready"

    # the operations contract (stockctl.core.operations.StockOperations)

    def stock(self, product_id: str, warehouse_id: str | None = None) -> StockSummary:
        return self._do(Calls.stock(product_id, warehouse_id))

    def history(
        self, product_id: str, warehouse_id: str | None = None, limit: int = 50
    ) -> list[Movement]:
        return self._do(Calls.history(product_id, warehouse_id, limit))

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
        """Book received units (needs an admin token)."""
        return self._do(
            Calls.receive(product_id, warehouse_id, quantity, reason, reference, idempotency_key)
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
        """Set available to an absolute count (needs an admin token)."""
        return self._do(
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
        """Correct available by a signed delta (needs an admin token)."""
        return self._do(
            Calls.adjust(product_id, warehouse_id, delta, reason, reference, idempotency_key)
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
        """Move units between two warehouses (needs an admin token)."""
        return self._do(
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
        return self._do(
            Calls.reserve(product_id, warehouse_id, quantity, ttl, order_id, idempotency_key)
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
        return self._do(
            Calls.checkout(as_lines(lines), ttl, order_id, allow_split, idempotency_key)
        )

    def confirm(self, reservation_id: int) -> Reservation:
        return self._do(Calls.lifecycle(reservation_id, "confirm"))

    def release(self, reservation_id: int, reason: str = "released") -> Reservation:
        return self._do(Calls.lifecycle(reservation_id, "release", {"reason": reason}))

    def release_order(self, order_id: str, reason: str = "order_cancelled") -> list[Reservation]:
        return self._do(Calls.release_order(order_id, reason))

    def extend(self, reservation_id: int, ttl: timedelta) -> Reservation:
        body = {"ttl_seconds": int(ttl.total_seconds())}
        return self._do(Calls.lifecycle(reservation_id, "extend", body))

    def fulfil(self, reservation_id: int) -> Reservation:
        return self._do(Calls.lifecycle(reservation_id, "fulfil"))

    def get_reservation(self, reservation_id: int) -> Reservation:
        return self._do(Calls.get_reservation(reservation_id))

    def sellable(self, product_id: str, warehouse_id: str | None = None) -> int:
        """Sellable units of a product (in one warehouse, or over all)."""
        return self._do(Calls.sellable(product_id, warehouse_id))

    def list_reservations(
        self,
        *,
        status: str | None = None,
        product_id: str | None = None,
        order_id: str | None = None,
        expired: bool = False,
        limit: int = 100,
    ) -> list[Reservation]:
        return self._do(Calls.list_reservations(status, product_id, order_id, expired, limit))

    # the guide's names (its order service's client)

    def check_stock(self, product_id: str, warehouse_id: str | None, quantity: int) -> None:
        """The guide's ``CheckStock``: returns when ``quantity`` units are sellable (in the
        warehouse, or over all with None), else raises ``InsufficientStock``."""
        enough(product_id, warehouse_id, quantity, self.sellable(product_id, warehouse_id))

    def get_product_inventory(self, product_id: str) -> StockSummary:
        return self.stock(product_id)

    def reserve_stock(
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
        return self.reserve(
            product_id,
            warehouse_id,
            quantity,
            ttl=ttl,
            order_id=order_id,
            idempotency_key=idempotency_key,
        )

    def confirm_reservation(self, reservation_id: int) -> Reservation:
        return self.confirm(reservation_id)

    def release_reservation(self, reservation_id: int, reason: str = "released") -> Reservation:
        return self.release(reservation_id, reason)

    # bulk reads of the order side

    def get_bulk_stock(
        self, product_ids: Sequence[str], warehouse_id: str | None = None
    ) -> dict[str, int]:
        """Sellable units per product; more than 1000 ids go out as parallel requests."""
        chunks = [product_ids[i : i + BULK_LIMIT] for i in range(0, len(product_ids), BULK_LIMIT)]
        if not chunks:
            return {}
        if len(chunks) == 1:
            return dict(self._send(Calls.bulk(chunks[0], warehouse_id))["stocks"])
        with ThreadPoolExecutor(max_workers=min(8, len(chunks))) as pool:
            parts = pool.map(lambda c: self._send(Calls.bulk(c, warehouse_id))["stocks"], chunks)
            return {k: v for part in parts for k, v in part.items()}

    def recently_updated_page(
        self, since: datetime, page: int, limit: int = 1000, warehouse_id: str | None = None
    ) -> tuple[list[Inventory], bool]:
        """One page of rows changed since ``since``, and whether more pages follow."""
        data = self._send(Calls.recent(since, warehouse_id, page, limit))
        return [row(r) for r in data["items"]], bool(data["has_more"])

    def recently_updated(
        self, since: datetime, warehouse_id: str | None = None, limit: int = 1000
    ) -> Iterator[Inventory]:
        """Every row changed since ``since``, page after page."""
        page = 1
        while True:
            data = self._send(Calls.recent(since, warehouse_id, page, limit))
            yield from (row(r) for r in data["items"])
            if not data["has_more"]:
                return
            page += 1

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WarehouseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
