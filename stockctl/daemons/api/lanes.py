"""The hottest routes' own lanes, inside the request log and before FastAPI's routing,
exception middleware, dependency solving and body handling, which cost more than the work of
the request itself (issue 18):

- ``StockLane``: the stock check, ``GET /v1/inventory?product_id=&warehouse_id=``;
- ``ReserveLane``: ``POST /v1/inventory/reserve``.

A lane answers only the plain request: for the stock check exactly those two parameters, each
once, each a well-formed id (nothing percent-encoded), and a row that exists on a store with
async fast reads; for the reserve a JSON body that the route's own model accepts, and at most
one ``Idempotency-Key`` of at most 200 characters; for both, a bearer token granting the scope
(or no tokens configured). Anything else — a missing, malformed or extra parameter, a body the
model refuses, no or a wrong token, Dapr's header, a row that is not there, SQLite — goes on to
the FastAPI route (with the body as it came), which answers it exactly as before. A lane's
answer is the route's: the same core call, the same model serialised by the same pydantic
serializer, the same status and headers, and the route's problem details for the core's
errors. The route is put in the scope, so the request log and the metrics label it as the
FastAPI path would.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stockctl.bootstrap import App
from stockctl.core import reservations
from stockctl.core.values import MAX_IDEMPOTENCY_KEY, check_id
from stockctl.daemons.api import schemas
from stockctl.daemons.api.deps import grants, problem, reservation_out, row_out
from stockctl.daemons.api.fastpath import in_worker
from stockctl.daemons.api.strict import loads
from stockctl.errors import InvalidInput, StockctlError

STOCK_PATH = "/inventory"
RESERVE_PATH = "/inventory/reserve"
_JSON = (b"content-type", b"application/json")
_PROBLEM = (b"content-type", b"application/problem+json")
_row_json = schemas.InventoryRow.__pydantic_serializer__.to_json
_reserved_json = schemas.Reserved.__pydantic_serializer__.to_json


class StockLane:
    def __init__(self, app: ASGIApp, routes: dict[str, Any], state: Any) -> None:
        self.app = app
        self.routes = routes  # full path -> the APIRoute the router would match
        self.served = 0  # answered here (the rest went on to the route)
        state.stock_lane = self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            route = self.routes.get(scope["path"])
            if route is not None:
                ids = _ids(scope["query_string"])
                app = app_of(scope)
                if ids is not None and allowed(app, scope["headers"], "read"):
                    if await self._answer(app, scope, send, route, *ids):
                        return
        await self.app(scope, receive, send)

    async def _answer(self, app: App, scope: Scope, send: Send, route: Any, p: str, w: str) -> bool:
        store = app.ctx.store
        if not getattr(store, "reads_async", False):
            return False
        try:
            row = await store.get_inventory_async(p, w)  # type: ignore[attr-defined]
        except StockctlError as exc:
            scope["route"] = route
            await refused(send, exc)
            return True
        if row is None:  # which of product, warehouse or row is unknown: the route says
            return False
        scope["route"] = route
        self.served += 1
        await answer(send, 200, _row_json(row_out(row), by_alias=True))
        return True


class ReserveLane:
    def __init__(self, app: ASGIApp, routes: dict[str, Any], state: Any) -> None:
        self.app = app
        self.routes = routes
        self.served = 0
        state.reserve_lane = self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = self.routes.get(scope["path"])
            if route is not None:
                plain, key = _plain_reserve(scope["headers"])
                app = app_of(scope)
                if plain and allowed(app, scope["headers"], "reserve"):
                    scope["route"] = route  # a body over the limit is a 413 of this route
                    body = await _read_body(receive)
                    if await self._answer(app, send, body, key):
                        return
                    receive = _replay(body, receive)
        await self.app(scope, receive, send)

    async def _answer(self, app: App, send: Send, body: bytes, key: str | None) -> bool:
        try:
            r = schemas.Reserve.model_validate(loads(body))
        except Exception:  # not JSON, or not what the model takes: the route says why
            return False
        ttl = None if r.ttl_seconds is None else timedelta(seconds=r.ttl_seconds)
        try:
            held = await in_worker(
                partial(
                    reservations.reserve,
                    app.ctx,
                    r.product_id,
                    r.warehouse_id,
                    r.quantity,
                    ttl=ttl,
                    order_id=r.order_id,
                    idempotency_key=key,
                )
            )
        except StockctlError as exc:
            await refused(send, exc)
            return True
        self.served += 1
        out = schemas.Reserved(reservation=reservation_out(held))
        await answer(send, 201, _reserved_json(out, by_alias=True))
        return True


def app_of(scope: Scope) -> App:
    """The App the routes use (``deps.app_of``): the FastAPI app's ``state.stockctl``."""
    app: App = scope["app"].state.stockctl
    return app


def allowed(app: App, headers: list[tuple[bytes, bytes]], scope: str) -> bool:
    """A bearer token granting ``scope`` (as the route's ``require`` reads it), or no tokens."""
    tokens = app.settings.api_tokens
    if not tokens:
        return True
    for name, value in headers:
        if name == b"authorization":
            kind, _, credentials = value.decode("latin-1").partition(" ")
            if kind.lower() != "bearer" or not credentials.strip():
                return False
            return scope in (grants(tokens, credentials.strip()) or ())
    return False


def _ids(query: bytes) -> tuple[str, str] | None:
    """(product_id, warehouse_id) of the plain query, else None (the route reads the rest)."""
    if b"%" in query or b"+" in query:
        return None
    parts = query.split(b"&")
    if len(parts) != 2:
        return None
    got: dict[bytes, str] = {}
    for part in parts:
        name, eq, value = part.partition(b"=")
        if not eq or name in got or name not in (b"product_id", b"warehouse_id"):
            return None
        got[name] = value.decode("latin-1")
    p, w = got.get(b"product_id"), got.get(b"warehouse_id")
    if p is None or w is None:
        return None
    try:  # 1-64 characters of the id alphabet, as the route's query and the core check them
        return check_id(p, "product"), check_id(w, "warehouse")
    except InvalidInput:
        return None


def _plain_reserve(headers: list[tuple[bytes, bytes]]) -> tuple[bool, str | None]:
    """(a JSON request the lane takes, its Idempotency-Key or None)."""
    kind = key = None
    for name, value in headers:
        if name == b"content-type":
            if kind is not None:
                return False, None
            kind = value
        elif name == b"idempotency-key":
            if key is not None:
                return False, None
            key = value.decode("latin-1")
    if kind not in (b"application/json", b"application/json; charset=utf-8"):
        return False, None
    return key is None or len(key) <= MAX_IDEMPOTENCY_KEY, key


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # a disconnect: the route gets the same (empty) body
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body as it came, then the connection's own messages (a disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def refused(send: Send, exc: StockctlError) -> None:
    """The core's error as the route's exception handler answers it."""
    body = orjson.dumps(problem(exc.http_status, exc.message, exc.slug))
    await _send(send, exc.http_status, _PROBLEM, body)


async def answer(send: Send, status: int, body: bytes) -> None:
    await _send(send, status, _JSON, body)


async def _send(send: Send, status: int, kind: tuple[bytes, bytes], body: bytes) -> None:
    headers = [(b"content-length", str(len(body)).encode()), kind]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def lane_routes(router: Any, path: str, method: str, prefixes: tuple[str, ...]) -> dict[str, Any]:
    """``router``'s route for ``method`` ``path`` (as declared there: the request log prefixes
    its template from the request path), by each full path it is served under."""
    for route in router.routes:
        if getattr(route, "path", None) == path and method in route.methods:
            return {prefix + path: route for prefix in prefixes}
    raise LookupError(f"no {method} {path} route")
