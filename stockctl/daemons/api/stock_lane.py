"""The stock check's own lane: ``GET /v1/inventory?product_id=&warehouse_id=`` answered inside
the request log, before FastAPI's routing, exception middleware, dependency solving and
response handling, which cost more than the check itself (issue 18).

Only the plain request is answered here: exactly those two parameters, each once, each a
well-formed id (nothing percent-encoded), a bearer token (or none configured) granting
``read``, and a row that exists on a store with async fast reads. Anything else — a missing or
malformed parameter, an extra one, no or a wrong token, a row that is not there, SQLite — goes
on to the FastAPI route, which answers it (a 422, a 401, a 404...) exactly as before. The answer
is the route's own bytes: the same model, serialised by the same pydantic serializer, with the
same headers; a store error is the route's problem details. The route template is put in the
scope, so the request log and the metrics see the route the FastAPI path would have matched.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from stockctl.bootstrap import App
from stockctl.core.values import check_id
from stockctl.daemons.api import schemas
from stockctl.daemons.api.deps import grants, problem, row_out
from stockctl.errors import InvalidInput, StockctlError

PATH = "/inventory"
_JSON = (b"content-type", b"application/json")
_PROBLEM = (b"content-type", b"application/problem+json")
_to_json = schemas.InventoryRow.__pydantic_serializer__.to_json


class StockLane:
    def __init__(self, app: ASGIApp, stockctl: App, routes: dict[str, Any], state: Any) -> None:
        self.app = app
        self.stockctl = stockctl
        self.routes = routes  # full path -> the APIRoute the router would match
        self.served = 0  # answered here (the rest went on to the route)
        state.stock_lane = self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            route = self.routes.get(scope["path"])
            if route is not None:
                ids = _ids(scope["query_string"])
                if ids is not None and self._allowed(scope["headers"]):
                    if await self._answer(scope, send, route, *ids):
                        return
        await self.app(scope, receive, send)

    def _allowed(self, headers: list[tuple[bytes, bytes]]) -> bool:
        tokens = self.stockctl.settings.api_tokens
        if not tokens:
            return True
        for name, value in headers:
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer" or not credentials.strip():
                    return False
                return "read" in (grants(tokens, credentials.strip()) or ())
        return False

    async def _answer(self, scope: Scope, send: Send, route: Any, p: str, w: str) -> bool:
        store = self.stockctl.ctx.store
        if not getattr(store, "reads_async", False):
            return False
        try:
            row = await store.get_inventory_async(p, w)  # type: ignore[attr-defined]
        except StockctlError as exc:  # as the route's exception handler answers it
            body = orjson.dumps(problem(exc.http_status, exc.message, exc.slug))
            scope["route"] = route
            await _send(send, exc.http_status, _PROBLEM, body)
            return True
        if row is None:  # which of product, warehouse or row is unknown: the route says
            return False
        scope["route"] = route
        self.served += 1
        await _send(send, 200, _JSON, _to_json(row_out(row), by_alias=True))
        return True


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
    try:
        if p is None or w is None or len(p) > 64 or len(w) > 64:
            return None
        return check_id(p, "product"), check_id(w, "warehouse")
    except InvalidInput:
        return None


async def _send(send: Send, status: int, kind: tuple[bytes, bytes], body: bytes) -> None:
    headers = [(b"content-length", str(len(body)).encode()), kind]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def lane_routes(router: Any, prefixes: tuple[str, ...]) -> dict[str, Any]:
    """The stock check's GET route of ``router`` (as declared there: the request log prefixes
    its template from the request path), by the full path it is served under."""
    for route in router.routes:
        if getattr(route, "path", None) == PATH and "GET" in route.methods:
            return {prefix + PATH: route for prefix in prefixes}
    raise LookupError(f"no GET {PATH} route")
