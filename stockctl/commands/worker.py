"""``stockctl worker run`` and ``stockctl worker --check``."""

from __future__ import annotations

import logging
import sys
import time
from typing import Annotated

import typer

from stockctl.commands._common import Output, OutputOpt, emit_json, handled, state
from stockctl.core.heartbeat import decode_all

app = typer.Typer(
    help="The worker daemon: outbox relay, event processor, expiry sweeper, incremental sync."
)


@app.callback(invoke_without_command=True)
@handled
def worker(
    ctx: typer.Context,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="exit 0 only if a worker has a fresh heartbeat and none has a job failing "
            "for worker_stall_seconds; 1 if not; 3 if Redis does not answer",
        ),
    ] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Run with `worker run`; `worker --check` is a health probe for containers."""
    if ctx.invoked_subcommand is not None:
        return
    if not check:
        sys.stdout.write(ctx.get_help() + "\n")
        raise typer.Exit(2)
    from stockctl.daemons.workers.health import check as check_workers

    found = check_workers(state(ctx).app())
    if output is Output.json:
        emit_json(
            {
                "alive": found.alive,
                "ok": found.ok,
                "problems": found.problems,
                "workers": {k: b.to_dict() for k, b in decode_all(found.beats).items()},
            }
        )
    else:
        for name, beat in decode_all(found.beats).items():
            sys.stdout.write(f"{name}: heartbeat {beat.age(time.time()):.1f} s ago\n")
        for problem in found.problems:
            sys.stdout.write(problem + "\n")
    raise typer.Exit(0 if found.ok else 1)


@app.command("run")
@handled
def run(
    ctx: typer.Context,
    only: Annotated[
        str | None,
        typer.Option(help="comma list of jobs: relay,processor,expiry,sync (default all)"),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=256, help="processor threads (default: settings)")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, max=100_000, help="events per batch (default 100)")
    ] = None,
    batch_timeout: Annotated[
        int | None, typer.Option(min=1, max=60_000, help="ms to wait for a batch (default 100)")
    ] = None,
    consumer: Annotated[
        str | None, typer.Option(help="consumer name in the group (default host-pid)")
    ] = None,
    burst: Annotated[
        bool, typer.Option("--burst", help="exit once there is nothing left to do")
    ] = False,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    """Run the worker until SIGTERM (first: finish the batch and exit 0; second: exit now)."""
    from stockctl.daemons.workers.runner import Runner, WorkerOptions, parse_only
    from stockctl.errors import InvalidInput

    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise InvalidInput(f"unknown log level {log_level!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = WorkerOptions(parse_only(only), workers, batch_size, batch_timeout, consumer, burst)
    code = Runner(state(ctx).app(), options).run()
    raise typer.Exit(code)
