"""Clients of the warehouse HTTP API (``stockctl serve``), sync and async, behind a breaker.

Errors come back as the same typed exceptions the library raises, mapped from the problem
details' ``type``. Retries (with backoff) only where safe: reads (GET, and the read-only POSTs
for bulk stock and recently updated), confirm and release (both idempotent by the lifecycle), and
writes carrying an idempotency key; every reserve and checkout gets one. Any other write (e.g.
release-order, or adjust without a key) is sent once. 5xx, timeouts and connection errors count
against the circuit; 4xx do not.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from stockctl import errors
from stockctl.clients.breaker import Breaker
from stockctl.core.model import (
    Inventory,
    Reservation,
    ReservationStatus,
    StockSummary,
)
from stockctl.core.reservations import Line

BULK_LIMIT = 1000
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def _error_classes() -> dict[str, type[errors.StockctlError]]:
    found: dict[str, type[errors.StockctlError]] = {}
    todo: list[type[errors.StockctlError]] = [errors.StockctlError]
    while todo:
        cls = todo.pop()
        found[cls.slug] = cls
        todo.extend(cls.__subclasses__())
    return found


_BY_SLUG = _error_classes()


def error_from(response: httpx.Response) -> errors.StockctlError:
    """The typed error for a problem-details response."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    slug = str(body.get("type", "")).rsplit("/", 1)[-1] if isinstance(body, dict) else ""
    detail = body.get("detail") if isinstance(body, dict) else None
    message = str(detail or f"HTTP {response.status_code} from {response.request.url.path}")
    cls = _BY_SLUG.get(slug)
    if response.status_code >= 500:
        return errors.WarehouseUnavailable(f"warehouse API: {message}")
    if cls is None:
        cls = {
            401: errors.InvalidInput,
            403: errors.InvalidInput,
            404: errors.NotFound,
            409: errors.StockRuleViolation,
            410: errors.ReservationExpired,
        }.get(response.status_code, errors.InvalidInput)
    return cls(message)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    safe: bool = False  # a POST that may be repeated: a read, or an idempotent transition
    headers: dict[str, str] = field(default_factory=dict)


def _reservation(d: dict[str, Any]) -> Reservation:
    return Reservation(
        id=d["id"],
        product_id=d["product_id"],
        warehouse_id=d["warehouse_id"],
        quantity=d["quantity"],
        status=ReservationStatus(d["status"]),
        order_id=d.get("order_id"),
        created_at=datetime.fromisoformat(d["created_at"]),
        expires_at=datetime.fromisoformat(d["expires_at"]),
        updated_at=datetime.fromisoformat(d["updated_at"]),
    )


def _row(d: dict[str, Any]) -> Inventory:
    moved = d.get("last_movement_at")
    return Inventory(
        product_id=d["product_id"],
        warehouse_id=d["warehouse_id"],
        quantity_available=d["quantity_available"],
        quantity_reserved=d["quantity_reserved"],
        low_stock_threshold=d["low_stock_threshold"],
        version=d["version"],
        last_movement_at=datetime.fromisoformat(moved) if moved else None,
    )


class _Calls:
    """Request shapes shared by the sync and async clients."""

    @staticmethod
    def stock(product_id: str, warehouse_id: str | None) -> Call:
        if warehouse_id is None:
            return Call("GET", f"/v1/inventory/product/{product_id}")
        return Call(
            "GET", "/v1/inventory", params={"product_id": product_id, "warehouse_id": warehouse_id}
        )

    @staticmethod
    def reserve(
        product_id: str,
        quantity: int,
        warehouse_id: str | None,
        order_id: str | None,
        ttl: timedelta | None,
        key: str | None,
    ) -> Call:
        body: dict[str, Any] = {"product_id": product_id, "quantity": quantity}
        if warehouse_id is not None:
            body["warehouse_id"] = warehouse_id
        if order_id is not None:
            body["order_id"] = order_id
        if ttl is not None:
            body["ttl_seconds"] = int(ttl.total_seconds())
        return Call(
            "POST",
            "/v1/inventory/reserve",
            json=body,
            headers={"Idempotency-Key": key or str(uuid.uuid4())},
        )

    @staticmethod
    def checkout(
        lines: Sequence[Line],
        order_id: str | None,
        ttl: timedelta | None,
        allow_split: bool,
        key: str | None,
    ) -> Call:
        items = [
            {
                "product_id": x.product_id,
                "quantity": x.quantity,
                **({"warehouse_id": x.warehouse_id} if x.warehouse_id else {}),
            }
            for x in lines
        ]
        body: dict[str, Any] = {"items": items, "allow_split": allow_split}
        if order_id is not None:
            body["order_id"] = order_id
        if ttl is not None:
            body["ttl_seconds"] = int(ttl.total_seconds())
        return Call(
            "POST",
            "/v1/inventory/checkout",
            json=body,
            headers={"Idempotency-Key": key or str(uuid.uuid4())},
        )

    @staticmethod
    def lifecycle(reservation_id: str, action: str, body: Any = None) -> Call:
        """confirm / release: repeating one returns the same reservation, so retry is safe."""
        path = f"/v1/inventory/reservations/{reservation_id}/{action}"
        return Call("POST", path, json=body, safe=True)

    @staticmethod
    def bulk(ids: Sequence[str], warehouse_id: str | None) -> Call:
        body: dict[str, Any] = {"product_ids": list(ids)}
        if warehouse_id is not None:
            body["warehouse_id"] = warehouse_id
        return Call("POST", "/v1/batch/stock", json=body, safe=True)

    @staticmethod
    def recent(since: datetime, warehouse_id: str | None, page: int, limit: int) -> Call:
        body: dict[str, Any] = {"since": since.isoformat(), "page": page, "limit": limit}
        if warehouse_id is not None:
            body["warehouse_id"] = warehouse_id
        return Call("POST", "/v1/inventory/recently-updated", json=body, safe=True)


def _summary(product_id: str, data: dict[str, Any]) -> StockSummary:
    return StockSummary(product_id, [_row(r) for r in data["warehouses"]])


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

    def check_stock(self, product_id: str, warehouse_id: str | None = None) -> int:
        """Sellable units of a product (in one warehouse, or over all)."""
        data = self._send(_Calls.stock(product_id, warehouse_id))
        return int(data["sellable"] if warehouse_id else data["total_sellable"])

    def get_product_inventory(self, product_id: str) -> StockSummary:
        return _summary(product_id, self._send(_Calls.stock(product_id, None)))

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
        return _reservation(
            self._send(
                _Calls.reserve(product_id, quantity, warehouse_id, order_id, ttl, idempotency_key)
            )
        )

    def checkout(
        self,
        lines: Sequence[Line],
        *,
        order_id: str | None = None,
        ttl: timedelta | None = None,
        allow_split: bool = False,
        idempotency_key: str | None = None,
    ) -> list[Reservation]:
        data = self._send(_Calls.checkout(lines, order_id, ttl, allow_split, idempotency_key))
        return [_reservation(r) for r in data["reservations"]]

    def confirm_reservation(self, reservation_id: str) -> Reservation:
        return _reservation(self._send(_Calls.lifecycle(reservation_id, "confirm")))

    def release_reservation(self, reservation_id: str, reason: str = "released") -> Reservation:
        return _reservation(
            self._send(_Calls.lifecycle(reservation_id, "release", {"reason": reason}))
        )

    def get_reservation(self, reservation_id: str) -> Reservation:
        return _reservation(self._send(Call("GET", f"/v1/inventory/reservations/{reservation_id}")))

    def adjust(
        self,
        product_id: str,
        warehouse_id: str,
        delta: int,
        reason: str,
        idempotency_key: str | None = None,
    ) -> Inventory:
        """Correct available by a signed delta (needs an admin token)."""
        body = {
            "product_id": product_id,
            "warehouse_id": warehouse_id,
            "delta": delta,
            "reason": reason,
        }
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return _row(
            self._send(Call("POST", "/v1/inventory/adjust", json=body, safe=False, headers=headers))
        )

    def get_bulk_stock(
        self, product_ids: Sequence[str], warehouse_id: str | None = None
    ) -> dict[str, int]:
        """Sellable units per product; more than 1000 ids go out as parallel requests."""
        chunks = [product_ids[i : i + BULK_LIMIT] for i in range(0, len(product_ids), BULK_LIMIT)]
        if not chunks:
            return {}
        if len(chunks) == 1:
            return dict(self._send(_Calls.bulk(chunks[0], warehouse_id))["stocks"])
        with ThreadPoolExecutor(max_workers=min(8, len(chunks))) as pool:
            parts = pool.map(lambda c: self._send(_Calls.bulk(c, warehouse_id))["stocks"], chunks)
            return {k: v for part in parts for k, v in part.items()}

    def recently_updated_page(
        self, since: datetime, page: int, limit: int = 1000, warehouse_id: str | None = None
    ) -> tuple[list[Inventory], bool]:
        """One page of rows changed since ``since``, and whether more pages follow."""
        data = self._send(_Calls.recent(since, warehouse_id, page, limit))
        return [_row(r) for r in data["items"]], bool(data["has_more"])

    def recently_updated(
        self, since: datetime, warehouse_id: str | None = None, limit: int = 1000
    ) -> Iterator[Inventory]:
        """Every row changed since ``since``, page after page."""
        page = 1
        while True:
            data = self._send(_Calls.recent(since, warehouse_id, page, limit))
            yield from (_row(r) for r in data["items"])
            if not data["has_more"]:
                return
            page += 1

    # the WarehousePort names, so a checkout flow runs over this client or the local library
    def confirm(self, reservation_id: str) -> Reservation:
        return self.confirm_reservation(reservation_id)

    def release(self, reservation_id: str, reason: str = "released") -> Reservation:
        return self.release_reservation(reservation_id, reason)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WarehouseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncWarehouseClient(_Base):
    """Asyncio client with the same methods (as coroutines)."""

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

    async def check_stock(self, product_id: str, warehouse_id: str | None = None) -> int:
        data = await self._send(_Calls.stock(product_id, warehouse_id))
        return int(data["sellable"] if warehouse_id else data["total_sellable"])

    async def get_product_inventory(self, product_id: str) -> StockSummary:
        return _summary(product_id, await self._send(_Calls.stock(product_id, None)))

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
        return _reservation(
            await self._send(
                _Calls.reserve(product_id, quantity, warehouse_id, order_id, ttl, idempotency_key)
            )
        )

    async def checkout(
        self,
        lines: Sequence[Line],
        *,
        order_id: str | None = None,
        ttl: timedelta | None = None,
        allow_split: bool = False,
        idempotency_key: str | None = None,
    ) -> list[Reservation]:
        data = await self._send(_Calls.checkout(lines, order_id, ttl, allow_split, idempotency_key))
        return [_reservation(r) for r in data["reservations"]]

    async def confirm_reservation(self, reservation_id: str) -> Reservation:
        return _reservation(await self._send(_Calls.lifecycle(reservation_id, "confirm")))

    async def release_reservation(
        self, reservation_id: str, reason: str = "released"
    ) -> Reservation:
        return _reservation(
            await self._send(_Calls.lifecycle(reservation_id, "release", {"reason": reason}))
        )

    async def get_bulk_stock(
        self, product_ids: Sequence[str], warehouse_id: str | None = None
    ) -> dict[str, int]:
        chunks = [product_ids[i : i + BULK_LIMIT] for i in range(0, len(product_ids), BULK_LIMIT)]
        if not chunks:
            return {}
        parts = await asyncio.gather(*(self._send(_Calls.bulk(c, warehouse_id)) for c in chunks))
        return {k: v for part in parts for k, v in part["stocks"].items()}

    async def recently_updated(
        self, since: datetime, warehouse_id: str | None = None, limit: int = 1000
    ) -> AsyncIterator[Inventory]:
        page = 1
        while True:
            data = await self._send(_Calls.recent(since, warehouse_id, page, limit))
            for r in data["items"]:
                yield _row(r)
            if not data["has_more"]:
                return
            page += 1

    async def confirm(self, reservation_id: str) -> Reservation:
        return await self.confirm_reservation(reservation_id)

    async def release(self, reservation_id: str, reason: str = "released") -> Reservation:
        return await self.release_reservation(reservation_id, reason)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncWarehouseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class RemoteStockctl:
    """The library's operations the CLI needs, over the HTTP API (``--api-url``)."""

    def __init__(self, client: WarehouseClient) -> None:
        self.client = client

    def stock(self, product_id: str, warehouse_id: str | None = None) -> StockSummary:
        if warehouse_id is None:
            return self.client.get_product_inventory(product_id)
        row = _row(self.client._send(_Calls.stock(product_id, warehouse_id)))
        return StockSummary(product_id, [row])

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
        return self.client.reserve_stock(
            product_id,
            quantity,
            warehouse_id,
            order_id=order_id,
            ttl=ttl,
            idempotency_key=idempotency_key,
        )

    def checkout(
        self,
        lines: Sequence[Line],
        *,
        ttl: timedelta | None = None,
        order_id: str | None = None,
        allow_split: bool = False,
        idempotency_key: str | None = None,
    ) -> list[Reservation]:
        return self.client.checkout(
            lines,
            order_id=order_id,
            ttl=ttl,
            allow_split=allow_split,
            idempotency_key=idempotency_key,
        )

    def confirm(self, reservation_id: str) -> Reservation:
        return self.client.confirm_reservation(reservation_id)

    def release(self, reservation_id: str, reason: str = "released") -> Reservation:
        return self.client.release_reservation(reservation_id, reason)

    def release_order(self, order_id: str, reason: str = "order_cancelled") -> list[Reservation]:
        data = self.client._send(
            Call(
                "POST",
                "/v1/inventory/reservations/release-order",
                json={"order_id": order_id, "reason": reason},
            )
        )
        return [_reservation(r) for r in data["reservations"]]

    def get_reservation(self, reservation_id: str) -> Reservation:
        return self.client.get_reservation(reservation_id)

    def close(self) -> None:
        self.client.close()
