"""Shared helpers for the benchmarks in bench/ (not a benchmark: run_all.py skips `_*.py`).

Every benchmark script prints, with ``--json``, one JSON object on stdout::

    {"figures": [{"name": str, "value": float, "unit": str,
                  "raw": float | null, "ratio": float | null, "goal": str | null,
                  "note": str (optional)}]}

``value`` is what stockctl achieved, ``raw`` the raw limit measured in the same run with the same
unit (null when there is none), ``ratio`` how close stockctl comes to it (1.0 = as fast as the raw
limit; null without raw), ``goal`` the target from DESIGN.md or the issue, as text. Progress goes
to stderr so stdout stays machine-readable.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STOCKCTL = str(BIN / "stockctl")

PG_ADMIN_URL = os.environ.get(
    "STOCKCTL_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("STOCKCTL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    raw: float | None = None
    ratio: float | None = None
    goal: str | None = None
    note: str | None = None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data["note"] is None:
            del data["note"]
        return data


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    return p


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def emit(figures: Sequence[Figure], as_json: bool) -> None:
    """JSON for run_all.py, or markdown table rows for people."""
    if as_json:
        print(json.dumps({"figures": [f.as_json() for f in figures]}))
        return
    print(TABLE_HEADER)
    for f in figures:
        print(table_row(f.as_json()))


TABLE_HEADER = "| figure | value | raw limit | ratio | goal |\n| --- | --- | --- | --- | --- |"


def fmt_number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def table_row(fig: dict[str, Any]) -> str:
    unit = str(fig.get("unit") or "")
    ratio = fig.get("ratio")
    cells = [
        str(fig.get("name", "?")),
        fmt_number(fig.get("value"), unit),
        fmt_number(fig.get("raw"), unit),
        "—" if ratio is None else f"{ratio:.2f}",
        str(fig.get("goal") or "—"),
    ]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` is the elapsed wall time in seconds."""
    box: list[float] = []
    started = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - started)


def pg_url(database: str | None = None) -> str:
    """A libpq URL (usable by psql, psycopg and stockctl) for DATABASE on the bench server."""
    from sqlalchemy.engine import make_url

    url = make_url(PG_ADMIN_URL).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def pg_connect(database: str | None = None) -> Any:
    """A psycopg 3 connection in autocommit (to the admin database by default)."""
    import psycopg

    return psycopg.connect(pg_url(database), autocommit=True)


@contextmanager
def fresh_pg_database(prefix: str = "stockctl_bench") -> Iterator[str]:
    """A new, empty PostgreSQL database; yields its URL and drops it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with pg_connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_url(name)
    finally:
        with pg_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def stockctl(
    *args: str, database_url: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the ``stockctl`` CLI as a process, with STOCKCTL_DATABASE_URL set when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCTL_")}
    env["COLUMNS"] = "200"
    if database_url is not None:
        env["STOCKCTL_DATABASE_URL"] = database_url
    # Run outside the checkout so no config/stockctl.yaml is picked up.
    proc = subprocess.run(
        [STOCKCTL, *args],
        env=env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise SystemExit(
            f"stockctl {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    return proc
