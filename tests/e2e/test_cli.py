"""The ``stockctl`` command as a real process, on a fresh embedded database per test.

Exit codes: 0 ok, 1 refused by a stock rule, 2 bad input or usage, 3 a dependency unavailable.
An error is one line on stderr and never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select

import stockctl
from stockctl.errors import ProductNotFound
from stockctl.store.tables import inventory, outbox, stock_movements
from tests.conftest import new_id

_SCRIPT = Path(sys.executable).with_name("stockctl")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "stockctl"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def assert_one_line_error(self, code: int) -> str:
        assert self.code == code, f"exit {self.code}, stderr: {self.err!r}"
        assert "Traceback" not in self.err
        lines = self.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), self.err
        assert self.out == ""
        return lines[0]


class Cli:
    def __init__(self, database_url: str | None) -> None:
        self.env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
        if database_url is not None:
            self.env["STOCKCTL_DATABASE_URL"] = database_url

    def __call__(self, *args: str, ok: bool = True) -> Result:
        done = subprocess.run(
            [*COMMAND, *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        result = Result(done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in result.err
        if ok:
            assert result.code == 0, f"stockctl {' '.join(args)}: {result.err}"
        return result


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'e2e.db'}"


@pytest.fixture
def cli(db: str) -> Cli:
    return Cli(db)


def test_version() -> None:
    result = Cli(None)("--version")
    assert result.out.strip() == f"stockctl {stockctl.__version__}"


def test_stock_workflow_with_refusals(cli: Cli, db: str) -> None:
    p, a, b = new_id("P"), new_id("A"), new_id("B")
    assert cli("init", "-o", "json").json()["products"] == 0
    cli("product", "add", p, "--name", "Blue mug")
    cli("warehouse", "add", a)
    cli("warehouse", "add", b, "--priority", "5")
    received = cli("stock", "receive", p, a, "20", "-o", "json").json()
    assert (received["quantity_available"], received["version"]) == (20, 1)

    cli("stock", "adjust", p, a, "-5", "--reason", "damage")
    history = cli("stock", "history", p).out
    assert "adjust" in history and "damage" in history and "-5" in history

    moved = cli("stock", "transfer", p, a, b, "5", "-o", "json").json()
    assert [(r["warehouse_id"], r["quantity_available"]) for r in moved] == [(a, 10), (b, 5)]

    shown = cli("stock", "show", p, "-o", "json").json()
    assert shown["total_available"] == 15 and shown["total_sellable"] == 15
    assert {r["warehouse_id"]: r["version"] for r in shown["warehouses"]} == {a: 3, b: 1}

    engine = create_engine(db)
    with engine.connect() as conn:
        adjust = conn.execute(
            select(stock_movements).where(
                stock_movements.c.product_id == p, stock_movements.c.kind == "adjust"
            )
        ).one()
        events = [json.loads(r.payload) for r in conn.execute(select(outbox.c.payload))]
    assert (adjust.delta_available, adjust.reason) == (-5, "damage")
    [adjusted] = [e for e in events if e["type"] == "warehouse.stock.adjusted"]
    assert adjusted["subject"] == p
    assert adjusted["data"]["reason"] == "damage" and adjusted["data"]["delta"] == -5
    assert adjusted["data"]["version"] == adjust.version

    # Refusals, run side by side: each one line on stderr with its exit code, nothing changed.
    refused = [
        (1, ["stock", "adjust", p, a, "-50", "--reason", "damage"]),
        (1, ["stock", "set", p, a, "3", "--expect-version", "1"]),
        (ProductNotFound.exit_code, ["stock", "show", new_id("P")]),
        (2, ["stock", "receive", "a:b", a, "1"]),
        (2, ["stock", "receive", p, a, "2147483648"]),
        (2, ["stock", "transfer", p, a, a, "1"]),
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda args: cli(*args, ok=False), [r[1] for r in refused]))
        missing_reason = cli("stock", "adjust", p, a, "-1", ok=False)
    for (code, args), result in zip(refused, results, strict=True):
        assert result.code == code, args
        result.assert_one_line_error(code)
    assert missing_reason.code == 2 and "--reason" in missing_reason.err

    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(stock_movements)).scalar() == 4
        assert conn.execute(select(func.count()).select_from(outbox)).scalar() == len(events)
        rows = conn.execute(
            select(inventory.c.quantity_available, inventory.c.version).order_by(
                inventory.c.warehouse_id
            )
        ).all()
    assert [tuple(r) for r in rows] == [(10, 3), (5, 1)]
    engine.dispose()


def test_seed_then_overview(cli: Cli, db: str) -> None:
    cli("init")
    seeded = cli("seed", "--products", "50", "--warehouses", "4", "-o", "json").json()
    assert seeded["rows"] == 200
    overview = cli("overview", "-o", "json").json()
    assert [w["products"] for w in overview["warehouses"]] == [50, 50, 50, 50]
    engine = create_engine(db)
    with engine.connect() as conn:
        total = conn.execute(select(func.sum(inventory.c.quantity_available))).scalar()
        ledger = conn.execute(select(func.sum(stock_movements.c.delta_available))).scalar()
    engine.dispose()
    assert sum(w["quantity_available"] for w in overview["warehouses"]) == total == ledger
    assert len(overview["low_stock"]) == 10
    sellable = [r["sellable"] for r in overview["low_stock"]]
    assert sellable == sorted(sellable)


def test_config_show_masks_the_password() -> None:
    cli = Cli("postgresql://u:secret@db.example/stock")
    shown = cli("config", "show", "-o", "json")
    assert "secret" not in shown.out + shown.err
    assert shown.json()["database_url"] == "postgresql://u:***@db.example/stock"
    table = cli("config", "show")
    assert "secret" not in table.out + table.err
    assert "db.example" in table.out


@pytest.mark.parametrize(
    ("url", "kind", "shown"),
    [
        ("redis://:pw1@127.0.0.1:6379/3", "standalone", "redis://:***@127.0.0.1:6379/3"),
        (
            "redis+cluster://app:pw1@10.0.0.1:7000,10.0.0.2:7000",
            "cluster",
            "redis+cluster://app:***@10.0.0.1:7000,10.0.0.2:7000",
        ),
        (
            "redis+sentinel://:pw1@s1:26379,s2:26379/mymaster/2?sentinel_password=pw2",
            "sentinel",
            "redis+sentinel://:***@s1:26379,s2:26379/mymaster/2?sentinel_password=***",
        ),
    ],
)
def test_config_show_names_the_redis_topology_and_masks_its_passwords(
    url: str, kind: str, shown: str
) -> None:
    cli = Cli(None)
    cli.env["STOCKCTL_REDIS_URL"] = url
    data = cli("config", "show", "-o", "json").json()
    assert data["redis_url"] == shown and data["redis_topology"] == kind
    table = cli("config", "show")
    assert "pw1" not in table.out + table.err and "pw2" not in table.out + table.err


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379",
        "redis://127.0.0.1:abc/5",
        "redis+cluster://h:1/3",
        "redis+sentinel://h:26379",
        "redis://a:1,b:2/0",
    ],
)
def test_a_malformed_redis_url_is_exit_2_naming_the_setting(url: str) -> None:
    cli = Cli(None)
    cli.env["STOCKCTL_REDIS_URL"] = url
    line = cli("config", "show", ok=False).assert_one_line_error(2)
    assert "redis_url" in line


def test_unreachable_database_is_exit_3_naming_the_host_not_the_password() -> None:
    cli = Cli("postgresql://user:hunter2@127.0.0.1:1/db")
    line = cli("stock", "show", "P1", ok=False).assert_one_line_error(3)
    assert "127.0.0.1:1" in line
    assert "hunter2" not in line


def test_database_without_schema_is_exit_3_and_says_to_init(cli: Cli) -> None:
    line = cli("stock", "show", "P1", ok=False).assert_one_line_error(3)
    assert "stockctl init" in line


def test_malformed_config_file_is_exit_2(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("cache_ttl_seconds: [\n", encoding="utf-8")
    line = cli("--config", str(bad), "config", "show", ok=False).assert_one_line_error(2)
    assert "bad.yaml" in line
