"""``stockctl serve`` (the HTTP API) and ``stockctl up`` (API + worker jobs: the main job)."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import threading
from typing import Annotated, Any

import typer

from stockctl.commands._common import handled, state
from stockctl.errors import InvalidInput

Host = Annotated[str | None, typer.Option(help="bind address (default: settings, 127.0.0.1)")]
Port = Annotated[int | None, typer.Option(min=1, max=65_535, help="port (default 8080)")]
Insecure = Annotated[
    bool, typer.Option("--insecure", help="allow a non-loopback bind with no API token")
]


# An idle keep-alive connection is kept this long (uvicorn's default is 5 s): longer than the
# 60 s idle timeout of common load balancers, so that they, not we, close it (a close racing
# their next request on it is a 502 there), and a client checking stock every few seconds keeps
# its connection.
KEEP_ALIVE_SECONDS = 75


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, has_tokens: bool, insecure: bool) -> None:
    if not has_tokens and not _is_loopback(host) and not insecure:
        raise InvalidInput(
            f"refusing to serve on {host} with no API token configured: set "
            "STOCKCTL_API_TOKENS, bind to 127.0.0.1, or pass --insecure"
        )


def _log_setup() -> None:
    """Messages as text on stderr; the access log (``stockctl.access``, one JSON line per
    request) on stdout, in place of uvicorn's (every uvicorn run here has access_log=False)."""
    from stockctl.daemons.api.accesslog import configure_access_log

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    configure_access_log()


def _raise_open_files_limit() -> None:
    """Each open connection is a file descriptor: the soft limit (often 1,024) goes up to the
    hard one (at most 65,536), so that one process holds thousands of keep-alive clients."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65_536 if hard == resource.RLIM_INFINITY else min(hard, 65_536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _exit_zero_on_stop_signals() -> None:
    """SIGTERM and SIGINT ask for the graceful stop: once uvicorn has shut down it re-raises the
    signal it stopped on, which would end the process killed by it (-15, or click's "Aborted!"
    exit 1); here that re-raised signal, or one before uvicorn listens, ends it with status 0."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


@handled
def serve(
    ctx: typer.Context,
    host: Host = None,
    port: Port = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="server processes")] = 1,
    insecure: Insecure = False,
) -> None:
    """Serve the HTTP API (routes under /v1 and /api/v1; /health, /metrics, /docs)."""
    import uvicorn

    st = state(ctx)
    st.require_local()  # serves the local database, with any number of processes
    settings = st.settings()
    bind, at = host or settings.api_host, port or settings.api_port
    check_bind(bind, bool(settings.api_tokens), insecure)
    _log_setup()
    _raise_open_files_limit()
    _exit_zero_on_stop_signals()
    if workers == 1:
        from stockctl.daemons.api.app import create_app
        from stockctl.daemons.api.factory import served
        from stockctl.daemons.api.protocol import ProblemH11Protocol

        uvicorn.run(
            served(create_app(st.app())),
            host=bind,
            port=at,
            log_level="info",
            server_header=False,
            access_log=False,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            http=ProblemH11Protocol,
        )
        return
    for key, value in st.overrides.items():  # processes wire themselves from the environment
        if value is not None:
            os.environ[f"STOCKCTL_{key.upper()}"] = str(value)
    if st.config_file is not None:
        os.environ["STOCKCTL_CONFIG"] = str(st.config_file)
    uvicorn.run(
        "stockctl.daemons.api.factory:build",
        factory=True,
        host=bind,
        port=at,
        workers=workers,
        log_level="info",
        server_header=False,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        http="stockctl.daemons.api.protocol:ProblemH11Protocol",
    )


@handled
def up(
    ctx: typer.Context,
    host: Host = None,
    port: Port = None,
    insecure: Insecure = False,
) -> None:
    """Run everything in one process: the API and the worker jobs (relay, processor, expiry,
    sync). SIGTERM stops the server, then the jobs finish their batch."""
    import uvicorn

    from stockctl.daemons.api.app import create_app
    from stockctl.daemons.workers.runner import Runner, WorkerOptions

    app = state(ctx).app()
    s = app.settings
    bind, at = host or s.api_host, port or s.api_port
    check_bind(bind, bool(s.api_tokens), insecure)
    _log_setup()
    _raise_open_files_limit()
    _exit_zero_on_stop_signals()
    runner = Runner(app, WorkerOptions(only=("relay", "processor", "expiry", "sync")))
    jobs = threading.Thread(
        target=runner.run, kwargs={"handle_signals": False}, name="stockctl-jobs", daemon=True
    )
    jobs.start()
    shown = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
    sys.stdout.write(_banner(shown, at, app))
    sys.stdout.flush()
    from stockctl.daemons.api.factory import served
    from stockctl.daemons.api.protocol import ProblemH11Protocol

    config = uvicorn.Config(
        served(create_app(app)),
        host=bind,
        port=at,
        log_level="info",
        server_header=False,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        http=ProblemH11Protocol,
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    finally:
        runner.stop.set()
        jobs.join(10)


def _banner(host: str, port: int, app: Any) -> str:
    base = f"http://{host}:{port}"
    mode = "PostgreSQL" if not app.settings.is_embedded else "embedded SQLite"
    cache = "Redis" if app.uses_redis else "embedded cache table"
    return (
        f"\nstockctl is up on {base}  ({mode}, {cache}; Ctrl-C to stop)\n"
        f"  docs:    {base}/docs\n"
        f"  try:     curl -s {base}/v1/inventory/product/P000001\n"
        f"           curl -s -X POST {base}/v1/batch/stock -H 'content-type: application/json' "
        f'-d \'{{"product_ids": ["P000001", "P000002"]}}\'\n\n'
    )
