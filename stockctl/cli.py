"""The ``stockctl`` command. Heavy modules are imported inside the commands that need them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from stockctl.__about__ import __version__
from stockctl.commands import (
    admin,
    cache,
    catalog,
    diagnose,
    events,
    reservations,
    serve,
    stock,
    worker,
)
from stockctl.commands._common import state

INTERNAL_ERROR = 4

app = typer.Typer(
    name="stockctl",
    help="Multi-warehouse stock: inventory, reservations, events, cache and runbooks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"stockctl {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML settings file", envvar="STOCKCTL_CONFIG"),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="database URL (default: embedded SQLite file)", show_default=False),
    ] = None,
    redis_url: Annotated[str | None, typer.Option(help="Redis URL", show_default=False)] = None,
    api_url: Annotated[
        str | None,
        typer.Option(
            help="go through this warehouse API instead of the database", show_default=False
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="bearer token for --api-url", show_default=False)
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    """stockctl keeps multi-warehouse stock correct and fast."""
    st = state(ctx)
    st.config_file = config
    st.overrides = {
        "database_url": database_url,
        "redis_url": redis_url,
        "api_url": api_url,
        "api_token": token,
    }


app.command("init")(admin.init)
app.command("seed")(admin.seed)
app.command("overview")(admin.overview)
app.command("reserve")(reservations.reserve)
app.command("checkout")(reservations.checkout)
app.command("confirm")(reservations.confirm)
app.command("release")(reservations.release)
app.command("extend")(reservations.extend)
app.command("fulfil")(reservations.fulfil)
app.add_typer(reservations.app, name="reservations")
stock.app.command("verify")(reservations.verify)
app.command("diagnose")(diagnose.diagnose)
app.command("health")(diagnose.health)
app.command("top")(diagnose.top)
app.command("serve")(serve.serve)
app.command("up")(serve.up)
app.command("warm-cache")(cache.warm_cache)
app.add_typer(cache.app, name="cache")
app.add_typer(worker.app, name="worker")
app.add_typer(events.app, name="events")
app.add_typer(admin.db, name="db")
app.add_typer(admin.config, name="config")
app.add_typer(catalog.products, name="product")
app.add_typer(catalog.warehouses, name="warehouse")
app.add_typer(stock.app, name="stock")


def main() -> None:
    """Run the CLI; an unexpected error is one line too (STOCKCTL_DEBUG=1 for the traceback)."""
    try:
        app()
    except Exception as exc:  # a bug or an unmapped failure: still no traceback by default
        if os.environ.get("STOCKCTL_DEBUG"):
            raise
        name = type(exc).__name__
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: unexpected {name}: {first} (STOCKCTL_DEBUG=1 shows more)", file=sys.stderr)  # noqa: T201
        sys.exit(INTERNAL_ERROR)
