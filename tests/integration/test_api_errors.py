"""Refusals of the HTTP API: RFC 9457 problem details with a stable type, never a traceback;
limits (ids per call, body size, quantities); bearer tokens and their scopes; tokens never
logged."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from stockctl.core import inventory
from tests.apiutil import (
    ADMIN,
    ADMIN_TOKEN,
    READ,
    READ_TOKEN,
    RESERVE,
    RESERVE_TOKEN,
    Api,
    api_on,
    assert_problem,
    bearer,
    seed,
    unique,
)


@pytest.fixture
def api(sqlite_url: str) -> Iterator[Api]:
    with api_on(sqlite_url) as api:
        yield api


@pytest.fixture
def both(database_url: str) -> Iterator[Api]:
    with api_on(database_url) as api:
        yield api


def held(api: Api, product_id: str) -> int:
    return api.sc.stock(product_id).total_reserved


def test_reserve_more_than_sellable_is_409_insufficient_stock(both: Api) -> None:
    (p,), (w, _) = seed(both.sc, 1, 2)
    both.sc.reserve(p, w, 4)
    c = both.client
    body = assert_problem(
        c.post("/v1/inventory/reserve", json={"product_id": p, "warehouse_id": w, "quantity": 7}),
        409,
        "insufficient-stock",
    )
    assert body["title"] and p in body["detail"]
    assert held(both, p) == 4
    # any warehouse: 16 sellable over both, none holds 17
    assert_problem(
        c.post("/v1/inventory/reserve", json={"product_id": p, "quantity": 17}),
        409,
        "insufficient-stock",
    )
    ok = c.post("/v1/inventory/reserve", json={"product_id": p, "warehouse_id": w, "quantity": 6})
    assert ok.status_code == 201, ok.text  # exactly the sellable rest
    assert held(both, p) == 10


def test_expired_reservation_is_410(both: Api) -> None:
    (p,), (w, _) = seed(both.sc, 1, 2)
    c = both.client
    r = c.post(
        "/v1/inventory/reserve",
        json={"product_id": p, "warehouse_id": w, "quantity": 2, "ttl_seconds": 60},
    )
    assert r.status_code == 201, r.text
    rid = r.json()["reservation"]["id"]
    real = both.app.ctx.clock
    both.app.ctx = dataclasses.replace(both.app.ctx, clock=lambda: real() + timedelta(minutes=2))
    assert_problem(c.post(f"/v1/inventory/reservations/{rid}/confirm"), 410, "reservation-expired")
    assert_problem(
        c.post(f"/v1/inventory/reservations/{rid}/extend", json={"ttl_seconds": 60}),
        410,
        "reservation-expired",
    )
    # releasing an expired hold is a successful no-op, and the units are free again
    r = c.post(f"/v1/inventory/reservations/{rid}/release")
    assert r.status_code == 200 and r.json()["status"] in ("EXPIRED", "RELEASED"), r.text
    assert held(both, p) == 0


def test_unknown_ids_are_404(api: Api) -> None:
    (p,), (w, _) = seed(api.sc, 1, 2)
    c = api.client
    ghost_p, ghost_w = unique("P"), unique("W")
    ghost_r = 2**62 + 77
    cases = [
        (c.post, "/v1/inventory/reserve", {"product_id": ghost_p, "quantity": 1}, "product"),
        (
            c.post,
            "/v1/inventory/reserve",
            {"product_id": p, "warehouse_id": ghost_w, "quantity": 1},
            "warehouse",
        ),
        (
            c.post,
            "/v1/inventory/adjust",
            {"product_id": ghost_p, "warehouse_id": w, "delta": 1, "reason": "x"},
            "product",
        ),
        (
            c.post,
            "/v1/inventory/transfer",
            {"product_id": p, "from_warehouse_id": w, "to_warehouse_id": ghost_w, "quantity": 1},
            "warehouse",
        ),
        (
            c.put,
            f"/v1/inventory/product/{ghost_p}",
            {"warehouse_id": w, "quantity_available": 1},
            "product",
        ),
        (c.put, f"/v1/inventory/{2**62 + 1}", {"quantity_available": 1}, "inventory"),
        (c.get, f"/v1/inventory/reservations/{ghost_r}", None, "reservation"),
        (c.post, f"/v1/inventory/reservations/{ghost_r}/confirm", None, "reservation"),
        (c.post, f"/v1/inventory/reservations/{ghost_r}/release", None, "reservation"),
        (
            c.post,
            f"/v1/inventory/reservations/{ghost_r}/extend",
            {"ttl_seconds": 5},
            "reservation",
        ),
        (c.post, f"/v1/inventory/reservations/{ghost_r}/fulfil", None, "reservation"),
        (c.get, f"/v1/products/{ghost_p}", None, "product"),
        (c.get, f"/v1/inventory/product/{ghost_p}", None, "product"),
    ]
    for method, path, body, kind in cases:
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        assert_problem(method(path, **kwargs), 404, f"{kind}-not-found")
    assert_problem(c.get("/v1/no-such-route"), 404, "not-found")
    assert_problem(c.delete(f"/v1/inventory/{p}"), 405, "method-not-allowed")


RESERVE_OK = {"product_id": "PX", "warehouse_id": "WX", "quantity": 1}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/inventory/reserve", {**RESERVE_OK, "quantity": 0}),
        ("/v1/inventory/reserve", {**RESERVE_OK, "quantity": -1}),
        ("/v1/inventory/reserve", {**RESERVE_OK, "quantity": 2**31}),
        ("/v1/inventory/reserve", {**RESERVE_OK, "quantity": 10**30}),
        ("/v1/inventory/reserve", {**RESERVE_OK, "quantity": 1.5}),
        ("/v1/inventory/reserve", {**RESERVE_OK, "quantity": None}),
        ("/v1/inventory/reserve", {**RESERVE_OK, "product_id": "bad id!"}),
        ("/v1/inventory/reserve", {**RESERVE_OK, "product_id": ""}),
        ("/v1/inventory/reserve", {**RESERVE_OK, "product_id": "x" * 65}),
        ("/v1/inventory/reserve", {**RESERVE_OK, "warehouse_id": "../etc"}),
        ("/v1/inventory/reserve", {**RESERVE_OK, "ttl_seconds": 0}),
        ("/v1/inventory/reserve", {**RESERVE_OK, "extra": 1}),
        ("/v1/inventory/reserve", {"product_id": "PX"}),
        ("/v1/inventory/reserve", [RESERVE_OK]),
        ("/v1/inventory/reserve", "not json"),
        ("/v1/inventory/receive", {**RESERVE_OK, "quantity": 0}),
        ("/v1/inventory/adjust", {"product_id": "PX", "warehouse_id": "WX", "delta": 2**31}),
        ("/v1/inventory/transfer", {**RESERVE_OK, "from_warehouse_id": "WX"}),
        ("/v1/inventory/checkout", {"items": []}),
        ("/v1/inventory/checkout", {"items": [{**RESERVE_OK, "quantity": 0}]}),
        ("/v1/batch/stock", {"product_ids": []}),
        ("/v1/batch/stock", {"product_ids": ["ok", "not ok"]}),
        ("/v1/batch/stock", {"product_ids": [f"P{i}" for i in range(1001)]}),
        ("/v1/inventory/recently-updated", {"since": "yesterday"}),
        ("/v1/inventory/recently-updated", {"since": "2024-01-01T00:00:00Z", "limit": 1001}),
        ("/v1/inventory/recently-updated", {"since": "2024-01-01T00:00:00Z", "page": 0}),
        ("/v1/inventory/reservations/release-order", {"order_id": ""}),
    ],
)
def test_invalid_body_is_422(api: Api, path: str, body: Any) -> None:
    (p,), _ = seed(api.sc, 1, 1)
    before = api.sc.stock(p)
    if isinstance(body, str):
        r = api.client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = api.client.post(path, json=body)
    problem = assert_problem(r, 422, "invalid-input")
    assert problem["errors"] and all("loc" in e and "msg" in e for e in problem["errors"])
    assert api.sc.stock(p) == before


def test_invalid_path_and_query_are_422(api: Api) -> None:
    c = api.client
    for r in (
        c.put(
            "/v1/inventory/product/bad%20id", json={"warehouse_id": "W", "quantity_available": 1}
        ),
        c.put("/v1/inventory/bad%20id", json={"quantity_available": 1}),
        c.put("/v1/inventory/0", json={"quantity_available": 1}),
        c.put("/v1/inventory/-4", json={"quantity_available": 1}),
        c.get("/v1/inventory/reservations/not-a-number"),
        c.get("/v1/inventory/reservations/1.5"),
        c.post("/v1/inventory/reservations/not-a-number/confirm"),
        c.post(f"/v1/inventory/reservations/{2**63}/confirm"),
        c.get("/v1/products/bad%20id"),
        *(c.get("/v1/products", params={"limit": q}) for q in (" 5", "5.0", "+5", "1_0", "٥")),
        c.get("/v1/products", params={"offset": "-1"}),
        c.get("/v1/inventory/history", params={"product_id": "P", "limit": "5.0"}),
        c.get("/v1/inventory/reservations", params={"limit": " 7"}),
        c.get("/v1/inventory", params={"product_id": "P"}),
        c.get("/v1/inventory", params={"product_id": "P", "warehouse_id": "x" * 65}),
        c.get("/v1/products", params={"limit": 1001}),
        c.get("/v1/products", params={"limit": 0}),
        c.get("/v1/products", params={"offset": -1}),
        c.get("/v1/products", params={"limit": "ten"}),
    ):
        assert_problem(r, 422, "invalid-input")


def test_bulk_stock_takes_1000_ids_not_1001(api: Api) -> None:
    (p,), _ = seed(api.sc, 1, 1)
    ids = [p] + [f"P{i:06d}" for i in range(999)]
    r = api.client.post("/v1/batch/stock", json={"product_ids": ids})
    assert r.status_code == 200, r.text
    assert r.json()["stocks"] == {p: 10} and len(r.json()["missing"]) == 999
    problem = assert_problem(
        api.client.post("/v1/batch/stock", json={"product_ids": [*ids, "P999999"]}),
        422,
        "invalid-input",
    )
    assert "1000" in problem["detail"]


def test_oversized_body_is_413(sqlite_url: str) -> None:
    with api_on(sqlite_url, api_max_body_bytes=1024) as api:
        (p,), _ = seed(api.sc, 1, 1)
        c = api.client
        big = {"product_ids": [p] * 200}  # about 2.6 KB
        assert_problem(c.post("/v1/batch/stock", json=big), 413, "payload-too-large")

        def chunks() -> Iterator[bytes]:  # no content-length: counted as it streams
            yield b'{"product_ids": ['
            for _ in range(200):
                yield f'"{p}",'.encode()
            yield f'"{p}"]}}'.encode()

        assert_problem(
            c.post(
                "/v1/batch/stock", content=chunks(), headers={"content-type": "application/json"}
            ),
            413,
            "payload-too-large",
        )
        assert_problem(
            c.post("/events/stock-updated", content=b"x" * 2000, headers=RESERVE),
            413,
            "payload-too-large",
        )
        small = c.post("/v1/batch/stock", json={"product_ids": [p] * 20})
        assert small.status_code == 200 and small.json()["stocks"] == {p: 10}


# -- auth


def test_missing_or_invalid_token_is_401(api: Api) -> None:
    (p,), _ = seed(api.sc, 1, 1)
    anonymous = TestClient(api.client.app)
    for headers in (
        {},
        bearer("not-a-configured-token-at-all"),
        bearer(ADMIN_TOKEN[:-1]),
        bearer(""),
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": ADMIN_TOKEN},
        {"dapr-api-token": "wrong-wrong-wrong-wrong"},
    ):
        for r in (
            anonymous.get(f"/v1/products/{p}", headers=headers),
            anonymous.post(
                "/v1/inventory/reserve", json={"product_id": p, "quantity": 1}, headers=headers
            ),
        ):
            assert_problem(r, 401, "unauthorized")
            assert r.headers["www-authenticate"] == "Bearer"
    assert held(api, p) == 0
    # liveness, readiness, metrics and the schema stay open
    for path in ("/health", "/health/ready", "/metrics", "/openapi.json", "/docs"):
        assert anonymous.get(path).status_code == 200, path


def test_wrong_scope_is_403(api: Api) -> None:
    (p,), (w,) = seed(api.sc, 1, 1)
    anonymous = TestClient(api.client.app)
    rid = api.sc.reserve(p, w, 1).id
    w2 = unique("W")
    api.sc.add_warehouse(w2)
    move = {"product_id": p, "quantity": 1}
    reserve = {"product_id": p, "warehouse_id": w, "quantity": 1}
    admin_only = [
        ("PUT", f"/v1/inventory/{p}", {"warehouse_id": w, "quantity_available": 5}),
        (
            "POST",
            "/v1/inventory/adjust",
            {"product_id": p, "warehouse_id": w, "delta": 1, "reason": "x"},
        ),
        ("POST", "/v1/inventory/transfer", {**move, "from_warehouse_id": w, "to_warehouse_id": w2}),
        ("POST", "/v1/inventory/receive", reserve),
        ("POST", f"/v1/inventory/reservations/{rid}/fulfil", None),
    ]
    reserve_only = [
        ("POST", "/v1/inventory/reserve", reserve),
        ("POST", "/v1/inventory/checkout", {"items": [reserve]}),
        ("POST", f"/v1/inventory/reservations/{rid}/confirm", None),
        ("POST", f"/v1/inventory/reservations/{rid}/release", None),
        ("POST", f"/v1/inventory/reservations/{rid}/extend", {"ttl_seconds": 5}),
        ("POST", "/v1/inventory/reservations/release-order", {"order_id": "o"}),
        ("POST", "/events/stock-updated", {}),
    ]
    before = api.sc.stock(p)
    for tokens, routes, scope in (
        ((READ, RESERVE), admin_only, "admin"),
        ((READ,), reserve_only, "reserve"),
    ):
        for headers in tokens:
            for method, path, body in routes:
                r = anonymous.request(method, path, json=body, headers=headers)
                problem = assert_problem(r, 403, "forbidden")
                assert scope in problem["detail"]
    assert api.sc.stock(p) == before
    assert api.sc.get_reservation(rid).status.value == "ACTIVE"

    # each scope does what it grants; admin implies reserve implies read
    assert anonymous.get(f"/v1/products/{p}", headers=READ).status_code == 200
    assert anonymous.post("/v1/batch/stock", json={"product_ids": [p]}, headers=READ).is_success
    r = anonymous.post(f"/v1/inventory/reservations/{rid}/confirm", headers=RESERVE)
    assert r.status_code == 200, r.text
    r = anonymous.post(f"/v1/inventory/reservations/{rid}/fulfil", headers=ADMIN)
    assert r.status_code == 200, r.text
    # Dapr's sidecar sends its token in dapr-api-token
    r = anonymous.post(
        "/v1/inventory/reserve", json=reserve, headers={"dapr-api-token": RESERVE_TOKEN}
    )
    assert r.status_code == 201, r.text


def test_no_tokens_configured_means_open_routes(sqlite_url: str) -> None:
    """With no token the daemon binds to loopback only (see test_serve), and routes are open."""
    with api_on(sqlite_url, api_tokens=[]) as api:
        (p,), (w,) = seed(api.sc, 1, 1)
        anonymous = TestClient(api.client.app)
        r = anonymous.post("/v1/inventory/reserve", json={"product_id": p, "quantity": 1})
        assert r.status_code == 201, r.text


def test_tokens_never_appear_in_logs(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    (p,), (w,) = seed(api.sc, 1, 1)
    anonymous = TestClient(api.client.app, raise_server_exceptions=False)
    wrong = "wrong-token-5b1f0c9e7d3a"
    for token in (ADMIN_TOKEN, RESERVE_TOKEN, READ_TOKEN, wrong):
        headers = bearer(token)
        anonymous.get(f"/v1/products/{p}", headers=headers)
        anonymous.post(
            "/v1/inventory/reserve", json={"product_id": p, "quantity": 1}, headers=headers
        )
        anonymous.post(
            "/v1/inventory/reserve", json={"product_id": p, "quantity": 0}, headers=headers
        )
        anonymous.post(f"/v1/inventory/reservations/{unique('x')}/confirm", headers=headers)
        anonymous.post("/events/stock-updated", content=b"{", headers=headers)
        anonymous.get("/health/ready", headers={**headers, "dapr-api-token": token})
    assert caplog.records, "nothing was logged: the check would prove nothing"
    logged = caplog.text + "".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''} {r.__dict__!r}" for r in caplog.records
    )
    for token in (ADMIN_TOKEN, RESERVE_TOKEN, READ_TOKEN, wrong):
        assert token not in logged


def test_unexpected_error_is_500_problem_without_traceback(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (p,), (w,) = seed(api.sc, 1, 1)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals 0xdeadbeef")

    monkeypatch.setattr(inventory, "stock", broken)
    client = TestClient(api.client.app, raise_server_exceptions=False, headers=ADMIN)
    r = client.get(f"/v1/inventory/product/{p}")
    assert_problem(r, 500, "internal")
    assert "0xdeadbeef" not in r.text and "RuntimeError" not in r.text
    assert "0xdeadbeef" in caplog.text  # the operator still gets it in the log
