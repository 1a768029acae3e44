"""The warehouse API on the wire: each operation's request, and how its answer is read.

Shared by the sync and async clients (``stockctl.clients.warehouse``): an operation is a
``Request`` (the HTTP call and a function reading its JSON answer), so both clients send the
same bytes and return the same objects. Errors come back as the library's typed exceptions,
mapped from the problem details' ``type``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import httpx

from stockctl import errors
from stockctl.core.lines import Line
from stockctl.core.mappings import movement_from, reservation_from, row_from
from stockctl.core.model import (
    Inventory,
    Movement,
    Reservation,
    StockSummary,
)

T = TypeVar("T")


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


@dataclass(frozen=True)
class Request(Generic[T]):
    """One operation: what to send, and how to read the answer."""

    call: Call
    read: Callable[[Any], T]


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


reservation = reservation_from  # what the API answers, read back (``core.mappings``)


row = row_from


movement = movement_from


def summary(product_id: str, data: dict[str, Any]) -> StockSummary:
    return StockSummary(product_id, [row(r) for r in data["warehouses"]])


def _reservations(data: dict[str, Any]) -> list[Reservation]:
    return [reservation(r) for r in data["reservations"]]


def _keyed(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key else {}


def _some(**fields: Any) -> dict[str, Any]:
    """The fields that are set: the API's defaults apply to the others."""
    return {k: v for k, v in fields.items() if v is not None}


def _seconds(ttl: timedelta | None) -> int | None:
    return None if ttl is None else int(ttl.total_seconds())


class Calls:
    """Every operation's request (the same for both clients)."""

    @staticmethod
    def stock(product_id: str, warehouse_id: str | None) -> Request[StockSummary]:
        if warehouse_id is None:
            call = Call("GET", f"/v1/inventory/product/{product_id}")
            return Request(call, lambda d: summary(product_id, d))
        params = {"product_id": product_id, "warehouse_id": warehouse_id}
        call = Call("GET", "/v1/inventory", params=params)
        return Request(call, lambda d: StockSummary(product_id, [row(d)]))

    @staticmethod
    def sellable(product_id: str, warehouse_id: str | None) -> Request[int]:
        def read(d: dict[str, Any]) -> int:
            return int(d["sellable"] if warehouse_id else d["total_sellable"])

        return Request(Calls.stock(product_id, warehouse_id).call, read)

    @staticmethod
    def history(product_id: str, warehouse_id: str | None, limit: int) -> Request[list[Movement]]:
        params = _some(product_id=product_id, warehouse_id=warehouse_id, limit=limit)
        call = Call("GET", "/v1/inventory/history", params=params)
        return Request(call, lambda d: [movement(m) for m in d["movements"]])

    @staticmethod
    def receive(
        product_id: str,
        warehouse_id: str,
        quantity: int,
        reason: str | None,
        reference: str | None,
        key: str | None,
    ) -> Request[Inventory]:
        body = _some(
            product_id=product_id,
            warehouse_id=warehouse_id,
            quantity=quantity,
            reason=reason,
            reference=reference,
        )
        return Request(Call("POST", "/v1/inventory/receive", body, headers=_keyed(key)), row)

    @staticmethod
    def set_stock(
        product_id: str,
        warehouse_id: str,
        quantity: int,
        expect_version: int | None,
        low_stock_threshold: int | None,
        reason: str | None,
        key: str | None,
    ) -> Request[Inventory]:
        body = _some(
            warehouse_id=warehouse_id,
            quantity_available=quantity,
            expect_version=expect_version,
            low_stock_threshold=low_stock_threshold,
            reason=reason,
        )
        call = Call("PUT", f"/v1/inventory/product/{product_id}", body, headers=_keyed(key))
        return Request(call, row)

    @staticmethod
    def adjust(
        product_id: str,
        warehouse_id: str,
        delta: int,
        reason: str,
        reference: str | None,
        key: str | None,
    ) -> Request[Inventory]:
        body = _some(
            product_id=product_id,
            warehouse_id=warehouse_id,
            delta=delta,
            reason=reason,
            reference=reference,
        )
        return Request(Call("POST", "/v1/inventory/adjust", body, headers=_keyed(key)), row)

    @staticmethod
    def transfer(
        product_id: str,
        from_warehouse: str,
        to_warehouse: str,
        quantity: int,
        reason: str | None,
        reference: str | None,
        key: str | None,
    ) -> Request[tuple[Inventory, Inventory]]:
        body = _some(
            product_id=product_id,
            from_warehouse_id=from_warehouse,
            to_warehouse_id=to_warehouse,
            quantity=quantity,
            reason=reason,
            reference=reference,
        )
        call = Call("POST", "/v1/inventory/transfer", body, headers=_keyed(key))
        return Request(call, lambda d: (row(d["source"]), row(d["destination"])))

    @staticmethod
    def reserve(
        product_id: str,
        warehouse_id: str | None,
        quantity: int,
        ttl: timedelta | None,
        order_id: str | None,
        key: str | None,
    ) -> Request[Reservation]:
        """Every reserve carries an idempotency key (a fresh one if none is given), so a
        retried request never holds twice."""
        body = _some(
            product_id=product_id,
            warehouse_id=warehouse_id,
            quantity=quantity,
            order_id=order_id,
            ttl_seconds=_seconds(ttl),
        )
        headers = {"Idempotency-Key": key or str(uuid.uuid4())}
        call = Call("POST", "/v1/inventory/reserve", body, headers=headers)
        return Request(call, lambda d: reservation(d["reservation"]))

    @staticmethod
    def checkout(
        lines: Sequence[Line],
        ttl: timedelta | None,
        order_id: str | None,
        allow_split: bool,
        key: str | None,
    ) -> Request[list[Reservation]]:
        items = [
            _some(product_id=x.product_id, warehouse_id=x.warehouse_id, quantity=x.quantity)
            for x in lines
        ]
        body = {
            "items": items,
            "allow_split": allow_split,
            **_some(order_id=order_id, ttl_seconds=_seconds(ttl)),
        }
        headers = {"Idempotency-Key": key or str(uuid.uuid4())}
        call = Call("POST", "/v1/inventory/checkout", body, headers=headers)
        return Request(call, _reservations)

    @staticmethod
    def lifecycle(reservation_id: int, action: str, body: Any = None) -> Request[Reservation]:
        """confirm / release / extend: repeating one returns the same reservation, so a retry
        is safe; fulfil is not repeated (a second one is refused)."""
        path = f"/v1/inventory/reservations/{reservation_id}/{action}"
        return Request(Call("POST", path, json=body, safe=action != "fulfil"), reservation)

    @staticmethod
    def release_order(order_id: str, reason: str) -> Request[list[Reservation]]:
        body = {"order_id": order_id, "reason": reason}
        call = Call("POST", "/v1/inventory/reservations/release-order", json=body)
        return Request(call, _reservations)

    @staticmethod
    def get_reservation(reservation_id: int) -> Request[Reservation]:
        return Request(Call("GET", f"/v1/inventory/reservations/{reservation_id}"), reservation)

    @staticmethod
    def list_reservations(
        status: str | None,
        product_id: str | None,
        order_id: str | None,
        expired: bool,
        limit: int,
    ) -> Request[list[Reservation]]:
        params = _some(
            status=status,
            product_id=product_id,
            order_id=order_id,
            expired="true" if expired else None,
            limit=limit,
        )
        return Request(Call("GET", "/v1/inventory/reservations", params=params), _reservations)

    @staticmethod
    def bulk(ids: Sequence[str], warehouse_id: str | None) -> Call:
        body = {"product_ids": list(ids), **_some(warehouse_id=warehouse_id)}
        return Call("POST", "/v1/batch/stock", json=body, safe=True)

    @staticmethod
    def recent(since: datetime, warehouse_id: str | None, page: int, limit: int) -> Call:
        body = {"since": since.isoformat(), "page": page, "limit": limit}
        return Call(
            "POST",
            "/v1/inventory/recently-updated",
            json={**body, **_some(warehouse_id=warehouse_id)},
            safe=True,
        )
