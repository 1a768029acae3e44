"""The synchronous warehouse client against a mocked API (respx): request shapes, decoding,
error mapping, retry rules and bulk / paging. The async client: test_warehouse_client_async.py.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx

from stockctl import errors
from stockctl.clients import warehouse
from stockctl.clients.breaker import Breaker
from stockctl.clients.warehouse import (
    ClientOptions,
    WarehouseClient,
    error_from,
)
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

TOKEN = "tok-" + "0123456789abcdef"


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's backoff sleeps, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(warehouse, "time", types.SimpleNamespace(sleep=slept.append))
    return slept


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False, assert_all_mocked=True) as router:
        yield router


@pytest.fixture
def client(sleeps: list[float]) -> Iterator[WarehouseClient]:
    options = ClientOptions(BASE, token=TOKEN, retries=2, backoff=0.1)
    # a high fail_max: these tests are about retries, not the circuit (test_breaker.py)
    with WarehouseClient(options, Breaker(fail_max=1000)) as c:
        yield c


def body_of(route: respx.Route, index: int = -1) -> Any:
    return json.loads(route.calls[index].request.content)


def assert_common_headers(request: httpx.Request) -> None:
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["User-Agent"] == "stockctl-client"


# ---------------------------------------------------------------------------- request shapes


def test_check_stock_over_all_warehouses(api: respx.MockRouter, client: WarehouseClient) -> None:
    route = api.get("/v1/inventory/product/P-1").respond(
        json=product_json("P-1", row_json(sellable=7), row_json(warehouse_id="W-2", sellable=5))
    )
    assert client.sellable("P-1") == 12
    request = route.calls.last.request
    assert request.method == "GET" and request.content == b""
    assert_common_headers(request)


def test_check_stock_in_one_warehouse(api: respx.MockRouter, client: WarehouseClient) -> None:
    route = api.get("/v1/inventory", params={"product_id": "P-1", "warehouse_id": "W-2"}).respond(
        json=row_json(warehouse_id="W-2", sellable=4)
    )
    assert client.sellable("P-1", "W-2") == 4
    assert route.call_count == 1
    assert dict(route.calls.last.request.url.params) == {"product_id": "P-1", "warehouse_id": "W-2"}


def test_get_product_inventory_decodes_every_row(
    api: respx.MockRouter, client: WarehouseClient
) -> None:
    api.get("/v1/inventory/product/P-1").respond(
        json=product_json(
            "P-1",
            row_json(quantity_available=10, quantity_reserved=3, version=4),
            row_json(warehouse_id="W-2", last_movement_at=None, quantity_reserved=0, sellable=10),
        )
    )
    summary = client.get_product_inventory("P-1")
    assert summary.product_id == "P-1"
    first, second = summary.rows
    assert (first.warehouse_id, first.on_hand, first.reserved) == ("W-1", 10, 3)
    assert (first.low_stock_threshold, first.version) == (2, 4)
    assert first.last_movement_at == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert second.warehouse_id == "W-2" and second.last_movement_at is None
    assert summary.total_on_hand == 20 and summary.total_reserved == 3


def test_reserve_sends_the_body_a_generated_key_and_the_token(
    api: respx.MockRouter, client: WarehouseClient
) -> None:
    made = reservation_json(quantity=3, order_id="O-7")
    route = api.post("/v1/inventory/reserve").respond(201, json={"reservation": made})
    r = client.reserve_stock("P-1", 3, "W-1", order_id="O-7", ttl=timedelta(minutes=5))
    request = route.calls.last.request
    assert_common_headers(request)
    assert json.loads(request.content) == {
        "product_id": "P-1",
        "quantity": 3,
        "warehouse_id": "W-1",
        "order_id": "O-7",
        "ttl_seconds": 300,
    }
    assert len(request.headers["Idempotency-Key"]) == 36  # a fresh UUID for every reserve
    assert r.id == made["id"] and r.status is ReservationStatus.ACTIVE
    assert (r.product_id, r.warehouse_id, r.quantity, r.order_id) == ("P-1", "W-1", 3, "O-7")
    assert r.expires_at - r.created_at == timedelta(minutes=15)
    assert r.created_at.tzinfo is not None


def test_reserve_minimal_body_and_a_given_key(
    api: respx.MockRouter, client: WarehouseClient
) -> None:
    route = api.post("/v1/inventory/reserve").respond(201, json=reserved_json())
    client.reserve_stock("P-1", 2)
    client.reserve_stock("P-1", 2, idempotency_key="K-42")
    first, second = route.calls
    assert json.loads(first.request.content) == {"product_id": "P-1", "quantity": 2}
    assert second.request.headers["Idempotency-Key"] == "K-42"
    assert first.request.headers["Idempotency-Key"] != "K-42"


def test_checkout_sends_items_and_a_key(api: respx.MockRouter, client: WarehouseClient) -> None:
    held = [reservation_json(product_id="P-1"), reservation_json(product_id="P-2", quantity=1)]
    route = api.post("/v1/inventory/checkout").respond(201, json={"reservations": held})
    made = client.checkout(
        [Line("P-1", "W-1", 2), Line("P-2", None, 1)],
        order_id="O-1",
        ttl=timedelta(seconds=90),
        allow_split=True,
        idempotency_key="checkout-O-1",
    )
    request = route.calls.last.request
    assert_common_headers(request)
    assert request.headers["Idempotency-Key"] == "checkout-O-1"
    assert json.loads(request.content) == {
        "items": [
            {"product_id": "P-1", "quantity": 2, "warehouse_id": "W-1"},
            {"product_id": "P-2", "quantity": 1},
        ],
        "allow_split": True,
        "order_id": "O-1",
        "ttl_seconds": 90,
    }
    assert [r.id for r in made] == [h["id"] for h in held]
    client.checkout([Line("P-1", None, 1)])
    assert json.loads(route.calls.last.request.content) == {
        "items": [{"product_id": "P-1", "quantity": 1}],
        "allow_split": False,
    }
    assert len(route.calls.last.request.headers["Idempotency-Key"]) == 36


def test_confirm_release_and_get_reservation(
    api: respx.MockRouter, client: WarehouseClient
) -> None:
    rid = reservation_json()["id"]
    base = f"/v1/inventory/reservations/{rid}"
    confirm = api.post(f"{base}/confirm").respond(json=reservation_json(id=rid, status="CONFIRMED"))
    release = api.post(f"{base}/release").respond(json=reservation_json(id=rid, status="RELEASED"))
    get = api.get(base).respond(json=reservation_json(id=rid, status="RELEASED"))

    assert client.confirm_reservation(rid).status is ReservationStatus.CONFIRMED
    assert client.confirm(rid).status is ReservationStatus.CONFIRMED  # the WarehousePort name
    assert confirm.calls.last.request.content == b""
    assert client.release_reservation(rid, "payment_failed").status is ReservationStatus.RELEASED
    assert body_of(release) == {"reason": "payment_failed"}
    assert client.release(rid).status is ReservationStatus.RELEASED
    assert body_of(release) == {"reason": "released"}
    assert client.get_reservation(rid).id == rid
    for route in (confirm, release, get):
        assert "Idempotency-Key" not in route.calls.last.request.headers
        assert_common_headers(route.calls.last.request)


def test_no_token_no_authorization_header(api: respx.MockRouter) -> None:
    route = api.get("/v1/inventory/product/P-1").respond(json=product_json("P-1", row_json()))
    with WarehouseClient(ClientOptions(BASE)) as c:
        c.sellable("P-1")
    assert "Authorization" not in route.calls.last.request.headers


def test_bulk_stock_of_2500_ids_is_three_requests_merged(
    api: respx.MockRouter, client: WarehouseClient
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["warehouse_id"] == "W-1"
        return httpx.Response(200, json={"stocks": {p: int(p[2:]) for p in body["product_ids"]}})

    route = api.post("/v1/batch/stock").mock(side_effect=answer)
    ids = [f"P-{i}" for i in range(2500)]
    stocks = client.get_bulk_stock(ids, "W-1")
    assert stocks == {p: int(p[2:]) for p in ids}
    assert route.call_count == 3
    sent = sorted((body_of(route, i)["product_ids"] for i in range(3)), key=len, reverse=True)
    assert [len(s) for s in sent] == [1000, 1000, 500]
    assert sorted(p for s in sent for p in s) == sorted(ids)  # each id exactly once


def test_bulk_stock_small_and_empty(api: respx.MockRouter, client: WarehouseClient) -> None:
    route = api.post("/v1/batch/stock").respond(json={"stocks": {"P-1": 3}, "missing": ["P-2"]})
    assert client.get_bulk_stock([]) == {}
    assert route.call_count == 0
    assert client.get_bulk_stock(["P-1", "P-2"]) == {"P-1": 3}
    assert body_of(route) == {"product_ids": ["P-1", "P-2"]}


def _pages(route: respx.Route, pages: list[list[dict[str, Any]]]) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        page = json.loads(request.content)["page"]
        more = page < len(pages)
        body = {"items": pages[page - 1], "page": page, "limit": 2, "has_more": more}
        return httpx.Response(200, json=body)

    route.mock(side_effect=answer)


def test_recently_updated_iterates_every_page(
    api: respx.MockRouter, client: WarehouseClient
) -> None:
    route = api.post("/v1/inventory/recently-updated")
    pages = [
        [row_json("P-1"), row_json("P-2")],
        [row_json("P-3"), row_json("P-4")],
        [row_json("P-5")],
    ]
    _pages(route, pages)
    since = datetime(2026, 1, 1, tzinfo=UTC)
    rows = list(client.recently_updated(since, warehouse_id="W-1", limit=2))
    assert [r.product_id for r in rows] == ["P-1", "P-2", "P-3", "P-4", "P-5"]
    assert [body_of(route, i)["page"] for i in range(3)] == [1, 2, 3]
    assert body_of(route, 0) == {
        "since": "2026-01-01T00:00:00+00:00",
        "page": 1,
        "limit": 2,
        "warehouse_id": "W-1",
    }

    found, more = client.recently_updated_page(since, 2, limit=2)
    assert [r.product_id for r in found] == ["P-3", "P-4"] and more is True
    assert client.recently_updated_page(since, 3, limit=2)[1] is False


def test_recently_updated_stops_at_an_empty_last_page(
    api: respx.MockRouter, client: WarehouseClient
) -> None:
    route = api.post("/v1/inventory/recently-updated")
    _pages(route, [[]])
    assert list(client.recently_updated(datetime(2026, 1, 1, tzinfo=UTC))) == []
    assert route.call_count == 1


def test_the_client_maps_the_cli_operations(api: respx.MockRouter, client: WarehouseClient) -> None:
    remote = client
    api.get("/v1/inventory/product/P-1").respond(json=product_json("P-1", row_json()))
    one = api.get("/v1/inventory").respond(json=row_json(warehouse_id="W-2"))
    reserve = api.post("/v1/inventory/reserve").respond(201, json=reserved_json())
    checkout = api.post("/v1/inventory/checkout").respond(
        201, json={"reservations": [reservation_json()]}
    )
    rid = reservation_json()["id"]
    api.post(f"/v1/inventory/reservations/{rid}/confirm").respond(
        json=reservation_json(id=rid, status="CONFIRMED")
    )
    api.post(f"/v1/inventory/reservations/{rid}/release").respond(
        json=reservation_json(id=rid, status="RELEASED")
    )
    api.get(f"/v1/inventory/reservations/{rid}").respond(json=reservation_json(id=rid))
    by_order = api.post("/v1/inventory/reservations/release-order").respond(
        json={"reservations": [reservation_json(status="RELEASED")]}
    )

    assert [r.warehouse_id for r in remote.stock("P-1").rows] == ["W-1"]
    assert [r.warehouse_id for r in remote.stock("P-1", "W-2").rows] == ["W-2"]
    assert dict(one.calls.last.request.url.params)["warehouse_id"] == "W-2"
    remote.reserve("P-1", "W-1", 2, ttl=timedelta(seconds=60), order_id="O-1", idempotency_key="K")
    assert body_of(reserve) == {
        "product_id": "P-1",
        "quantity": 2,
        "warehouse_id": "W-1",
        "order_id": "O-1",
        "ttl_seconds": 60,
    }
    assert reserve.calls.last.request.headers["Idempotency-Key"] == "K"
    assert len(remote.checkout([Line("P-1", None, 2)], order_id="O-1", idempotency_key="C")) == 1
    assert checkout.calls.last.request.headers["Idempotency-Key"] == "C"
    assert remote.confirm(rid).status is ReservationStatus.CONFIRMED
    assert remote.release(rid, "why").status is ReservationStatus.RELEASED
    assert remote.get_reservation(rid).id == rid
    assert [r.status for r in remote.release_order("O-1", "cancelled")] == [
        ReservationStatus.RELEASED
    ]
    assert body_of(by_order) == {"order_id": "O-1", "reason": "cancelled"}


# ---------------------------------------------------------------------------- error mapping

PROBLEMS = [
    (409, "insufficient-stock", errors.InsufficientStock),
    (404, "reservation-not-found", errors.ReservationNotFound),
    (410, "reservation-expired", errors.ReservationExpired),
    (409, "idempotency-conflict", errors.IdempotencyConflict),
    (422, "invalid-input", errors.InvalidInput),
    (409, "invalid-transition", errors.InvalidTransition),
    (404, "product-not-found", errors.ProductNotFound),
    (409, "already-exists", errors.AlreadyExists),
    # slugs the client does not know fall back on the status
    (404, "not-found", errors.NotFound),
    (401, "unauthorized", errors.InvalidInput),
    (403, "forbidden", errors.InvalidInput),
    (409, "something-new", errors.StockRuleViolation),
    (410, "something-new", errors.ReservationExpired),
    (413, "payload-too-large", errors.InvalidInput),
    # any 5xx is the warehouse being unavailable, whatever its body says
    (500, "internal", errors.WarehouseUnavailable),
    (503, "database-unavailable", errors.WarehouseUnavailable),
]


@pytest.mark.parametrize(("status", "slug", "expected"), PROBLEMS)
def test_problem_details_map_to_the_library_errors(
    api: respx.MockRouter,
    client: WarehouseClient,
    status: int,
    slug: str,
    expected: type[errors.StockctlError],
) -> None:
    api.post("/v1/inventory/reserve").respond(
        status, json=problem_json(status, slug, "not enough P-1")
    )
    with pytest.raises(errors.StockctlError) as caught:
        client.reserve_stock("P-1", 5, "W-1")
    assert type(caught.value) is expected
    assert "not enough P-1" in caught.value.message


def test_a_problem_without_json_still_maps() -> None:
    request = httpx.Request("GET", f"{BASE}/v1/inventory/product/P-1")
    bare = httpx.Response(502, text="<html>bad gateway</html>", request=request)
    error = error_from(bare)
    assert isinstance(error, errors.WarehouseUnavailable)
    assert "HTTP 502 from /v1/inventory/product/P-1" in error.message
    gone = error_from(httpx.Response(404, json=["not", "a", "problem"], request=request))
    assert type(gone) is errors.NotFound


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow connect"),
        httpx.ReadTimeout("slow answer"),
        httpx.RemoteProtocolError("server hung up"),
    ],
)
def test_transport_errors_are_warehouse_unavailable(
    api: respx.MockRouter, client: WarehouseClient, exc: Exception
) -> None:
    route = api.get("/v1/inventory/product/P-1").mock(side_effect=exc)
    with pytest.raises(errors.WarehouseUnavailable) as caught:
        client.sellable("P-1")
    assert type(exc).__name__ in caught.value.message and BASE in caught.value.message
    assert caught.value.exit_code == 3
    assert route.call_count == 3  # a read: retried twice


# ---------------------------------------------------------------------------- retry rules


def test_a_read_is_retried_on_503_with_backoff(
    api: respx.MockRouter, client: WarehouseClient, sleeps: list[float]
) -> None:
    route = api.get("/v1/inventory/product/P-1").mock(
        side_effect=[
            httpx.Response(503, json=problem_json(503, "database-unavailable")),
            httpx.Response(503),
            httpx.Response(200, json=product_json("P-1", row_json(sellable=9))),
        ]
    )
    assert client.sellable("P-1") == 9
    assert route.call_count == 3
    assert sleeps == [0.1, 0.2]  # exponential backoff


def test_a_read_gives_up_after_the_retries(
    api: respx.MockRouter, client: WarehouseClient, sleeps: list[float]
) -> None:
    route = api.get("/v1/inventory/product/P-1").respond(503)
    with pytest.raises(errors.WarehouseUnavailable):
        client.get_product_inventory("P-1")
    assert route.call_count == 3 and sleeps == [0.1, 0.2]


def test_4xx_is_never_retried(
    api: respx.MockRouter, client: WarehouseClient, sleeps: list[float]
) -> None:
    route = api.get("/v1/inventory/product/P-1").respond(
        404, json=problem_json(404, "product-not-found")
    )
    with pytest.raises(errors.ProductNotFound):
        client.sellable("P-1")
    assert route.call_count == 1 and sleeps == []


def test_reserve_is_retried_with_the_same_key(
    api: respx.MockRouter, client: WarehouseClient
) -> None:
    route = api.post("/v1/inventory/reserve").mock(
        side_effect=[
            httpx.ReadTimeout("lost answer"),
            httpx.Response(502),
            httpx.Response(201, json=reserved_json()),
        ]
    )
    client.reserve_stock("P-1", 2, "W-1")
    keys = {c.request.headers["Idempotency-Key"] for c in route.calls}
    assert route.call_count == 3 and len(keys) == 1  # the server dedupes the repeats


def test_checkout_is_retried_with_the_same_key(
    api: respx.MockRouter, client: WarehouseClient
) -> None:
    route = api.post("/v1/inventory/checkout").mock(
        side_effect=[httpx.Response(503), httpx.Response(201, json={"reservations": []})]
    )
    assert client.checkout([Line("P-1", None, 1)], idempotency_key="checkout-O-5") == []
    assert [c.request.headers["Idempotency-Key"] for c in route.calls] == ["checkout-O-5"] * 2


def test_confirm_and_release_are_retried_being_idempotent(
    api: respx.MockRouter, client: WarehouseClient
) -> None:
    rid = reservation_json()["id"]
    for action, status in (("confirm", "CONFIRMED"), ("release", "RELEASED")):
        route = api.post(f"/v1/inventory/reservations/{rid}/{action}").mock(
            side_effect=[
                httpx.ConnectError("refused"),
                httpx.Response(200, json=reservation_json(id=rid, status=status)),
            ]
        )
        done = getattr(client, f"{action}_reservation")(rid)
        assert done.status.value == status and route.call_count == 2


def test_bulk_and_recent_reads_over_post_are_retried(
    api: respx.MockRouter, client: WarehouseClient
) -> None:
    bulk = api.post("/v1/batch/stock").mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json={"stocks": {"P-1": 1}})]
    )
    recent = api.post("/v1/inventory/recently-updated").mock(
        side_effect=[
            httpx.ReadTimeout("slow"),
            httpx.Response(200, json={"items": [], "page": 1, "limit": 10, "has_more": False}),
        ]
    )
    assert client.get_bulk_stock(["P-1"]) == {"P-1": 1}
    assert list(client.recently_updated(datetime(2026, 1, 1, tzinfo=UTC))) == []
    assert (bulk.call_count, recent.call_count) == (2, 2)


@pytest.mark.parametrize("failure", [httpx.Response(503), httpx.ReadTimeout("lost answer")])
def test_a_write_without_a_key_is_never_retried(
    api: respx.MockRouter,
    client: WarehouseClient,
    sleeps: list[float],
    failure: httpx.Response | Exception,
) -> None:
    adjust = api.post("/v1/inventory/adjust").mock(side_effect=[failure])
    with pytest.raises(errors.WarehouseUnavailable):
        client.adjust("P-1", "W-1", -2, reason="damaged")
    assert adjust.call_count == 1
    assert "Idempotency-Key" not in adjust.calls.last.request.headers

    by_order = api.post("/v1/inventory/reservations/release-order").mock(side_effect=[failure])
    with pytest.raises(errors.WarehouseUnavailable):
        client.release_order("O-1")
    assert by_order.call_count == 1

    raw = api.post("/v1/inventory/receive").mock(side_effect=[failure])
    with pytest.raises(errors.WarehouseUnavailable):
        client.receive("P-1", "W-1", 1)  # no idempotency key: never retried
    assert raw.call_count == 1
    assert sleeps == []


def test_a_write_with_a_key_is_retried(api: respx.MockRouter, client: WarehouseClient) -> None:
    adjust = api.post("/v1/inventory/adjust").mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json=row_json())]
    )
    client.adjust("P-1", "W-1", -2, reason="damaged", idempotency_key="ADJ-1")
    assert [c.request.headers["Idempotency-Key"] for c in adjust.calls] == ["ADJ-1"] * 2
    assert body_of(adjust) == {
        "product_id": "P-1",
        "warehouse_id": "W-1",
        "delta": -2,
        "reason": "damaged",
    }


def test_zero_retries_means_one_attempt(api: respx.MockRouter) -> None:
    route = api.get("/v1/inventory/product/P-1").respond(503)
    with (
        WarehouseClient(ClientOptions(BASE, retries=0)) as c,
        pytest.raises(errors.WarehouseUnavailable),
    ):
        c.sellable("P-1")
    assert route.call_count == 1


def test_client_options_reach_httpx(api: respx.MockRouter) -> None:
    route = api.get("/v1/inventory/product/P-1").respond(503)
    options = ClientOptions(BASE, token=TOKEN, timeout=1.5, max_connections=7, retries=0)
    with WarehouseClient(options) as c, pytest.raises(errors.WarehouseUnavailable):
        assert c.options.max_connections == 7
        c.sellable("P-1")
    sent = route.calls.last.request
    assert sent.extensions["timeout"] == httpx.Timeout(1.5).as_dict()
    assert str(sent.url).startswith(BASE)
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
