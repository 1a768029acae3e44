"""Ops routes: liveness, readiness, metrics; and Dapr's subscription and push delivery."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import PlainTextResponse

from stockctl.core import lifecycle
from stockctl.core.catalog import TOPICS, project
from stockctl.core.envelope import InvalidEvent, parse
from stockctl.daemons.api import schemas
from stockctl.daemons.api.deps import AppDep, require
from stockctl.errors import DependencyUnavailable

router = APIRouter(tags=["ops"])
dapr = APIRouter(tags=["dapr"])


def route_for(topic: str) -> str:
    """``warehouse.stock.updated`` -> ``/events/stock-updated`` (the guide's routes)."""
    name = topic.removeprefix("warehouse.").replace(".", "-").replace("_", "-")
    return f"/events/{name}"


ROUTES = {route_for(t): t for t in TOPICS}


@router.get("/health")
async def health() -> schemas.Health:
    """The process is alive (answered on the event loop: never queued behind slow requests)."""
    return schemas.Health(status="ok")


@router.get("/health/ready", responses={503: {"model": schemas.Health}})
def ready(app: AppDep, response: Response) -> schemas.Health:
    """Database and (when configured) Redis answer; per-dependency detail. Redis is asked
    through the read path's breaker: while it is open (Redis stalled or lost) the check says so
    at once, without waiting on Redis."""
    checks: dict[str, dict[str, str | float | None]] = {}
    deps: list[tuple[str, Any]] = [("database", app.store.ping)]
    if app.settings.database_replica_url is not None:
        deps.append(("replica", lambda: app.store.ping(replica=True)))
    if app.uses_redis:
        deps.append(("redis", app.read_cache().ping))
    for name, ping in deps:
        started = time.perf_counter()
        try:
            ping()
            checks[name] = {
                "status": "ok",
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            }
        except DependencyUnavailable as exc:
            checks[name] = {"status": "down", "error": str(exc)}
    ok = all(c["status"] == "ok" for c in checks.values())
    response.status_code = 200 if ok else 503
    return schemas.Health(status="ok" if ok else "down", checks=checks)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(app: AppDep) -> Response:
    """Prometheus text format: request counts and latencies, the guide's catalog_* metrics."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    m = app.metrics()
    pool = app.store.engine.pool
    checked_out = getattr(pool, "checkedout", None)
    if callable(checked_out):
        m.db_connections.set(checked_out())
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


@dapr.get("/dapr/subscribe")
def subscribe(app: AppDep) -> list[schemas.DaprSubscription]:
    """Dapr's programmatic subscription: every topic the catalog consumes, and its route."""
    name = app.settings.pubsub_name
    return [schemas.DaprSubscription(pubsubname=name, topic=t, route=r) for r, t in ROUTES.items()]


def _push(app: AppDep, topic: str, body: bytes) -> schemas.DaprStatus:
    metrics = app.metrics()
    metrics.events_received.labels("dapr").inc()
    try:
        event = parse(body, topic=topic)  # not JSON, nested too deep, too big: InvalidEvent
    except InvalidEvent:
        metrics.events_processed.labels("dropped").inc()
        return schemas.DaprStatus(status="DROP")
    started = time.perf_counter()
    try:
        outcome = project(
            app.store,
            app.cache(),
            [event],
            lambda order, reason: lifecycle.release_order(app.ctx, order, reason),
        )
    except DependencyUnavailable:
        metrics.events_processed.labels("retry").inc()
        return schemas.DaprStatus(status="RETRY")
    if outcome.invalid:
        metrics.events_processed.labels("dropped").inc()
        return schemas.DaprStatus(status="DROP")
    metrics.event_duration.observe(time.perf_counter() - started)
    for result, n in (  # the worker's labels: a replay is a duplicate, not applied again
        ("applied", outcome.applied),
        ("duplicate", outcome.duplicates),
        ("stale", outcome.stale),
        ("filled", outcome.filled),
        ("released", outcome.released),
        ("unknown", outcome.unknown),
    ):
        if n:
            metrics.events_processed.labels(result).inc(n)
    return schemas.DaprStatus(status="SUCCESS")


def _register(route: str, topic: str) -> None:
    def handler(app: AppDep, body: bytes = Depends(_body)) -> schemas.DaprStatus:
        return _push(app, topic, body)

    handler.__name__ = "event_" + route.rsplit("/", 1)[-1].replace("-", "_")
    handler.__doc__ = f"Dapr push delivery of `{topic}` (SUCCESS, RETRY or DROP)."
    dapr.post(route, dependencies=[Depends(require("reserve"))])(handler)


async def _body(request: Request) -> bytes:
    return await request.body()


for _route, _topic in ROUTES.items():
    _register(_route, _topic)
