"""Reservation commands as real processes on an embedded (SQLite) database.

The database is prepared through the library; only the commands under test run as processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import stockctl
from stockctl.commands.reservations import parse_duration
from stockctl.core import reservations
from stockctl.errors import InvalidInput
from stockctl.library import Stockctl

_SCRIPT = Path(sys.executable).with_name("stockctl")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "stockctl"]


@dataclasses.dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, f"exit {self.code}: {self.err}"
        return json.loads(self.out)


@dataclasses.dataclass
class Env:
    url: str
    sc: Stockctl
    product: str = "P-1"
    other: str = "P-2"
    warehouse: str = "W-1"

    def __call__(self, *args: str | int) -> Run:
        env = {**os.environ, "STOCKCTL_DATABASE_URL": self.url, "NO_COLOR": "1"}
        done = subprocess.run(
            [*COMMAND, *map(str, args)], env=env, capture_output=True, text=True, timeout=60
        )
        assert "Traceback" not in done.stderr, done.stderr
        return Run(done.returncode, done.stdout, done.stderr)

    def qty(self, product: str) -> tuple[int, int]:
        (row,) = self.sc.stock(product, self.warehouse).rows
        return row.on_hand, row.reserved


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Env]:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with stockctl.connect(url) as sc:
        sc.init()
        env = Env(url, sc)
        sc.add_warehouse(env.warehouse)
        for p in (env.product, env.other):
            sc.add_product(p)
            sc.receive(p, env.warehouse, 10)
        yield env


def one_line_error(run: Run, code: int) -> str:
    assert run.code == code, f"exit {run.code}: {run.err!r}"
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.err
    return lines[0]


def test_reserve_confirm_release_and_list(cli: Env) -> None:
    p, w = cli.product, cli.warehouse
    held = cli("reserve", p, w, "4", "--ttl", "20m", "--order", "O-1", "-o", "json").json()
    assert (held["product_id"], held["warehouse_id"], held["quantity"]) == (p, w, 4)
    assert (held["status"], held["order_id"]) == ("ACTIVE", "O-1")
    created = datetime.fromisoformat(held["created_at"])
    assert datetime.fromisoformat(held["expires_at"]) - created == timedelta(minutes=20)

    confirmed = cli("confirm", held["id"], "-o", "json").json()
    assert (confirmed["id"], confirmed["status"]) == (held["id"], "CONFIRMED")

    key_args = ("reserve", p, "3", "--idempotency-key", "K-1", "-o", "json")
    other = cli(*key_args).json()  # no warehouse: the allocation strategy picks W-1
    assert other["warehouse_id"] == w and other["status"] == "ACTIVE"
    assert cli(*key_args).json()["id"] == other["id"]  # same key, same request: same hold
    assert cli.qty(p) == (10, 7)

    released = cli("release", other["id"], "-o", "json").json()
    assert released["status"] == "RELEASED"
    assert cli.qty(p) == (10, 4)

    listed = cli("reservations", "list", "--product", p, "-o", "json").json()
    assert sorted((r["id"], r["status"]) for r in listed) == sorted(
        [(held["id"], "CONFIRMED"), (other["id"], "RELEASED")]
    )


def test_checkout_and_release_by_order(cli: Env) -> None:
    p, q, w = cli.product, cli.other, cli.warehouse
    made = cli(
        "checkout", "-i", f"{p}:{w}:2", "-i", f"{q}:3", "-i", f"{p}:{w}:1", "--order", "O-9",
        "-o", "json",
    ).json()  # fmt: skip
    assert sorted((r["product_id"], r["quantity"], r["order_id"]) for r in made) == [
        (p, 3, "O-9"),  # the two lines of p summed
        (q, 3, "O-9"),
    ]
    assert (cli.qty(p), cli.qty(q)) == ((10, 3), (10, 3))

    table = cli("reservations", "list", "--order", "O-9")  # the table for people
    assert table.code == 0 and all(str(r["id"]) in table.out for r in made), table.out

    released = cli("release", "--order", "O-9", "-o", "json").json()
    assert sorted(r["id"] for r in released) == sorted(r["id"] for r in made)
    assert {r["status"] for r in released} == {"RELEASED"}
    assert (cli.qty(p), cli.qty(q)) == ((10, 0), (10, 0))


def test_refusals_are_one_line_with_the_right_exit_code(cli: Env) -> None:
    p, w = cli.product, cli.warehouse
    cli.sc.reserve(p, w, 7)

    short = one_line_error(cli("reserve", p, w, "5"), 1)
    for part in (p, w, "asked 5", "sellable 3"):
        assert part in short, short

    malformed = one_line_error(cli("checkout", "-i", f"{p}:{w}:x", "-i", f"{p}:1"), 2)
    assert "malformed item" in malformed and f"{p}:{w}:x" in malformed

    missing = str(2**62 + random.randrange(2**40))
    unknown = one_line_error(cli("confirm", missing), 2)  # NotFound: exit 2 (stockctl.errors)
    assert missing in unknown
    assert cli.qty(p) == (10, 7)


def test_expire_sweeps_overdue_holds_and_verify_repairs_drift(cli: Env) -> None:
    p, w = cli.product, cli.warehouse
    past = dataclasses.replace(cli.sc.app.ctx, clock=lambda: datetime.now(UTC) - timedelta(hours=1))
    overdue = reservations.reserve(past, p, w, 2, ttl=timedelta(minutes=5))
    kept = cli.sc.reserve(p, w, 3)

    listed = cli("reservations", "list", "--expired", "-o", "json").json()
    assert [r["id"] for r in listed] == [overdue.id]
    assert cli("reservations", "expire", "-o", "json").json() == {"expired": 1}
    assert cli.sc.get_reservation(overdue.id).status.value == "EXPIRED"
    assert cli.qty(p) == (10, 3)
    assert cli("reservations", "show", kept.id, "-o", "json").json()["status"] == "ACTIVE"

    assert cli("stock", "verify", "-o", "json").json() == []
    with cli.sc.app.store.engine.begin() as conn:
        conn.execute(
            text("UPDATE inventory SET quantity_reserved = 6 WHERE product_id = :p"), {"p": p}
        )
    drift = cli("stock", "verify", "-o", "json")
    assert drift.code == 1
    (found,) = json.loads(drift.out)
    assert (found["product_id"], found["quantity_reserved"], found["expected_reserved"]) == (
        p,
        6,
        3,
    )
    (fixed,) = cli("stock", "verify", "--repair", "-o", "json").json()
    assert fixed["repaired"] is True
    assert cli.qty(p) == (10, 3)
    assert cli.sc.history(p, w, limit=1)[0].kind.value == "repair"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), (" 2 h ", 7200), ("1d", 86400)]
)
def test_ttl_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "m", "1.5h", "-5m", "15x", "٣m", "99999999999d"])
def test_malformed_ttl_durations(text: str) -> None:
    with pytest.raises(InvalidInput):  # never an OverflowError or a crash
        parse_duration(text)
