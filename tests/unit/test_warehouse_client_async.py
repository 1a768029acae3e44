"""The asyncio warehouse client against a mocked API (respx): the same request shapes, errors
and retry rules as the sync client (test_warehouse_client.py). Each test runs its own loop."""

from __future__ import annotations

import asyncio
import json
import types
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest
import respx

from stockctl import errors
from stockctl.clients import warehouse_async as warehouse
from stockctl.clients.breaker import Breaker
from stockctl.clients.warehouse import ClientOptions
from stockctl.clients.warehouse_async import AsyncWarehouseClient
from stockctl.core.lines import Line
from stockctl.core.model import ReservationStatus
from tests.clientutil import (
    BASE,
    problem_json,
    product_json,
    reservation_json,
    reserved_json,
    row_json,
)
from tests.unit.test_warehouse_client import PROBLEMS, TOKEN

T = TypeVar("T")
Use = Callable[[Callable[[AsyncWarehouseClient], Awaitable[T]]], T]


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's backoff sleeps, recorded instead of slept."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    fake = types.SimpleNamespace(sleep=sleep, gather=asyncio.gather)
    monkeypatch.setattr(warehouse, "asyncio", fake)
    return slept


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def run(body: Callable[[AsyncWarehouseClient], Awaitable[T]], **options: Any) -> T:
    """Run ``body`` with a fresh client in a fresh event loop, closing the client after."""

    async def main() -> T:
        opts = ClientOptions(BASE, token=TOKEN, retries=2, backoff=0.1, **options)
        async with AsyncWarehouseClient(opts, Breaker(fail_max=1000)) as c:
            return await body(c)

    return asyncio.run(main())


def body_of(route: respx.Route, index: int = -1) -> Any:
    return json.loads(route.calls[index].request.content)


def test_check_stock_and_product_inventory(api: respx.MockRouter, sleeps: list[float]) -> None:
    all_rows = api.get("/v1/inventory/product/P-1").respond(
        json=product_json("P-1", row_json(sellable=7), row_json(warehouse_id="W-2", sellable=5))
    )
    one = api.get("/v1/inventory", params={"product_id": "P-1", "warehouse_id": "W-2"}).respond(
        json=row_json(warehouse_id="W-2", sellable=5)
    )

    async def body(c: AsyncWarehouseClient) -> tuple[int, int, list[str]]:
        summary = await c.get_product_inventory("P-1")
        return (
            await c.sellable("P-1"),
            await c.sellable("P-1", "W-2"),
            [r.warehouse_id for r in summary.rows],
        )

    assert run(body) == (12, 5, ["W-1", "W-2"])
    request = all_rows.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert one.call_count == 1


def test_reserve_and_checkout_carry_keys(api: respx.MockRouter, sleeps: list[float]) -> None:
    reserve = api.post("/v1/inventory/reserve").respond(201, json=reserved_json(quantity=3))
    checkout = api.post("/v1/inventory/checkout").respond(
        201, json={"reservations": [reservation_json(), reservation_json(product_id="P-2")]}
    )

    async def body(c: AsyncWarehouseClient) -> tuple[int, int]:
        r = await c.reserve_stock("P-1", 3, "W-1", order_id="O-1", ttl=timedelta(seconds=120))
        made = await c.checkout(
            [Line("P-1", "W-1", 1), Line("P-2", None, 1)],
            order_id="O-1",
            idempotency_key="checkout-O-1",
        )
        return r.quantity, len(made)

    assert run(body) == (3, 2)
    assert body_of(reserve) == {
        "product_id": "P-1",
        "quantity": 3,
        "warehouse_id": "W-1",
        "order_id": "O-1",
        "ttl_seconds": 120,
    }
    assert len(reserve.calls.last.request.headers["Idempotency-Key"]) == 36
    assert checkout.calls.last.request.headers["Idempotency-Key"] == "checkout-O-1"
    assert body_of(checkout) == {
        "items": [
            {"product_id": "P-1", "quantity": 1, "warehouse_id": "W-1"},
            {"product_id": "P-2", "quantity": 1},
        ],
        "allow_split": False,
        "order_id": "O-1",
    }
    assert reserve.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_confirm_and_release(api: respx.MockRouter, sleeps: list[float]) -> None:
    rid = reservation_json()["id"]
    base = f"/v1/inventory/reservations/{rid}"
    api.post(f"{base}/confirm").respond(json=reservation_json(id=rid, status="CONFIRMED"))
    release = api.post(f"{base}/release").respond(json=reservation_json(id=rid, status="RELEASED"))

    async def body(c: AsyncWarehouseClient) -> list[ReservationStatus]:
        return [
            (await c.confirm_reservation(rid)).status,
            (await c.confirm(rid)).status,
            (await c.release_reservation(rid, "payment_failed")).status,
            (await c.release(rid)).status,
        ]

    assert run(body) == [ReservationStatus.CONFIRMED] * 2 + [ReservationStatus.RELEASED] * 2
    assert [body_of(release, i) for i in range(2)] == [
        {"reason": "payment_failed"},
        {"reason": "released"},
    ]


def test_bulk_stock_of_2500_ids_is_three_requests_merged(
    api: respx.MockRouter, sleeps: list[float]
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        ids = json.loads(request.content)["product_ids"]
        return httpx.Response(200, json={"stocks": {p: int(p[2:]) for p in ids}})

    route = api.post("/v1/batch/stock").mock(side_effect=answer)
    ids = [f"P-{i}" for i in range(2500)]

    async def body(c: AsyncWarehouseClient) -> tuple[dict[str, int], dict[str, int]]:
        return await c.get_bulk_stock(ids), await c.get_bulk_stock([])

    merged, empty = run(body)
    assert merged == {p: int(p[2:]) for p in ids} and empty == {}
    assert sorted(len(body_of(route, i)["product_ids"]) for i in range(3)) == [500, 1000, 1000]
    assert route.call_count == 3


def test_recently_updated_iterates_every_page(api: respx.MockRouter, sleeps: list[float]) -> None:
    pages = [[row_json("P-1"), row_json("P-2")], [row_json("P-3")]]

    def answer(request: httpx.Request) -> httpx.Response:
        page = json.loads(request.content)["page"]
        body = {"items": pages[page - 1], "page": page, "limit": 2, "has_more": page < 2}
        return httpx.Response(200, json=body)

    route = api.post("/v1/inventory/recently-updated").mock(side_effect=answer)

    async def body(c: AsyncWarehouseClient) -> list[str]:
        since = datetime(2026, 1, 1, tzinfo=UTC)
        return [r.product_id async for r in c.recently_updated(since, "W-1", limit=2)]

    assert run(body) == ["P-1", "P-2", "P-3"]
    assert [body_of(route, i)["page"] for i in range(2)] == [1, 2]
    assert body_of(route, 0)["warehouse_id"] == "W-1" and body_of(route, 0)["limit"] == 2


@pytest.mark.parametrize(("status", "slug", "expected"), PROBLEMS)
def test_problem_details_map_to_the_library_errors(
    api: respx.MockRouter,
    sleeps: list[float],
    status: int,
    slug: str,
    expected: type[errors.StockctlError],
) -> None:
    rid = reservation_json()["id"]
    api.post(f"/v1/inventory/reservations/{rid}/confirm").respond(
        status, json=problem_json(status, slug, "nope")
    )
    with pytest.raises(errors.StockctlError) as caught:
        run(lambda c: c.confirm_reservation(rid))
    assert type(caught.value) is expected and caught.value.message == (
        "warehouse API: nope" if status >= 500 else "nope"
    )


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")])
def test_transport_errors_are_warehouse_unavailable(
    api: respx.MockRouter, sleeps: list[float], exc: Exception
) -> None:
    route = api.get("/v1/inventory/product/P-1").mock(side_effect=exc)
    with pytest.raises(errors.WarehouseUnavailable, match=type(exc).__name__):
        run(lambda c: c.sellable("P-1"))
    assert route.call_count == 3 and sleeps == [0.1, 0.2]


def test_a_read_is_retried_on_503_then_succeeds(api: respx.MockRouter, sleeps: list[float]) -> None:
    route = api.get("/v1/inventory/product/P-1").mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json=product_json("P-1", row_json()))]
    )
    assert run(lambda c: c.sellable("P-1")) == 7
    assert route.call_count == 2 and sleeps == [0.1]


def test_reserve_is_retried_with_the_same_key(api: respx.MockRouter, sleeps: list[float]) -> None:
    route = api.post("/v1/inventory/reserve").mock(
        side_effect=[httpx.ReadTimeout("lost"), httpx.Response(201, json=reserved_json())]
    )
    run(lambda c: c.reserve_stock("P-1", 2))
    assert route.call_count == 2
    assert len({c.request.headers["Idempotency-Key"] for c in route.calls}) == 1


def test_4xx_and_keyless_writes_are_not_retried(api: respx.MockRouter, sleeps: list[float]) -> None:
    reserve = api.post("/v1/inventory/reserve").respond(
        409, json=problem_json(409, "insufficient-stock")
    )
    with pytest.raises(errors.InsufficientStock):
        run(lambda c: c.reserve_stock("P-1", 99))
    assert reserve.call_count == 1

    order = api.post("/v1/inventory/reservations/release-order").respond(503)
    with pytest.raises(errors.WarehouseUnavailable):
        run(lambda c: c.release_order("O-1"))  # a write without a key: never retried
    assert order.call_count == 1 and sleeps == []


def test_cancelled_call_does_not_leak_a_connection_or_the_circuit(
    api: respx.MockRouter, sleeps: list[float]
) -> None:
    """A caller's timeout (cancellation) propagates as CancelledError, not as a mapped error."""

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        raise AssertionError("not reached")

    api.get("/v1/inventory/product/P-1").mock(side_effect=hang)

    async def body(c: AsyncWarehouseClient) -> str:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(c.sellable("P-1"), 0.05)
        return c.breaker.state

    assert run(body) == "closed"
