"""The ``stockctl`` command. Heavy modules are imported inside the commands that need them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from stockctl.__about__ import __version__
from stockctl.commands import (
    admin,
    cache,
    catalog,
    diagnose,
    events,
    loadtest,
    reservations,
    serve,
    stock,
    worker,
)
from stockctl.commands._common import state

INTERNAL_ERROR = 4


def _no_flag_metavar() -> None:
    """Typer's rich help shows ``<bool>`` beside every flag (``--allow-split <bool>``), as if
    it took a value: show no type for flags, as click's plain help does."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_no_flag_metavar()

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
app.command("loadtest")(loadtest.loadtest)
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
    """Run the CLI. Usage errors and unexpected failures are one line on stderr too
    (STOCKCTL_DEBUG=1 shows the traceback of an unexpected one)."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)  # noqa: T201
        sys.exit(1)
    except Exception as exc:
        if _is_usage_error(exc):
            sys.exit(_usage(exc))
        if os.environ.get("STOCKCTL_DEBUG"):
            raise
        name = type(exc).__name__
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: unexpected {name}: {first} (STOCKCTL_DEBUG=1 shows more)", file=sys.stderr)  # noqa: T201
        sys.exit(INTERNAL_ERROR)
    sys.exit(code if isinstance(code, int) else 0)


def _is_usage_error(exc: Exception) -> bool:
    """Click's (Typer's vendored click's) command-line errors: they know their exit code."""
    return hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)


def _usage(exc: Any) -> int:
    if type(exc).__name__ == "NoArgsIsHelpError":
        exc.show()  # a bare group: its help is the answer
        return int(exc.exit_code)
    ctx = getattr(exc, "ctx", None)
    hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
    print(f"error: {exc.format_message()}{hint}", file=sys.stderr)  # noqa: T201
    return int(exc.exit_code)
