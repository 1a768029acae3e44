"""Every route of the HTTP API through ``TestClient``, on SQLite (embedded cache) and on
PostgreSQL + Redis: what each answers, and what it really changed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from stockctl.core.projection import CacheKeys
from tests.apiutil import (
    READ,
    RESERVE,
    Api,
    api_on,
    assert_problem,
    seed,
    unique,
)


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    with api_on(database_url) as api:
        yield api


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- inventory reads and writes


def test_inventory_reads(api: Api) -> None:
    (p,), (w1, w2) = seed(api.sc, 1, 2)
    empty = unique("W")
    api.sc.add_warehouse(empty)
    api.sc.reserve(p, w1, 3)
    c = api.client

    r = c.get("/v1/inventory", params={"product_id": p, "warehouse_id": w1}, headers=READ)
    assert r.status_code == 200, r.text
    row = r.json()
    assert (row["product_id"], row["warehouse_id"]) == (p, w1)
    assert (row["quantity_available"], row["quantity_reserved"], row["sellable"]) == (10, 3, 7)
    assert row["version"] == 2 and row["status"] in ("in_stock", "low_stock")
    assert iso(row["last_movement_at"]).tzinfo is not None

    r = c.get(f"/v1/inventory/product/{p}", headers=READ)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["product_id"] == p
    assert sorted(x["warehouse_id"] for x in body["warehouses"]) == sorted([w1, w2])
    assert (body["total_available"], body["total_reserved"], body["total_sellable"]) == (20, 3, 17)

    unknown = {"product_id": unique("P"), "warehouse_id": w1}
    assert_problem(c.get("/v1/inventory", params=unknown), 404, "product-not-found")
    unknown = {"product_id": p, "warehouse_id": unique("W")}
    assert_problem(c.get("/v1/inventory", params=unknown), 404, "warehouse-not-found")
    no_row = {"product_id": p, "warehouse_id": empty}
    assert_problem(c.get("/v1/inventory", params=no_row), 404, "inventory-not-found")
    assert_problem(c.get(f"/v1/inventory/product/{unique('P')}"), 404, "product-not-found")


def test_inventory_writes(api: Api) -> None:
    (p,), (w1, w2) = seed(api.sc, 1, 2)
    c = api.client

    r = c.put(
        f"/v1/inventory/product/{p}",
        json={
            "warehouse_id": w1,
            "quantity_available": 25,
            "low_stock_threshold": 4,
            "reason": "stock take",
        },
    )
    assert r.status_code == 200, r.text
    assert (r.json()["quantity_available"], r.json()["low_stock_threshold"]) == (25, 4)
    version = r.json()["version"]
    stale = {"warehouse_id": w1, "quantity_available": 1, "expect_version": version - 1}
    assert_problem(c.put(f"/v1/inventory/product/{p}", json=stale), 409, "version-conflict")
    cas = {"warehouse_id": w1, "quantity_available": 24, "expect_version": version}
    assert c.put(f"/v1/inventory/product/{p}", json=cas).json()["version"] == version + 1

    r = c.post("/v1/inventory/receive", json={"product_id": p, "warehouse_id": w1, "quantity": 6})
    assert r.status_code == 200, r.text
    assert r.json()["quantity_available"] == 30

    adjust = {"product_id": p, "warehouse_id": w1, "delta": -2, "reason": "damaged"}
    r = c.post("/v1/inventory/adjust", json=adjust)
    assert r.status_code == 200, r.text
    assert r.json()["quantity_available"] == 28
    no_reason = {"product_id": p, "warehouse_id": w1, "delta": -2}
    assert_problem(c.post("/v1/inventory/adjust", json=no_reason), 422, "invalid-input")

    move = {"product_id": p, "from_warehouse_id": w1, "to_warehouse_id": w2, "quantity": 8}
    r = c.post("/v1/inventory/transfer", json=move)
    assert r.status_code == 200, r.text
    assert r.json()["source"]["quantity_available"] == 20
    assert r.json()["destination"]["quantity_available"] == 18
    too_many = {**move, "quantity": 1000}
    assert_problem(c.post("/v1/inventory/transfer", json=too_many), 409, "insufficient-stock")

    # what the database holds, read through the library
    rows = {r.warehouse_id: r for r in api.sc.stock(p).rows}
    assert (rows[w1].on_hand, rows[w2].on_hand) == (20, 18)
    kinds = [m.kind.value for m in api.sc.history(p, w1)]
    assert len(kinds) == 6, kinds  # seed receive, 2 x set, receive, adjust, transfer

    # receive creates the (product, warehouse) row on first receipt
    w3 = unique("W")
    api.sc.add_warehouse(w3)
    r = c.post("/v1/inventory/receive", json={"product_id": p, "warehouse_id": w3, "quantity": 2})
    assert r.status_code == 200 and r.json()["version"] == 1, r.text


# -- reservations


def test_reservation_lifecycle(api: Api) -> None:
    (p,), (w1, w2) = seed(api.sc, 1, 2)
    c = api.client

    body = {"product_id": p, "warehouse_id": w2, "quantity": 4, "ttl_seconds": 600}
    r = c.post("/v1/inventory/reserve", json={**body, "order_id": "order-1"}, headers=RESERVE)
    assert r.status_code == 201, r.text
    res = r.json()["reservation"]
    assert (res["status"], res["warehouse_id"], res["quantity"]) == ("ACTIVE", w2, 4)
    assert res["order_id"] == "order-1"
    ttl = iso(res["expires_at"]) - iso(res["created_at"])
    assert ttl == timedelta(seconds=600)
    rid = res["id"]
    assert c.get(f"/v1/inventory/reservations/{rid}", headers=READ).json() == res

    r = c.post(f"/v1/inventory/reservations/{rid}/extend", json={"ttl_seconds": 1200})
    assert r.status_code == 200, r.text
    assert iso(r.json()["expires_at"]) > iso(res["expires_at"])

    r = c.post(f"/v1/inventory/reservations/{rid}/confirm", headers=RESERVE)
    assert r.status_code == 200 and r.json()["status"] == "CONFIRMED", r.text
    r = c.post(f"/v1/inventory/reservations/{rid}/confirm", headers=RESERVE)
    assert r.status_code == 200 and r.json()["status"] == "CONFIRMED", r.text  # no-op

    r = c.post(f"/v1/inventory/reservations/{rid}/fulfil")
    assert r.status_code == 200 and r.json()["status"] == "FULFILLED", r.text
    row = api.sc.stock(p, w2).rows[0]
    assert (row.on_hand, row.reserved) == (6, 0)
    assert_problem(c.post(f"/v1/inventory/reservations/{rid}/release"), 409, "invalid-transition")

    # no warehouse: the priority strategy picks the first warehouse
    r = c.post("/v1/inventory/reserve", json={"product_id": p, "quantity": 2}, headers=RESERVE)
    assert r.status_code == 201 and r.json()["reservation"]["warehouse_id"] == w1, r.text
    rid = r.json()["reservation"]["id"]
    assert api.sc.stock(p, w1).rows[0].reserved == 2
    r = c.post(
        f"/v1/inventory/reservations/{rid}/release", json={"reason": "customer"}, headers=RESERVE
    )
    assert r.status_code == 200 and r.json()["status"] == "RELEASED", r.text
    r = c.post(f"/v1/inventory/reservations/{rid}/release", headers=RESERVE)
    assert r.status_code == 200 and r.json()["status"] == "RELEASED", r.text  # safe to retry
    assert api.sc.stock(p, w1).rows[0].reserved == 0

    missing = 2**62 + 9
    for path in ("", "/confirm", "/release"):
        method = c.get if not path else c.post
        assert_problem(
            method(f"/v1/inventory/reservations/{missing}{path}"), 404, "reservation-not-found"
        )


def test_checkout_and_release_order(api: Api) -> None:
    (p1, p2), (w1, _) = seed(api.sc, 2, 2)
    c = api.client
    items = [
        {"product_id": p1, "warehouse_id": w1, "quantity": 2},
        {"product_id": p2, "quantity": 3},
    ]
    r = c.post(
        "/v1/inventory/checkout", json={"items": items, "order_id": "order-7"}, headers=RESERVE
    )
    assert r.status_code == 201, r.text
    made = r.json()["reservations"]
    assert sorted((x["product_id"], x["quantity"]) for x in made) == sorted([(p1, 2), (p2, 3)])
    assert {x["order_id"] for x in made} == {"order-7"}

    # all or nothing: the second line cannot be met, so the first is not held either
    before = api.sc.stock(p1).total_reserved
    bad = [{"product_id": p1, "quantity": 1}, {"product_id": p2, "quantity": 999}]
    assert_problem(
        c.post("/v1/inventory/checkout", json={"items": bad}, headers=RESERVE),
        409,
        "insufficient-stock",
    )
    assert api.sc.stock(p1).total_reserved == before

    r = c.post(
        "/v1/inventory/reservations/release-order", json={"order_id": "order-7"}, headers=RESERVE
    )
    assert r.status_code == 200, r.text
    assert sorted(x["status"] for x in r.json()["reservations"]) == ["RELEASED", "RELEASED"]
    assert api.sc.stock(p1).total_reserved == 0 and api.sc.stock(p2).total_reserved == 0
    r = c.post("/v1/inventory/reservations/release-order", json={"order_id": "no-such-order"})
    assert r.status_code == 200 and r.json() == {"reservations": []}


def test_idempotency_key_header(api: Api) -> None:
    (p,), (w, _) = seed(api.sc, 1, 2)
    c = api.client
    body = {"product_id": p, "warehouse_id": w, "quantity": 2, "order_id": "order-9"}
    key = {"Idempotency-Key": unique("key-"), **RESERVE}
    first = c.post("/v1/inventory/reserve", json=body, headers=key)
    again = c.post("/v1/inventory/reserve", json=body, headers=key)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert again.json() == first.json()
    assert api.sc.stock(p, w).rows[0].reserved == 2  # held once

    other = {**body, "quantity": 3}
    assert_problem(
        c.post("/v1/inventory/reserve", json=other, headers=key), 409, "idempotency-conflict"
    )
    assert api.sc.stock(p, w).rows[0].reserved == 2

    # the same on a stock write
    receive = {"product_id": p, "warehouse_id": w, "quantity": 5}
    rkey = {"Idempotency-Key": unique("key-")}
    a = c.post("/v1/inventory/receive", json=receive, headers=rkey)
    b = c.post("/v1/inventory/receive", json=receive, headers=rkey)
    assert a.status_code == b.status_code == 200 and a.json() == b.json()
    assert api.sc.stock(p, w).rows[0].on_hand == 15

    long_key = {"Idempotency-Key": "k" * 201}
    assert_problem(
        c.post("/v1/inventory/receive", json=receive, headers=long_key), 422, "invalid-input"
    )


# -- catalog: bulk stock and products, served from the cache


def test_catalog_routes(api: Api) -> None:
    (p1, p2, p3), (w1, w2) = seed(api.sc, 3, 2)
    api.sc.reserve(p1, w1, 4)
    c = api.client
    ghost = unique("P")

    r = c.post("/v1/batch/stock", json={"product_ids": [p1, p2, ghost]}, headers=READ)
    assert r.status_code == 200, r.text
    assert r.json() == {"stocks": {p1: 16, p2: 20}, "missing": [ghost]}
    r = c.post("/v1/batch/stock", json={"product_ids": [p1, p2], "warehouse_id": w1})
    assert r.json() == {"stocks": {p1: 6, p2: 10}, "missing": []}

    r = c.get(f"/v1/products/{p1}", headers=READ)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "product_id": p1,
        "total": 20,
        "available": 16,
        "status": "in_stock",
        "low_stock": False,
        "warehouses": {w1: 6, w2: 10},
    }
    assert_problem(c.get(f"/v1/products/{ghost}"), 404, "product-not-found")

    # the cache holds the guide's keys (Redis: plain GET; embedded: the cache table)
    keys = CacheKeys(api.prefix)
    got = api.app.cache().get_keys(
        [keys.warehouse(p1, w1), keys.available(p1), keys.total(p1), keys.status(p1)]
    )
    assert got == ["6", "16", "20", "in_stock"]
    if api.redis is not None:
        assert api.get_key(f"stock:{p1}:warehouse:{w1}") == "6"
        assert api.get_key(f"stock:{p1}:available") == "16"

    # served from the cache: a change no event has reached yet is not visible there ...
    api.sc.receive(p1, w1, 100)
    assert c.get(f"/v1/products/{p1}").json()["warehouses"][w1] == 6
    both = c.post("/v1/batch/stock", json={"product_ids": [p1, p2]}).json()
    assert both["stocks"] == {p1: 16, p2: 20}
    w3 = unique("W")  # a warehouse none of them is stocked in
    api.sc.add_warehouse(w3)
    r = c.post("/v1/batch/stock", json={"product_ids": [p1, p3, ghost], "warehouse_id": w3})
    assert r.json() == {"stocks": {p1: 0, p3: 0}, "missing": [ghost]}
    # ... while the inventory route reads the database
    row = c.get("/v1/inventory", params={"product_id": p1, "warehouse_id": w1}).json()
    assert row["sellable"] == 106

    pages = [c.get("/v1/products", params={"limit": 2, "offset": o}).json() for o in (0, 2)]
    assert [len(pg["products"]) for pg in pages] == [2, 1]
    assert (pages[1]["limit"], pages[1]["offset"]) == (2, 2)
    listed = {x["product_id"]: x for pg in pages for x in pg["products"]}
    assert sorted(listed) == sorted([p1, p2, p3])
    assert listed[p3]["available"] == 20 and listed[p3]["warehouses"] == {w1: 10, w2: 10}


def test_recently_updated(api: Api) -> None:
    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    (p1, p2), (w1, w2) = seed(api.sc, 2, 2)
    c = api.client

    r = c.post("/v1/inventory/recently-updated", json={"since": since}, headers=READ)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["page"] == 1 and body["limit"] == 1000 and body["has_more"] is False
    got = {(x["product_id"], x["warehouse_id"]) for x in body["items"]}
    assert got == {(p, w) for p in (p1, p2) for w in (w1, w2)}

    seen = []
    for page in (1, 2, 3, 4):
        r = c.post(
            "/v1/inventory/recently-updated", json={"since": since, "page": page, "limit": 1}
        )
        assert r.json()["has_more"] is (page < 4), r.json()
        seen += [(x["product_id"], x["warehouse_id"]) for x in r.json()["items"]]
    assert sorted(seen) == sorted(got)

    r = c.post("/v1/inventory/recently-updated", json={"since": since, "warehouse_id": w2})
    assert {x["warehouse_id"] for x in r.json()["items"]} == {w2}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert c.post("/v1/inventory/recently-updated", json={"since": future}).json()["items"] == []
    naive = {"since": "2024-01-01T00:00:00"}
    assert_problem(c.post("/v1/inventory/recently-updated", json=naive), 422, "invalid-input")


def test_api_v1_prefix_serves_the_same_routes(api: Api) -> None:
    (p,), (w, _) = seed(api.sc, 1, 2)
    c = api.client
    for path in (f"/inventory/product/{p}", f"/products/{p}"):
        a, b = c.get("/v1" + path), c.get("/api/v1" + path)
        assert a.status_code == b.status_code == 200 and a.json() == b.json()
    r = c.post(
        "/api/v1/inventory/reserve", json={"product_id": p, "warehouse_id": w, "quantity": 1}
    )
    assert r.status_code == 201, r.text
    r = c.post(f"/api/v1/inventory/reservations/{r.json()['reservation']['id']}/confirm")
    assert r.json()["status"] == "CONFIRMED"
    a, b = (c.post(f"{x}/batch/stock", json={"product_ids": [p]}) for x in ("/v1", "/api/v1"))
    assert a.json() == b.json() == {"stocks": {p: 20}, "missing": []}  # cached before the hold
    assert_problem(c.get(f"/api/v1/products/{unique('P')}"), 404, "product-not-found")


# -- ops routes


def test_health_ready_metrics_openapi_docs(api: Api) -> None:
    (p,), _ = seed(api.sc, 1, 2)
    anonymous = TestClient(api.client.app)  # ops routes need no token

    assert anonymous.get("/health").json() == {"status": "ok", "checks": {}}
    r = anonymous.get("/health/ready")
    assert r.status_code == 200, r.text
    checks = r.json()["checks"]
    expected = {"database", "redis"} if api.redis is not None else {"database"}
    assert set(checks) == expected
    assert all(x["status"] == "ok" and isinstance(x["latency_ms"], float) for x in checks.values())

    c = api.client
    for _ in range(2):  # a miss, then a hit
        assert c.post("/v1/batch/stock", json={"product_ids": [p]}).status_code == 200
    assert c.get(f"/v1/products/{unique('P')}").status_code == 404
    text = anonymous.get("/metrics").text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    ok = 'stockctl_http_requests_total{method="POST",route="/v1/batch/stock",status="200"}'
    assert samples[ok] == 2.0
    missing = (
        'stockctl_http_requests_total{method="GET",route="/v1/products/{product_id}",status="404"}'
    )
    assert samples[missing] == 1.0
    assert samples["catalog_cache_hits_total"] >= 1.0
    assert samples["catalog_cache_misses_total"] >= 2.0
    for name in (
        "stockctl_http_request_duration_seconds",
        "catalog_stock_events_received_total",
        "catalog_stock_events_processed_total",
        "catalog_stock_event_processing_duration_seconds",
        "catalog_cache_hits_total",
        "catalog_cache_misses_total",
        "catalog_db_connections_active",
        "catalog_worker_queue_size",
    ):
        base = name.removesuffix("_total")
        assert re.search(rf"^# TYPE {base}(_total)? ", text, re.MULTILINE), name

    spec = anonymous.get("/openapi.json").json()
    paths = set(spec["paths"])
    for prefix in ("/v1", "/api/v1"):
        for route in (
            "/inventory",
            "/inventory/product/{product_id}",
            "/inventory/{inventory_id}",
            "/inventory/history",
            "/inventory/reservations",
            "/inventory/adjust",
            "/inventory/transfer",
            "/inventory/receive",
            "/inventory/reserve",
            "/inventory/checkout",
            "/inventory/reservations/{reservation_id}",
            "/inventory/reservations/{reservation_id}/confirm",
            "/inventory/reservations/{reservation_id}/release",
            "/inventory/reservations/{reservation_id}/extend",
            "/inventory/reservations/{reservation_id}/fulfil",
            "/inventory/reservations/release-order",
            "/batch/stock",
            "/inventory/recently-updated",
            "/products/{product_id}",
            "/products",
        ):
            assert prefix + route in paths, prefix + route
    for route in (
        "/health",
        "/health/ready",
        "/metrics",
        "/dapr/subscribe",
        "/events/stock-updated",
    ):
        assert route in paths, route
    reserve = spec["paths"]["/v1/inventory/reserve"]["post"]
    assert "expires_at" in str(spec["components"]["schemas"]["ReservationOut"])
    assert reserve["responses"]["201"]
    # How to authenticate is in the document: every route behind a scope names both schemes.
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "a token from settings `api_tokens`",
    }
    assert schemes["APIKeyHeader"]["in"] == "header"
    assert schemes["APIKeyHeader"]["name"] == "dapr-api-token"
    secured = [{"HTTPBearer": []}, {"APIKeyHeader": []}]
    assert reserve["security"] == secured
    assert spec["paths"]["/v1/products"]["get"]["security"] == secured
    assert "security" not in spec["paths"]["/health"]["get"]

    docs = anonymous.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "/openapi.json" in docs.text


def test_ready_reports_each_dependency_down(sqlite_url: str) -> None:
    with api_on(sqlite_url, redis_url="redis://127.0.0.1:1/0", redis_timeout_seconds=1) as api:
        r = api.client.get("/health/ready")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["status"] == "down"
        assert body["checks"]["database"]["status"] == "ok"
        assert body["checks"]["redis"]["status"] == "down"
        assert body["checks"]["redis"]["error"]
        assert api.client.get("/health").status_code == 200  # alive all the same
        # reads fall back to the database while the cache is down
        (p,), _ = seed(api.sc, 1, 2)
        r = api.client.post("/v1/batch/stock", json={"product_ids": [p, "nope"]})
        assert r.json() == {"stocks": {p: 20}, "missing": ["nope"]}, r.text
        assert api.client.get(f"/v1/products/{p}").json()["available"] == 20

    with api_on(
        "postgresql+psycopg://postgres@127.0.0.1:1/none", with_redis=False, init=False
    ) as api:
        r = api.client.get("/health/ready")
        assert r.status_code == 503, r.text
        assert r.json()["checks"]["database"]["status"] == "down"
        assert r.json()["checks"]["database"]["error"]
