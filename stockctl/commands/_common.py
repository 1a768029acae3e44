"""What every command shares: lazy settings and wiring, error handling, and output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar, cast

import typer

from stockctl.errors import StockctlError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from stockctl.bootstrap import App
    from stockctl.clients.warehouse import WarehouseClient
    from stockctl.core.operations import StockOperations
    from stockctl.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")


class Output(StrEnum):
    table = "table"
    json = "json"


OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="table for people, json for scripts")
]


@dataclass
class State:
    """Global options, resolved into settings and adapters only when a command needs them."""

    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    _app: App | None = None
    _settings: Settings | None = None
    _remote: WarehouseClient | None = None
    command: str = "stockctl"  # the command being run, for messages
    local_too: bool = False  # this command may reach the local app with an API URL set

    def settings(self) -> Settings:
        if self._settings is None:
            from stockctl.settings import load_settings

            self._settings = load_settings(self.config_file, **self.overrides)
        return self._settings

    def ops(self) -> StockOperations:
        """The operations contract the command runs on: the warehouse API with --api-url
        (or STOCKCTL_API_URL), else the library on the local database."""
        if self.settings().api_url is not None:
            if self._remote is None:
                from stockctl.bootstrap import build_client

                self._remote = build_client(self.settings())
            return self._remote
        from stockctl.library import Stockctl

        return Stockctl(self.app())

    def app(self) -> App:
        """The local database, Redis and files. With an API URL set, only a command that has
        said it also works locally (``uses_both``) gets them; any other refuses (exit 2), so
        one command line never means the API for one command and a laptop file for another."""
        if self._app is None:
            self.require_local()
            from stockctl.bootstrap import bootstrap

            self._app = bootstrap(self.settings())
        return self._app

    def require_local(self) -> None:
        """Refuse (``LocalOnly``, exit 2) a local-only command while an API URL is set."""
        if self.settings().api_url is not None and not self.local_too:
            from stockctl.errors import LocalOnly

            raise LocalOnly(
                f"`{self.command}` works on the local database and Redis only, not through "
                "--api-url: unset --api-url / STOCKCTL_API_URL to run it here"
            )

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()
            self._remote = None
        if self._app is not None:
            self._app.close()
            self._app = None


def whole_number(what: str) -> Callable[[Any], int]:
    """A typer ``parser`` for a whole-number argument, by the core's rule (``parse_whole``):
    `` 5``, ``+5``, ``5.0`` or ``1_000`` is a usage error (exit 2), as the HTTP API refuses
    ``"5"``."""

    def parse(text: Any) -> int:
        from stockctl.core.values import parse_whole
        from stockctl.errors import InvalidInput

        if isinstance(text, int) and not isinstance(text, bool):
            return text  # a default
        try:
            return parse_whole(text, what)
        except InvalidInput as exc:
            raise typer.BadParameter(exc.message) from None

    parse.__name__ = "INTEGER"  # the metavar --help shows
    return parse


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    if ctx is not root:
        root.obj.command = ctx.command_path
    return root.obj


# typer.Context and the click Context it derives from (typer may vendor click)
_CONTEXTS = tuple(c for c in typer.Context.__mro__ if c is not object)


def handled(fn: Callable[P, R]) -> Callable[P, R]:
    """Library errors become one line on stderr and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except StockctlError as exc:
            raise fail(exc) from None
        finally:
            for value in [*args, *kwargs.values()]:
                # Typer passes its click's Context, the base of typer.Context: testing for
                # typer.Context alone never matched, and nothing was ever closed.
                if isinstance(value, _CONTEXTS):
                    state(cast(typer.Context, value)).close()

    return wrapper


def fail(exc: StockctlError) -> typer.Exit:
    """Print the one-line error; the caller raises the returned exit."""
    print(f"error: {exc.message}", file=sys.stderr)  # noqa: T201 - the CLI's one-line error
    return typer.Exit(code=exc.exit_code)


def console() -> Console:
    from rich.console import Console

    # Piped output (CI, scripts, less) gets wide tables rather than 80 columns of ellipses.
    return Console() if sys.stdout.isatty() else Console(width=220)


def new_table(title: str, *columns: str) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in columns:
        numeric = col.lower() in _NUMERIC
        table.add_column(col, justify="right" if numeric else "left")
    return table


_NUMERIC = {
    "available",
    "reserved",
    "sellable",
    "threshold",
    "version",
    "qty",
    "Δ available",
    "Δ reserved",
    "products",
    "out",
    "low",
    "priority",
    "rows",
    "count",
    "id",
}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")


def when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"
