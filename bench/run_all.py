"""Run every benchmark in bench/ and rewrite bench/RESULTS.md.

A benchmark is any bench/*.py except this file and helpers whose name starts with `_`. Each is
run as `python bench/<name>.py --json` and must print one JSON object on stdout (progress on
stderr)::

    {"figures": [{"name": ..., "value": ..., "unit": ..., "raw": ..., "ratio": ..., "goal": ...}]}

(see bench/_common.py). A script that fails is listed in RESULTS.md with its error (and any
figures it printed), the others still run, and this script exits 1.

Each script's latest figures are kept in bench/results/<name>.json, and RESULTS.md shows the
latest of every script, each with its date: `run_all.py NAME` refreshes NAME's part only.
A script holding a line ``# bench: opt-in`` (bench/scale.py: heavy) runs only when named.

``--quick`` runs every script in a short mode and writes bench/RESULTS-quick.md (results in
bench/results/quick/) instead: a script whose ``--help`` offers ``--quick`` gets it; one that
does not gets the small sizes of QUICK_FLAGS that its ``--help`` offers; others run as they are.

Each figure's goal is compared with its value where the goal reads simply: ">= N", "<= N",
"> N", "< N" (optionally "Nx ...": against the ratio), a bare number (equal), or parts joined
with "and"; the table says pass, FAIL, or "-" when it cannot tell.

Usage: bench/run_all.py [--quick] [--script-args ARGS] [NAME ...]   (names without .py: run only
those; ARGS, e.g. "--products 20000", are given to each script run)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import PG_ADMIN_URL, REDIS_URL, ROOT, log, table_row

BENCH = Path(__file__).resolve().parent
OPT_IN_MARK = "# bench: opt-in"
# Small sizes for scripts without --quick, each used only if the script's --help offers it.
QUICK_FLAGS: dict[str, list[tuple[str, str]]] = {
    "events": [("--events", "20000"), ("--seconds", "5")],
    "api": [("--seconds", "2")],
    "cache": [("--runs", "1"), ("--calls", "200")],
}


@dataclass
class Mode:
    quick: bool

    @property
    def results(self) -> Path:
        return BENCH / ("RESULTS-quick.md" if self.quick else "RESULTS.md")

    @property
    def store(self) -> Path:
        return BENCH / "results" / ("quick" if self.quick else "")

    @property
    def name(self) -> str:
        return "quick" if self.quick else "full"


@dataclass
class Result:
    script: str  # file name
    figures: list[dict[str, Any]]
    error: str | None
    seconds: float
    date: str
    args: list[str] = field(default_factory=list)

    def save(self, mode: Mode) -> None:
        mode.store.mkdir(parents=True, exist_ok=True)
        path = mode.store / f"{Path(self.script).stem}.json"
        path.write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Result | None:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None


def benchmarks() -> list[Path]:
    me = Path(__file__).resolve()
    return sorted(p for p in BENCH.glob("*.py") if p.resolve() != me and not p.name.startswith("_"))


def opt_in(script: Path) -> bool:
    return any(line.strip() == OPT_IN_MARK for line in script.read_text().splitlines())


def quick_args(script: Path) -> list[str]:
    """What makes the script short: --quick if it has it, else the QUICK_FLAGS it offers."""
    try:
        proc = subprocess.run(
            [sys.executable, str(script), "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return []
    offered = set(re.findall(r"--[a-z][a-z0-9-]*", proc.stdout))
    if "--quick" in offered:
        return ["--quick"]
    return [
        x
        for flag, value in QUICK_FLAGS.get(script.stem, [])
        if flag in offered
        for x in (flag, value)
    ]


def parse_figures(stdout: str) -> list[dict[str, Any]]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    figures = json.loads(lines[-1])["figures"]
    if not isinstance(figures, list) or not all(isinstance(f, dict) for f in figures):
        raise TypeError("figures is not a list of objects")
    return figures


def run(script: Path, mode: Mode, given: list[str]) -> Result:
    """Run one benchmark script; its figures even if it then exits non-zero."""
    extra = (quick_args(script) if mode.quick else []) + given
    log(f"== {script.name} {' '.join(extra)}".rstrip())
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script), "--json", *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=None,  # progress goes straight to the terminal
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    error = None if proc.returncode == 0 else f"exit {proc.returncode}"
    try:
        figures = parse_figures(proc.stdout)
    except (IndexError, ValueError, KeyError, TypeError) as exc:
        figures = []
        error = error or f"unreadable output ({exc})"
    log(f"== {script.name}: {elapsed:.0f} s{f', {error}' if error else ''}")
    return Result(script.name, figures, error, elapsed, date, extra)


# --------------------------------------------------------------------------- goals

_NUMBER = r"(-?\d[\d,]*(?:\.\d+)?)"
_COMPARISON = re.compile(r"(<=|>=|<|>|==)\s*" + _NUMBER + r"\s*(x)?")
_BARE = re.compile(r"\s*" + _NUMBER + r"\s*")
_OPS = {
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "==": lambda a, b: a == b,
}


def verdict(fig: dict[str, Any]) -> str:
    """pass / FAIL / - (no goal, or one this cannot read) for a figure against its goal."""
    goal, value = fig.get("goal"), fig.get("value")
    if not goal or not isinstance(value, int | float):
        return "-"
    checks: list[bool] = []
    for part in re.split(r"\band\b", str(goal)):
        m = _COMPARISON.search(part)
        if m is not None:
            op, number, times = m.group(1), float(m.group(2).replace(",", "")), m.group(3)
        elif (bare := _BARE.fullmatch(part)) is not None:
            op, number, times = "==", float(bare.group(1).replace(",", "")), None
        else:
            return "-"
        subject = fig.get("ratio") if times else value
        if not isinstance(subject, int | float):
            return "-"
        checks.append(_OPS[op](float(subject), number))
    return "pass" if checks and all(checks) else "FAIL"


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


HEADER = (
    "| figure | value | raw limit | ratio | goal | pass/fail |\n"
    "| --- | --- | --- | --- | --- | --- |"
)


def render(results: list[Result], mode: Mode, ran: list[str]) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = "make bench-quick" if mode.quick else "make bench"
    out = [
        "# Benchmark results" + (" (quick mode)" if mode.quick else ""),
        "",
        f"Written by `{title}` (`bench/run_all.py`); do not edit by hand. Each figure is",
        "measured against its raw limit in the same run; ratio = how close stockctl gets to that",
        "limit (1.0 = as fast as the raw limit). Each script's part shows its latest run (date",
        "beside it): a run of some scripts only refreshes theirs. Opt-in scripts (`make",
        "bench-scale`) appear once they have been run.",
        "",
        f"Written: {now}; this run: {', '.join(f'`{n}`' for n in ran) or 'none'}. Load average",
        f"(1 / 5 / 15 min) at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "| machine | |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in machine()),
        "",
        HEADER,
    ]
    notes: list[str] = []
    for r in results:
        how = " ".join(r.args) or mode.name
        out.append(f"| **{r.script}** ({how}, {r.date}, {r.seconds:.0f} s) | | | | | |")
        if r.error is not None:
            out.append(f"| {r.script} | **failed: {r.error}** | — | — | — | FAIL |")
        for fig in r.figures:
            row = table_row(fig)
            if fig.get("note"):
                notes.append(str(fig["note"]))
                row = row.replace(" |", f" [{len(notes)}] |", 1)
            out.append(f"{row} {verdict(fig)} |")
    out.append("")
    if notes:
        out.append("Notes:")
        out.append("")
        out.extend(f"{i}. {note}" for i, note in enumerate(notes, 1))
        out.append("")
    verdicts = [verdict(f) for r in results for f in r.figures]
    out.append(
        f"Goals: {verdicts.count('pass')} pass, {verdicts.count('FAIL')} FAIL, "
        f"{verdicts.count('-')} without a readable goal."
    )
    out.append("")
    return "\n".join(out)


def latest(mode: Mode, scripts: list[Path], fresh: list[Result]) -> list[Result]:
    """This run's results and, for every other script, its stored latest, in name order."""
    by_name = {r.script: r for r in fresh}
    for script in scripts:
        if script.name not in by_name:
            stored = Result.load(mode.store / f"{script.stem}.json")
            if stored is not None:
                by_name[script.name] = stored
    return [by_name[s.name] for s in scripts if s.name in by_name]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="benchmarks to run (default: all but opt-in ones)")
    p.add_argument("--quick", action="store_true", help="short modes; writes RESULTS-quick.md")
    p.add_argument("--script-args", default="", help="more options for each script run")
    args = p.parse_args()
    mode = Mode(args.quick)
    every = benchmarks()
    if args.names:
        wanted = {n.removesuffix(".py") for n in args.names}
        unknown = wanted - {s.stem for s in every}
        if unknown:
            log(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
            return 2
        scripts = [s for s in every if s.stem in wanted]
    else:
        scripts = [s for s in every if not opt_in(s)]
    started = time.perf_counter()
    results = []
    for script in scripts:
        result = run(script, mode, shlex.split(args.script_args))
        result.save(mode)
        results.append(result)
    report = render(latest(mode, every, results), mode, [s.name for s in scripts])
    mode.results.write_text(report, encoding="utf-8")
    print(report)
    log(f"wrote {mode.results.relative_to(ROOT)} after {time.perf_counter() - started:.0f} s")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
