"""The HTTP app behind ``stockctl serve``: routes under /v1 and /api/v1, problem details,
a body-size limit, and request metrics."""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stockctl.__about__ import __version__
from stockctl.api import catalog, inventory, ops
from stockctl.api.deps import problem
from stockctl.bootstrap import App
from stockctl.errors import StockctlError

log = logging.getLogger("stockctl.api")
PROBLEM = "application/problem+json"


def create_app(app: App) -> FastAPI:
    api = FastAPI(
        title="stockctl",
        version=__version__,
        description="Multi-warehouse stock: inventory, reservations, catalog stock.",
    )
    api.state.stockctl = app
    app.metrics()  # wire the counters before the first request
    for prefix in ("/v1", "/api/v1"):
        api.include_router(inventory.router, prefix=prefix)
        api.include_router(catalog.router, prefix=prefix)
    api.include_router(ops.router)
    api.include_router(ops.dapr)
    _errors(api)
    api.add_middleware(RequestMetrics, stockctl=app)
    api.add_middleware(BodyLimit, limit=app.settings.api_max_body_bytes)
    return api


def _errors(api: FastAPI) -> None:
    @api.exception_handler(StockctlError)
    async def stockctl_error(request: Request, exc: StockctlError) -> JSONResponse:
        title = type(exc).__name__
        return JSONResponse(
            problem(exc.http_status, title, exc.message, exc.slug),
            status_code=exc.http_status,
            media_type=PROBLEM,
        )

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        return JSONResponse(
            problem(422, "InvalidInput", detail, "invalid-input", errors=errors),
            status_code=422,
            media_type=PROBLEM,
        )

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {
            401: "unauthorized",
            403: "forbidden",
            404: "not-found",
            405: "method-not-allowed",
            413: "payload-too-large",
        }.get(exc.status_code, "http")
        return JSONResponse(
            problem(exc.status_code, slug.replace("-", " ").title(), str(exc.detail), slug),
            status_code=exc.status_code,
            media_type=PROBLEM,
            headers=getattr(exc, "headers", None),
        )

    @api.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            problem(500, "InternalError", "internal error", "internal"),
            status_code=500,
            media_type=PROBLEM,
        )


class BodyLimit:
    """413 for a body over ``limit`` bytes, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, self.limit)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(send, self.limit)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    import json

    body = json.dumps(
        problem(413, "PayloadTooLarge", f"request body over {limit} bytes", "payload-too-large")
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


class RequestMetrics:
    """Counts and times requests by method, route template and status."""

    def __init__(self, app: ASGIApp, stockctl: App) -> None:
        self.app = app
        self.stockctl = stockctl

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            m = self.stockctl.metrics()
            m.http_requests.labels(scope["method"], path, str(status)).inc()
            m.http_latency.labels(scope["method"], path).observe(time.perf_counter() - started)
