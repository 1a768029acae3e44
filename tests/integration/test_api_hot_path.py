"""Issue 18's hot path keeps the API's answers: the stock check on the event loop (async fast
reads on PostgreSQL), the store's fast reads against SQLAlchemy's, routes serialised in the
worker thread, and the access log (one JSON line per request, secrets masked)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from stockctl.daemons.api.accesslog import ACCESS_LOGGER
from stockctl.daemons.api.deps import row_out
from stockctl.store.sql import SqlStore
from tests.apiutil import READ, READ_TOKEN, api_on, assert_problem, bearer, seed, unique


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def access_lines() -> Iterator[list[str]]:
    logger = logging.getLogger(ACCESS_LOGGER)
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_stock_check_answers_as_the_library_and_refuses_as_before(database_url: str) -> None:
    with api_on(database_url) as api:
        (p,), (w,) = seed(api.sc, 1, 1, qty=7)
        r = api.client.get("/v1/inventory", params={"product_id": p, "warehouse_id": w})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.json() == row_out(api.sc.stock(p, w).rows[0]).model_dump(mode="json")
        assert r.json()["sellable"] == 7
        other = unique("W")
        api.sc.add_warehouse(other)
        for params, slug in (
            ({"product_id": unique("P"), "warehouse_id": w}, "product-not-found"),
            ({"product_id": p, "warehouse_id": unique("W")}, "warehouse-not-found"),
            ({"product_id": p, "warehouse_id": other}, "inventory-not-found"),
        ):
            assert_problem(api.client.get("/v1/inventory", params=params), 404, slug)
        bad = api.client.get("/v1/inventory", params={"product_id": "a:b", "warehouse_id": w})
        assert_problem(bad, 422, "invalid-input")
        # served by the fast paths, product inventory and reserve answer as their models say
        rows = api.client.get(f"/api/v1/inventory/product/{p}").json()
        assert rows["total_sellable"] == 7 and len(rows["warehouses"]) == 1
        held = api.client.post(
            "/v1/inventory/reserve", json={"product_id": p, "warehouse_id": w, "quantity": 2}
        )
        assert held.status_code == 201, held.text


def test_fast_reads_give_the_rows_sqlalchemy_gives(pg_url: str) -> None:
    with api_on(pg_url) as api:
        (p, q), ws = seed(api.sc, 2, 3, qty=5)
        api.sc.reserve(p, ws[1], 2)
        store = api.app.store
        assert store.reads_async
        fast = [store.get_inventory(p, ws[1]), store.product_inventory(q)]
        fast_async = asyncio.run(store.get_inventory_async(p, ws[1]))
        missing = asyncio.run(store.get_inventory_async(p, unique("W")))
        plain = SqlStore(store.engine, fast_reads=False)  # the SQLAlchemy path
        assert not plain.reads_async
        assert fast == [plain.get_inventory(p, ws[1]), plain.product_inventory(q)]
        assert fast_async == fast[0] and missing is None
        assert fast[0] is not None and fast[0].reserved == 2
        assert fast[0].last_movement_at.tzinfo is not None
        assert [r.warehouse_id for r in fast[1]] == sorted(ws)


def test_access_log_is_one_json_line_per_request_with_secrets_masked(
    sqlite_url: str, access_lines: list[str]
) -> None:
    with api_on(sqlite_url) as api:
        (p,), (w,) = seed(api.sc, 1, 1)
        access_lines.clear()
        api.client.get(
            "/v1/inventory",
            params={"product_id": p, "warehouse_id": w, "token": "s3cr3t", "q": READ_TOKEN},
            headers=READ,
        )
        api.client.get(f"/v1/products/{READ_TOKEN}", headers=READ)
        api.client.get("/health")
    assert len(access_lines) == 3, access_lines
    check, by_path, health = (json.loads(line) for line in access_lines)
    assert set(check) == {"ts", "client", "request", "route", "status", "ms"}
    assert check["request"].startswith(f"GET /v1/inventory?product_id={p}&warehouse_id={w}")
    assert "token=***" in check["request"] and "q=***" in check["request"]
    assert check["route"] == "/v1/inventory" and check["status"] == 200
    assert check["ts"].endswith("Z") and check["ms"] >= 0
    assert by_path["request"] == "GET /v1/products/***" and by_path["status"] == 404
    assert health["route"] == "/health"
    text = "\n".join(access_lines)
    assert "s3cr3t" not in text and READ_TOKEN not in text


def test_the_stock_check_lane_answers_the_routes_bytes_and_leaves_the_rest_to_it(
    pg_url: str, access_lines: list[str]
) -> None:
    """The plain stock check is answered by the lane (``stock_lane``), with the bytes and
    headers the FastAPI route gives; every other form of it goes on to the route."""
    with api_on(pg_url) as api:
        (p,), (w, other) = seed(api.sc, 1, 2, qty=9)
        api.sc.reserve(p, w, 2)
        lane = api.client.app.state  # type: ignore[attr-defined]
        plain = api.client.get(f"/v1/inventory?product_id={p}&warehouse_id={w}", headers=READ)
        assert lane.stock_lane.served == 1
        routed = api.client.get(
            f"/api/v1/inventory?warehouse_id={w}&product_id={p}&x=1", headers=READ
        )
        assert lane.stock_lane.served == 1  # an extra parameter: the route's
        assert plain.status_code == routed.status_code == 200
        assert plain.content == routed.content
        assert plain.json()["sellable"] == 7 and plain.json()["quantity_reserved"] == 2
        for name in ("content-type", "content-length"):
            assert plain.headers[name] == routed.headers[name]
        flipped = api.client.get(f"/api/v1/inventory?warehouse_id={w}&product_id={p}")
        assert flipped.content == plain.content and lane.stock_lane.served == 2
        # what the lane does not answer, the route answers as before
        cases = [
            (f"product_id={p}&warehouse_id={w}", {}, 401, "unauthorized"),  # no token
            (f"product_id={p}&warehouse_id={w}", bearer("nope"), 401, "unauthorized"),
            (f"product_id={p}&warehouse_id={unique('W')}", READ, 404, "warehouse-not-found"),
            (f"product_id={unique('P')}&warehouse_id={w}", READ, 404, "product-not-found"),
            (f"product_id={p}&warehouse_id={other}x", READ, 404, "warehouse-not-found"),
            (f"product_id=a:b&warehouse_id={w}", READ, 422, "invalid-input"),
            (f"product_id={'P' * 65}&warehouse_id={w}", READ, 422, "invalid-input"),
            (f"product_id=&warehouse_id={w}", READ, 422, "invalid-input"),
            (f"product_id={p}&product_id={p}", READ, 422, "invalid-input"),
            (f"product_id={p}", READ, 422, "invalid-input"),
        ]
        for query, headers, status, slug in cases:
            no_auth = {"Authorization": ""} if not headers else headers
            got = api.client.get(f"/v1/inventory?{query}", headers=no_auth)
            assert_problem(got, status, slug)
        assert lane.stock_lane.served == 2
        # Dapr's header is the route's: answered there, as before
        dapr = api.client.get(
            f"/v1/inventory?product_id={p}&warehouse_id={w}",
            headers={"Authorization": "", "dapr-api-token": READ_TOKEN},
        )
        assert dapr.status_code == 200 and dapr.content == plain.content
        assert lane.stock_lane.served == 2
        # the lane's requests are logged under the route's template
        access_lines.clear()
        api.client.get(f"/v1/inventory?product_id={p}&warehouse_id={w}", headers=READ)
        (line,) = (json.loads(x) for x in access_lines)
        assert line["route"] == "/v1/inventory" and line["status"] == 200
        assert lane.stock_lane.served == 3


def test_the_reserve_lane_answers_as_the_route_and_leaves_the_rest_to_it(pg_url: str) -> None:
    """A plain reserve is answered by the lane (``reserve_lane``): the route's status, body and
    headers, its idempotency and its problems; any request the route's model would refuse, or
    that is not plain JSON with a bearer token, goes on to the route with its body."""
    with api_on(pg_url) as api:
        (p,), (w,) = seed(api.sc, 1, 1, qty=5)
        state = api.client.app.state  # type: ignore[attr-defined]
        routed_kind = {"Content-Type": "application/json; charset=UTF-8"}  # not the lane's

        def post(body: object, **headers: str) -> Any:
            raw = body if isinstance(body, str) else json.dumps(body)
            kind = {"Content-Type": "application/json", **headers}
            return api.client.post("/v1/inventory/reserve", content=raw, headers=kind)

        one = {"product_id": p, "warehouse_id": w, "quantity": 1, "order_id": "o-1"}
        lane = post(one)
        assert lane.status_code == 201, lane.text
        assert state.reserve_lane.served == 1
        routed = post(one, **routed_kind)
        assert routed.status_code == 201 and state.reserve_lane.served == 1
        assert lane.headers["content-type"] == routed.headers["content-type"]
        a, b = lane.json()["reservation"], routed.json()["reservation"]
        assert set(a) == set(b) and a["id"] != b["id"]
        assert {k: a[k] for k in ("product_id", "warehouse_id", "quantity", "status")} == {
            k: b[k] for k in ("product_id", "warehouse_id", "quantity", "status")
        }
        # idempotency: the lane and the route answer a key with the same reservation
        first = post(one, **{"Idempotency-Key": "k-1"})
        again = post(one, **{"Idempotency-Key": "k-1"})
        other_way = post(one, **{"Idempotency-Key": "k-1", **routed_kind})
        ids = {r.json()["reservation"]["id"] for r in (first, again, other_way)}
        assert len(ids) == 1 and state.reserve_lane.served == 3
        # the core's refusal: the route's problem, byte for byte
        big = {"product_id": p, "warehouse_id": w, "quantity": 50}
        refused, refused_routed = post(big), post(big, **routed_kind)
        assert_problem(refused, 409, "insufficient-stock")
        assert refused.content == refused_routed.content
        assert refused.headers["content-type"] == refused_routed.headers["content-type"]
        assert state.reserve_lane.served == 3  # a refusal is not counted as served
        # what the route's model or auth refuses goes on to the route, which says why
        cases: list[tuple[object, dict[str, str], int, str]] = [
            ({**one, "quantity": 0}, {}, 422, "invalid-input"),
            ({**one, "extra": 1}, {}, 422, "invalid-input"),
            ({**one, "product_id": "a:b"}, {}, 422, "invalid-input"),
            (f'{{"product_id":"{p}","quantity":1,"quantity":2}}', {}, 422, "invalid-input"),
            (f'{{"product_id":"{p}","quantity":NaN}}', {}, 422, "invalid-input"),
            ("not json", {}, 422, "invalid-input"),
            (one, {"Idempotency-Key": "k" * 201}, 422, "invalid-input"),
            (one, {"Authorization": ""}, 401, "unauthorized"),
            (one, {"Authorization": f"Bearer {READ_TOKEN}"}, 403, "forbidden"),
        ]
        for body, headers, status, slug in cases:
            assert_problem(post(body, **headers), status, slug)
        assert state.reserve_lane.served == 3
        held = api.sc.stock(p, w).rows[0]
        assert held.reserved == 3  # the lane's, the route's, the keyed one; nothing else


def test_concurrent_async_stock_reads_share_statements_and_give_each_its_row(
    pg_url: str,
) -> None:
    """The stock checks of one event-loop turn are read in one statement (``RowReads``):
    each gets the row a read of its own gives, a missing row is None."""
    with api_on(pg_url) as api:
        ps, ws = seed(api.sc, 3, 3, qty=4)
        api.sc.reserve(ps[1], ws[2], 3)
        store = api.app.store
        wanted = [(p, w) for p in ps for w in ws] + [(ps[0], ws[0]), (ps[0], unique("W"))]

        async def together() -> list[Any]:
            return await asyncio.gather(*(store.get_inventory_async(p, w) for p, w in wanted))

        before = store.row_reads.statements
        got = asyncio.run(together())
        assert store.row_reads.statements - before == 1
        assert got == [store.get_inventory(p, w) for p, w in wanted]
        assert got[-1] is None and got[5].reserved == 3
