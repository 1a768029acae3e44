"""The HTTP app behind ``stockctl serve``: routes under /v1 and /api/v1, problem details,
a body-size limit, and request metrics."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stockctl.__about__ import __version__
from stockctl.bootstrap import App
from stockctl.core.redact import guard_access_log
from stockctl.daemons.api import catalog, inventory, ops, schemas
from stockctl.daemons.api.accesslog import PREFIXES, RequestLog, route_label
from stockctl.daemons.api.deps import problem
from stockctl.daemons.api.fastpath import serialise_in_worker
from stockctl.daemons.api.lanes import (
    RESERVE_PATH,
    STOCK_PATH,
    ReserveLane,
    StockLane,
    lane_routes,
)
from stockctl.errors import StockctlError

log = logging.getLogger("stockctl.api")
PROBLEM = "application/problem+json"
ROUTE_ERRORS = (400, 401, 403, 404, 409, 410, 413, 422, 503)


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the problem details a route may answer."""
    return {s: {"model": schemas.Problem} for s in statuses}


def create_app(app: App) -> FastAPI:
    api = FastAPI(
        title="stockctl",
        version=__version__,
        description="Multi-warehouse stock: inventory, reservations, catalog stock.",
        # FastAPI's OpenTelemetry hooks: off (stockctl has its own metrics, /metrics); even
        # unconfigured they asked for the tracer and meter providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    api.state.stockctl = app
    secrets = frozenset(t.token.get_secret_value() for t in app.settings.api_tokens)
    guard_access_log(secrets)  # uvicorn's own access log, should it be turned on
    app.metrics()  # wire the counters before the first request
    serialise_in_worker(inventory.router)
    serialise_in_worker(catalog.router)
    for prefix in reversed(PREFIXES):
        api.include_router(inventory.router, prefix=prefix, responses=problems(*ROUTE_ERRORS))
        api.include_router(catalog.router, prefix=prefix, responses=problems(*ROUTE_ERRORS))
    api.include_router(ops.router)
    api.include_router(ops.dapr, responses=problems(401, 403, 413, 422))
    _errors(api)
    _document_problems(api)
    # innermost first: the stock check's lane runs inside the request log and the body limit
    for lane, path, method in ((StockLane, STOCK_PATH, "GET"), (ReserveLane, RESERVE_PATH, "POST")):
        routes = lane_routes(inventory.router, path, method, PREFIXES)
        api.add_middleware(lane, routes=routes, state=api.state)
    api.add_middleware(RequestLog, stockctl=app, secrets=secrets)
    api.add_middleware(BodyLimit, limit=app.settings.api_max_body_bytes)
    return api


def _document_problems(api: FastAPI) -> None:
    """Problems are served as application/problem+json: say so in the OpenAPI document
    (FastAPI files every response model under application/json)."""
    build = api.openapi
    ref = {"$ref": "#/components/schemas/Problem"}

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            spec = build()
            for operations in spec.get("paths", {}).values():
                for operation in operations.values():
                    for status, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        if (
                            status[0] in "45"
                            and content.get("application/json", {}).get("schema") == ref
                        ):
                            content[PROBLEM] = content.pop("application/json")
        return api.openapi_schema or build()

    api.openapi = openapi  # type: ignore[method-assign]


def _errors(api: FastAPI) -> None:
    @api.exception_handler(StockctlError)
    async def stockctl_error(request: Request, exc: StockctlError) -> JSONResponse:
        return JSONResponse(
            problem(exc.http_status, exc.message, exc.slug),
            status_code=exc.http_status,
            media_type=PROBLEM,
        )

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": _message(e)} for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        return JSONResponse(
            problem(422, detail, "invalid-input", errors=errors),
            status_code=422,
            media_type=PROBLEM,
        )

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {
            400: "bad-request",  # e.g. a body that is not UTF-8
            401: "unauthorized",
            403: "forbidden",
            404: "not-found",
            405: "method-not-allowed",
            413: "payload-too-large",
        }.get(exc.status_code, "http")
        return JSONResponse(
            problem(exc.status_code, str(exc.detail), slug),
            status_code=exc.status_code,
            media_type=PROBLEM,
            headers=getattr(exc, "headers", None),
        )

    @api.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            problem(500, "internal error", "internal"),
            status_code=500,
            media_type=PROBLEM,
        )


def _message(error: Any) -> str:
    """A field error's message; for a body that is not JSON, why (e.g. a duplicate key)."""
    if error.get("type") == "json_invalid":
        return f"invalid JSON: {(error.get('ctx') or {}).get('error', 'not JSON')}"
    return str(error.get("msg", ""))


class BodyLimit:
    """413 for a body over ``limit`` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, self.limit)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge(self.limit)
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(send, self.limit)


class _TooLarge(StarletteHTTPException):
    """An HTTP error, so that a route reading the body (FastAPI turns other errors raised
    while it reads into 400) answers 413 through the problem handler."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes")


async def _too_large(send: Send, limit: int) -> None:
    import json

    body = json.dumps(
        problem(413, f"request body over {limit} bytes", "payload-too-large")
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", PROBLEM.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


__all__ = ["PREFIXES", "create_app", "problems", "route_label"]
