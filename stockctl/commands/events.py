"""``stockctl events tail|publish|lag|dlq``."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from stockctl.commands._common import (
    Output,
    OutputOpt,
    console,
    emit_json,
    handled,
    new_table,
    state,
)
from stockctl.errors import InvalidInput, NotFound

app = typer.Typer(help="Events: follow, publish, lag and dead letters.", no_args_is_help=True)
dlq = typer.Typer(help="The dead-letter stream.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")


@app.command("publish")
@handled
def publish(
    ctx: typer.Context,
    event_type: Annotated[str, typer.Argument(metavar="TYPE", help="e.g. order.cancelled")],
    data: Annotated[str, typer.Option(help="the event's data, a JSON object")],
    output: OutputOpt = Output.table,
) -> None:
    """Publish an event through the outbox (runbooks and tests)."""
    from stockctl.core import catalog

    try:
        payload = json.loads(data)
    except ValueError:
        raise InvalidInput("--data is not valid JSON") from None
    event = catalog.publish(state(ctx).app().ctx, event_type, payload)
    if output is Output.json:
        emit_json(event.to_dict())
    else:
        console().print(f"queued {event.type} {event.id} in the outbox")


@app.command("tail")
@handled
def tail(
    ctx: typer.Context,
    topic: Annotated[
        list[str] | None, typer.Option(help="topic(s) to follow (default all)")
    ] = None,
    count: Annotated[
        int, typer.Option(min=0, max=100_000, help="stop after N events (0 = follow)")
    ] = 0,
    history: Annotated[int, typer.Option(min=0, max=10_000, help="show the last N first")] = 10,
) -> None:
    """Follow events as they are published (Redis streams, or the outbox when embedded)."""
    from stockctl.core.catalog import TOPICS

    app_ = state(ctx).app()
    topics = list(topic or TOPICS)
    seen = 0
    follow = (
        _tail_redis(app_, topics, history)
        if app_.uses_redis
        else _tail_outbox(app_, topics, history)
    )
    for stream, entry_id, payload in follow:
        _print_event(stream, entry_id, payload)
        seen += 1
        if count and seen >= count:
            return


def _tail_redis(app_: Any, topics: list[str], history: int) -> Any:
    tail = app_.stream_tail(topics)
    for d in tail.history(history):
        yield d.stream, d.entry_id, d.data or ""
    while True:
        for d in tail.follow(1000):
            yield d.stream, d.entry_id, d.data or ""


def _tail_outbox(app_: Any, topics: list[str], history: int) -> Any:
    recent = app_.store.outbox_newest(topics, history) if history else []
    last = recent[0].id if recent else app_.store.outbox_max_id()
    for e in reversed(recent):
        yield e.topic, str(e.id), e.payload
    while True:
        rows = app_.store.outbox_after(topics, last, 1000)
        for e in rows:
            last = e.id
            yield e.topic, str(e.id), e.payload
        if not rows:
            time.sleep(0.5)


def _print_event(stream: str, entry_id: str, payload: str) -> None:
    try:
        env = json.loads(payload)
        data = env.get("data") or {}
        brief = " ".join(
            f"{k}={v}"
            for k, v in data.items()
            if k
            in (
                "product_id",
                "warehouse_id",
                "sellable",
                "delta",
                "version",
                "reason",
                "order_id",
                "reservation_id",
            )
        )
        sys.stdout.write(f"{env.get('time', '')} {stream} {entry_id} {brief}\n")
    except ValueError:
        sys.stdout.write(f"{stream} {entry_id} (not JSON) {payload[:200]}\n")
    sys.stdout.flush()


@app.command("lag")
@handled
def lag(ctx: typer.Context, output: OutputOpt = Output.table) -> None:
    """Per topic: length, pending, lag and consumers; the outbox backlog and its oldest row."""
    from stockctl.core.catalog import TOPICS

    app_ = state(ctx).app()
    backlog, oldest = app_.store.outbox_backlog()
    age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
    topics: list[dict[str, Any]] = []
    if app_.uses_redis:
        admin = _admin(app_)
        topics = [_lag_dict(t) for t in admin.lag(TOPICS)]
    data = {
        "outbox_backlog": backlog,
        "oldest_unpublished_seconds": round(age, 3),
        "transport": "redis" if app_.uses_redis else "embedded (outbox)",
        "topics": topics,
    }
    if output is Output.json:
        emit_json(data)
        return
    out = console()
    out.print(f"outbox backlog {backlog}, oldest unpublished {age:.1f} s ago ({data['transport']})")
    if topics:
        table = new_table(
            f"Consumer group {app_.settings.app_id}",
            "topic",
            "length",
            "pending",
            "lag",
            "consumers (idle ms)",
        )
        for t in topics:
            consumers = ", ".join(f"{k} ({v})" for k, v in t["consumers"].items())
            table.add_row(
                t["topic"],
                str(t["length"]),
                str(t["pending"]),
                "-" if t["lag"] is None else str(t["lag"]),
                consumers,
            )
        out.print(table)


def _lag_dict(t: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(t)


def _admin(app_: Any) -> Any:
    if not app_.uses_redis:
        raise InvalidInput("the dead-letter stream needs Redis (STOCKCTL_REDIS_URL)")
    return app_.stream_admin()


@dlq.command("list")
@handled
def dlq_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="at most N entries")] = 100,
    output: OutputOpt = Output.table,
) -> None:
    """Dead letters, oldest first, with why they failed."""
    items = _admin(state(ctx).app()).dead_letters(limit)
    if output is Output.json:
        emit_json([{"id": d.entry_id, **d.fields} for d in items])
        return
    table = new_table("Dead letters", "id", "topic", "reason", "failed at")
    for d in items:
        failed = d.fields.get("failed_at")
        when = datetime.fromtimestamp(float(failed), UTC).strftime("%F %T") if failed else "-"
        table.add_row(d.entry_id, d.fields.get("topic", ""), d.fields.get("reason", ""), when)
    console().print(table)


@dlq.command("replay")
@handled
def dlq_replay(
    ctx: typer.Context, entry_id: Annotated[str, typer.Argument(help="entry id")]
) -> None:
    """Put a dead letter back on its topic for another try."""
    new_id = _admin(state(ctx).app()).replay(entry_id)
    if new_id is None:
        raise NotFound(f"no dead letter {entry_id}")
    console().print(f"replayed {entry_id} as {new_id}")


@dlq.command("drop")
@handled
def dlq_drop(ctx: typer.Context, entry_id: Annotated[str, typer.Argument(help="entry id")]) -> None:
    """Delete a dead letter for good."""
    if not _admin(state(ctx).app()).drop(entry_id):
        raise NotFound(f"no dead letter {entry_id}")
    console().print(f"dropped {entry_id}")
