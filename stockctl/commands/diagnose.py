"""``stockctl diagnose``, ``stockctl health`` and ``stockctl top``."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from stockctl.commands._common import Output, OutputOpt, console, emit_json, handled, state
from stockctl.core.heartbeat import decode_all
from stockctl.errors import InvalidInput

_STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


@handled
def diagnose(
    ctx: typer.Context,
    runbooks: Annotated[
        list[str] | None,
        typer.Argument(
            help="all | stock-not-updating | slow | cache-misses | queue-overflow | consistency"
        ),
    ] = None,
    product: Annotated[str | None, typer.Option(help="product to trace end to end")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Run the troubleshooting runbooks. Exit 0 all ok, 1 a warning, 2 a failure."""
    from stockctl.core import diagnose as dg
    from stockctl.core.model import check_id
    from stockctl.ops.diagnostics import LiveProbe

    names = list(runbooks or ["all"])
    if "all" in names:
        names = list(dg.RUNBOOKS)
    unknown = [n for n in names if n not in dg.RUNBOOKS]
    if unknown:
        raise InvalidInput(
            f"unknown runbook(s) {', '.join(unknown)}: choose from all, {', '.join(dg.RUNBOOKS)}"
        )
    if product is not None:
        check_id(product, "product")
    checks = dg.run(LiveProbe(state(ctx).app()), names, product)
    if output is Output.json:
        emit_json({"exit_code": dg.exit_code(checks), "checks": [c.__dict__ for c in checks]})
    else:
        _table(checks)
    raise typer.Exit(dg.exit_code(checks))


def _table(checks: list[Any]) -> None:
    from rich.table import Table

    out = console()
    table = Table(title="stockctl diagnose", title_justify="left")
    for col in ("runbook", "check", "status", "value", "threshold", "what to do"):
        table.add_column(col)
    last = None
    for c in checks:
        if last is not None and c.runbook != last:
            table.add_section()
        style = _STYLE[c.status.value]
        table.add_row(
            c.runbook if c.runbook != last else "",
            c.name,
            f"[{style}]{c.status.value}[/]",
            c.value,
            c.threshold,
            c.remedy,
        )
        last = c.runbook
    out.print(table)


@handled
def health(ctx: typer.Context, output: OutputOpt = Output.table) -> None:
    """Database, replica, Redis, API and workers: one line each, with latency. Exit 2 if any
    fails: a dependency does not answer (Redis within a second), or no worker is alive, or a
    worker has a job failing for worker_stall_seconds."""
    results = _health_checks(state(ctx))
    code = 2 if any(r["status"] == "fail" for r in results) else 0
    if output is Output.json:
        emit_json({"exit_code": code, "checks": results})
    else:
        for r in results:
            style = _STYLE[r["status"]]
            console().print(
                f"{r['check']:<9} [{style}]{r['status']:<4}[/] "
                f"{r['latency_ms']:>8.2f} ms  {r['detail']}"
            )
    raise typer.Exit(code)


def _measure(name: str, fn: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        detail, status = fn() or "ok", "ok"
    except Exception as exc:  # every dependency is reported, none crashes the command
        detail, status = (str(exc).splitlines() or [type(exc).__name__])[0], "fail"
    return {
        "check": name,
        "status": status,
        "detail": detail,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }


def _health_checks(st: Any) -> list[dict[str, Any]]:
    settings = st.settings()
    if settings.api_url is not None:
        if "database_url" not in settings.model_fields_set:
            return [_measure("api", lambda: _api_ready(settings))]
        st.local_too = True  # a database named too: both are checked
    app = st.app()
    checks: list[tuple[str, Any]] = [("database", app.store.ping)]
    if settings.database_replica_url is not None:
        checks.append(("replica", lambda: app.store.ping(replica=True)))
    if app.uses_redis:  # fail-fast client: a stalled Redis fails this in a second
        checks.append(("redis", lambda: _redis(app)))
    if settings.api_url is not None:
        checks.append(("api", lambda: _api_ready(settings)))
    results = [_measure(name, fn) for name, fn in checks]
    if any(r["check"] == "redis" and r["status"] == "fail" for r in results):
        # the heartbeats live in Redis: do not wait on it a second time
        results.append(_measure("workers", _heartbeats_unreadable))
    else:
        results.append(_measure("workers", lambda: _workers(app)))
    return results


def _redis(app: Any) -> str:
    """Ping on the fail-fast client, then name the topology and the node that answered."""
    app.probe_cache().ping()
    return str(app.redis_description())


def _heartbeats_unreadable() -> str:
    raise RuntimeError("unknown: the heartbeats live in Redis, which does not answer")


def _workers(app: Any) -> str:

    from stockctl.daemons.workers.health import check

    found = check(app)
    if found.problems:
        more = f" (+{len(found.problems) - 1} more)" if len(found.problems) > 1 else ""
        raise RuntimeError(found.problems[0] + more)
    ages = [b.age(time.time()) for b in decode_all(found.beats).values()] or [float("inf")]
    return f"{len(found.beats)} alive, newest beat {min(ages):.1f} s ago"


def _api_ready(settings: Any) -> str:
    from stockctl.bootstrap import build_client

    with build_client(settings) as client:
        return client.ready()


@handled
def top(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option(min=0.2, max=60, help="seconds per refresh")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="print one frame and exit")] = False,
) -> None:
    """A live view: events in and out, lag, hit rate, reservations, low stock, workers.
    `q` or Ctrl-C quits."""
    from rich.live import Live

    from stockctl.ops.top import Sampler, render

    sampler = Sampler(state(ctx).app())
    if once:
        console().print(render(sampler.sample()))
        return
    stop = _keypress_quit()
    try:
        with Live(
            render(sampler.sample()), console=console(), refresh_per_second=4, screen=False
        ) as live:
            while not stop.wait(interval):
                live.update(render(sampler.sample()))
    except KeyboardInterrupt:
        pass


def _keypress_quit() -> Any:
    """An event set when `q` is pressed (on a terminal)."""
    import threading

    stop = threading.Event()
    if not sys.stdin.isatty():
        return stop

    def watch() -> None:
        import termios
        import tty

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            while not stop.is_set():
                if sys.stdin.read(1).lower() == "q":
                    stop.set()
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    threading.Thread(target=watch, daemon=True).start()
    return stop
