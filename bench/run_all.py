"""Run every benchmark in bench/ and rewrite bench/RESULTS.md.

A benchmark is any bench/*.py except this file and helpers whose name starts with `_`. Each is
run as `python bench/<name>.py --json` and must print one JSON object on stdout (progress on
stderr)::

    {"figures": [{"name": ..., "value": ..., "unit": ..., "raw": ..., "ratio": ..., "goal": ...}]}

(see bench/_common.py). A script that fails is listed in RESULTS.md with its error, the others
still run, and this script exits 1.

Usage: bench/run_all.py [NAME ...]   (names without .py: run only those; RESULTS.md is still
rewritten with only their figures)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import PG_ADMIN_URL, REDIS_URL, ROOT, TABLE_HEADER, log, table_row

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "RESULTS.md"


def benchmarks() -> list[Path]:
    me = Path(__file__).resolve()
    return sorted(p for p in BENCH.glob("*.py") if p.resolve() != me and not p.name.startswith("_"))


def run(script: Path) -> tuple[list[dict[str, Any]], str | None, float]:
    """(figures, error or None, seconds) of one benchmark script."""
    log(f"== {script.name}")
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script), "--json"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=None,  # progress goes straight to the terminal
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        return [], f"exit {proc.returncode}", elapsed
    try:
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        data = json.loads(lines[-1])
        figures = data["figures"]
        if not isinstance(figures, list) or not all(isinstance(f, dict) for f in figures):
            raise TypeError("figures is not a list of objects")
    except (IndexError, ValueError, KeyError, TypeError) as exc:
        return [], f"unreadable output ({exc})", elapsed
    return figures, None, elapsed


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout.strip().splitlines() or ["unknown"])[0]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def postgres_version() -> str:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=5) as conn:
            row = conn.execute("SELECT version()").fetchone()
        return str(row[0]).split(" on ")[0] if row else "unknown"
    except Exception as exc:  # the report still gets written
        return f"unavailable ({type(exc).__name__})"


def redis_version() -> str:
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
        try:
            return f"Redis {client.info('server')['redis_version']}"
        finally:
            client.close()
    except Exception as exc:  # the report still gets written
        return f"unavailable ({type(exc).__name__})"


def machine() -> list[tuple[str, str]]:
    from stockctl import __version__

    commit = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", str(ROOT), "status", "--porcelain", "--", "stockctl"])
    return [
        ("CPU", f"{os.cpu_count()} × {cpu_model()} (nproc {_first_line(['nproc'])})"),
        ("memory", memory()),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("PostgreSQL", postgres_version()),
        ("Redis", redis_version()),
        (
            "stockctl",
            f"{__version__} at {commit}"
            + (" (stockctl/ has uncommitted changes)" if dirty not in ("", "unknown") else ""),
        ),
    ]


def render(results: list[tuple[Path, list[dict[str, Any]], str | None, float]]) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`bench/run_all.py`); do not edit by hand. Each figure is",
        "measured against its raw limit in the same run; ratio = how close stockctl gets to that",
        "limit (1.0 = as fast as the raw limit).",
        "",
        f"Date: {now}",
        "",
        "| machine | |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in machine()),
        "",
        TABLE_HEADER,
    ]
    notes: list[str] = []
    for script, figures, error, _ in results:
        if error is not None:
            out.append(f"| {script.name} | **failed: {error}** | — | — | — |")
        for fig in figures:
            row = table_row(fig)
            if fig.get("note"):
                notes.append(str(fig["note"]))
                row = row.replace(" |", f" [{len(notes)}] |", 1)
            out.append(row)
    out.append("")
    if notes:
        out.append("Notes:")
        out.append("")
        out.extend(f"{i}. {note}" for i, note in enumerate(notes, 1))
        out.append("")
    runs = ", ".join(f"`{s.name}` {t:.0f} s" for s, _, _, t in results)
    out.append(f"Scripts run: {runs or 'none'}.")
    out.append("")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = p.parse_args()
    scripts = benchmarks()
    if args.names:
        wanted = {n.removesuffix(".py") for n in args.names}
        unknown = wanted - {s.stem for s in scripts}
        if unknown:
            log(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
            return 2
        scripts = [s for s in scripts if s.stem in wanted]
    results = [(s, *run(s)) for s in scripts]
    report = render(results)
    RESULTS.write_text(report, encoding="utf-8")
    print(report)
    log(f"wrote {RESULTS.relative_to(ROOT)}")
    return 1 if any(error for _, _, error, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
