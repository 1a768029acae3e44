"""With ``--api-url`` (or ``STOCKCTL_API_URL``) one command line never means two places: every
command the API serves goes through it, every other refuses (exit 2, one line naming the
command), and none touches the local database.

The walk covers every command of the CLI's tree: a command added without an entry here fails
``test_every_command_is_walked``. The API URL points at a port where nothing listens, so a
command that goes through it exits 3; a local database is configured as well (explicitly, the
strongest temptation to use it), and its file must be byte for byte the same afterwards.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import typer

import stockctl
from stockctl.cli import app
from tests.clientutil import free_port
from tests.e2e.test_remote_cli import Run, in_process, one_line_error

RID = str(2**62 + 5)

# command path -> (its arguments, the exit code through a dead API URL)
REMOTE = "remote"  # went to the API, which does not answer: exit 3
REFUSED = "refused"  # local only: LocalOnly, exit 2
WALK: dict[str, tuple[tuple[str, ...], str | int]] = {
    "stock show": (("P-1",), REMOTE),
    "stock receive": (("P-1", "W-1", "5"), REMOTE),
    "stock set": (("P-1", "W-1", "5"), REMOTE),
    "stock adjust": (("P-1", "W-1", "-1", "--reason", "x"), REMOTE),
    "stock transfer": (("P-1", "W-1", "W-2", "1"), REMOTE),
    "stock history": (("P-1",), REMOTE),
    "reserve": (("P-1", "W-1", "1"), REMOTE),
    "checkout": (("-i", "P-1:1"), REMOTE),
    "confirm": ((RID,), REMOTE),
    "release": ((RID,), REMOTE),
    "extend": ((RID, "--ttl", "5m"), REMOTE),
    "fulfil": ((RID,), REMOTE),
    "reservations list": ((), REMOTE),
    "reservations show": ((RID,), REMOTE),
    # the API's readiness is what health checks with an API URL: it fails (exit 2)
    "health": ((), 2),
    # through the API, checking the invariants on the API's database (named here): not ready
    "loadtest": (("--duration", "1s", "--rate", "10"), REMOTE),
    "config show": ((), 0),  # prints settings (the API URL among them), touches nothing
    "init": ((), REFUSED),
    "seed": (("--products", "2", "--warehouses", "1"), REFUSED),
    "overview": ((), REFUSED),
    "diagnose": ((), REFUSED),
    "top": ((), REFUSED),
    "serve": ((), REFUSED),
    "up": ((), REFUSED),
    "warm-cache": ((), REFUSED),
    "reservations expire": ((), REFUSED),
    "stock verify": ((), REFUSED),
    "cache verify": ((), REFUSED),
    "cache get": (("P-1",), REFUSED),
    "cache stats": ((), REFUSED),
    "cache clear": (("--yes",), REFUSED),
    "worker run": (("--burst",), REFUSED),
    "events publish": (("order.cancelled", "--data", '{"order_id": "O-1"}'), REFUSED),
    "events tail": (("--count", "1"), REFUSED),
    "events lag": ((), REFUSED),
    "events dlq list": ((), REFUSED),
    "events dlq replay": (("1-0",), REFUSED),
    "events dlq drop": (("1-0",), REFUSED),
    "db upgrade": ((), REFUSED),
    "db current": ((), REFUSED),
    "product add": (("P-9",), REFUSED),
    "product list": ((), REFUSED),
    "warehouse add": (("W-9",), REFUSED),
    "warehouse list": ((), REFUSED),
}


def commands(group: Any, path: tuple[str, ...] = ()) -> list[str]:
    found: list[str] = []
    for name, sub in group.commands.items():
        if hasattr(sub, "commands"):
            found += commands(sub, (*path, name))
        else:
            found.append(" ".join((*path, name)))
    return found


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def local_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    file = tmp_path_factory.mktemp("api-url") / "local.db"
    url = f"sqlite:///{file}"
    with stockctl.connect(url) as sc:
        sc.init()
        sc.add_warehouse("W-1")
        sc.add_warehouse("W-2")
        sc.add_product("P-1")
        sc.receive("P-1", "W-1", 10)
        sc.reserve("P-1", "W-1", 2)
    return url, file


def test_every_command_is_walked() -> None:
    assert sorted(commands(typer.main.get_command(app))) == sorted(WALK)


@pytest.mark.parametrize("command", sorted(WALK))
def test_with_an_api_url_a_command_goes_there_or_refuses(
    command: str, local_db: tuple[str, Path]
) -> None:
    url, file = local_db
    before = digest(file)
    dead = f"http://127.0.0.1:{free_port()}"
    args, code = WALK[command]
    env = {"STOCKCTL_DATABASE_URL": url, "STOCKCTL_CLIENT_RETRIES": "0"}
    run: Run = in_process(env, ("--api-url", dead, *command.split(), *args))
    if code == REFUSED:
        line = one_line_error(run, 2)
        assert f"`stockctl {command}`" in line and "--api-url" in line, line
    elif code == REMOTE:
        line = one_line_error(run, 3)
        assert dead in line, line
    else:
        assert run.code == code, f"exit {run.code}: {run.err}"
    assert digest(file) == before, f"{command} changed the local database"


def test_the_environment_variable_means_the_same(local_db: tuple[str, Path]) -> None:
    url, file = local_db
    before = digest(file)
    dead = f"http://127.0.0.1:{free_port()}"
    env = {"STOCKCTL_DATABASE_URL": url, "STOCKCTL_API_URL": dead, "STOCKCTL_CLIENT_RETRIES": "0"}
    adjust = in_process(env, ("stock", "adjust", "P-1", "W-1", "-1", "--reason", "x"))
    assert dead in one_line_error(adjust, 3)
    init = in_process(env, ("init",))
    assert "`stockctl init`" in one_line_error(init, 2)
    assert digest(file) == before
