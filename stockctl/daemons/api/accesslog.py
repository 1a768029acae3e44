"""Per request, in one ASGI middleware: the Prometheus counters and the access log.

The access log is one JSON object per line on stdout, through the ``stockctl.access`` logger::

    {"ts":"2026-12-03T09:41:07.532Z","client":"127.0.0.1:50512",
     "request":"GET /v1/inventory?product_id=P000001&warehouse_id=WH001",
     "route":"/v1/inventory","status":200,"ms":0.61}

(here wrapped; one line each in the log).
It replaces uvicorn's access log (``serve`` and ``up`` run uvicorn with ``access_log=False``),
which cost about a tenth of a request (a colourising formatter, a caller lookup per line). Here a
line is one ``orjson.dumps`` and one ``LogRecord`` handed to the logger's handlers (filters and
handlers still apply; the caller lookup is skipped). The request target goes through
:func:`stockctl.core.redact.mask_path`: secret-named query parameters and the configured API tokens
are masked; headers (the bearer token) are never logged.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stockctl.bootstrap import App
from stockctl.core.redact import mask_path

ACCESS_LOGGER = "stockctl.access"
PREFIXES = ("/api/v1", "/v1")  # longest first

access_log = logging.getLogger(ACCESS_LOGGER)
_INFO = logging.INFO


def configure_access_log() -> None:
    """The access log on stdout, one JSON line per request (idempotent). Without this call
    (the library, the tests' in-process apps) the logger is left as logging's set-up has it."""
    if any(getattr(h, "_stockctl_access", False) for h in access_log.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._stockctl_access = True  # type: ignore[attr-defined]
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False  # not a second time, as text, through the root handler


class _Clock:
    """RFC 3339 UTC timestamps with milliseconds; the seconds part is formatted once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def now(self) -> str:
        t = time.time()
        second = int(t)
        if second != self.second:
            self.second = second
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self.prefix}.{int((t - second) * 1000):03d}Z"


class RequestLog:
    """Counts and times requests by method, route template and status, and writes the access
    line. One ``send`` wrapper and one clock read per request serve both."""

    def __init__(self, app: ASGIApp, stockctl: App, secrets: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.stockctl = stockctl
        self.secrets = secrets
        self.clock = _Clock()

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
            elapsed = time.perf_counter() - started
            method = scope["method"]
            path = route_label(scope)
            m = self.stockctl.metrics()
            m.http_requests.labels(method, path, str(status)).inc()
            m.http_latency.labels(method, path).observe(elapsed)
            if access_log.isEnabledFor(_INFO):
                self._log(scope, method, path, status, elapsed)

    def _log(self, scope: Scope, method: str, route: str, status: int, elapsed: float) -> None:
        target = scope.get("path", "")
        query = scope.get("query_string", b"")
        if query:
            target = f"{target}?{query.decode('latin-1')}"
        client = scope.get("client")
        line = orjson.dumps(
            {
                "ts": self.clock.now(),
                "client": f"{client[0]}:{client[1]}" if client else None,
                "request": f"{method} {mask_path(target, self.secrets)}",
                "route": route,
                "status": status,
                "ms": round(elapsed * 1000, 3),
            }
        ).decode()
        record = access_log.makeRecord(ACCESS_LOGGER, _INFO, "", 0, line, (), None)
        access_log.handle(record)


def route_label(scope: Scope) -> str:
    """The matched route's full template (``/v1/products/{product_id}``), or ``unmatched``.

    FastAPI may put the route as declared in its router into the scope, without the prefix it
    was included under: the prefix is then taken from the request path.
    """
    template = str(getattr(scope.get("route"), "path", None) or "")
    if not template:
        return "unmatched"
    path = scope.get("path", "")
    for prefix in PREFIXES:
        if path.startswith(prefix + "/"):
            return template if template.startswith(prefix + "/") else prefix + template
    return template
