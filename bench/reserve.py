"""Reserve benchmark: reservations/s through the library vs pgbench running the same SQL.

One run, on a fresh PostgreSQL database (dropped afterwards, even on failure): `init`, `stockctl
seed --products 10000 --warehouses 20` (200,000 inventory rows), every row's quantity_available
raised to 1,000,000,000 so no phase ever runs dry, VACUUM ANALYZE. Then, on two workloads --
spread (a random row out of all 200,000) and hot row (P000001 at WH001) -- both sides for
``--seconds`` each (default 10):

- library: 16 threads on the spread, 64 (``--hot-threads``) on the hot row, each calling
  ``Stockctl.reserve(product, warehouse, 1)`` in a loop (one pool, 40 open / 20 idle; a short
  untimed warm-up opens the connections first), merged reservations on as by default (issue 19:
  concurrent reserves of one row in the process run as one statement; ``--no-merge``: off);
  on the hot row every call is timed (p99, goal <= 20 ms);
- pgbench: ``pgbench -n -c 16|64 -j 2 -T N -M prepared`` with a script of the very statement the
  library sends (``_FAST_RESERVE`` of stockctl/store/reservation_sql.py, taken from the library
  at run time): product / warehouse from ``\\set ... random()`` formatted like the guide's ids,
  event ids from gen_random_uuid(), the reservation id from a random int64, times from now(),
  and the CloudEvent envelopes the library builds
  (captured from it) bound as parameters as the library binds them. -M extended is the fallback
  if the server refused to prepare the statement; the mode used is reported.

Each side's time is split in two halves run library, pgbench, pgbench, library (A B B A, with a
CHECKPOINT before each), so a drift in machine load weighs on both alike; rates are successes
over summed time (pgbench's excluding connection set-up).

Then the hot row over HTTP: ``stockctl serve`` (one process) on the same database under
``wrk -c 64`` POSTing the reserve (bench/_reserve_http.py), against the same pgbench hot-row
figure (needs wrk: make bench-tools; skipped with --no-merge).

The ratio is library (or HTTP) / pgbench: goals >= 0.5 on the spread (which merging must not make
worse), >= 5 on the hot row, >= 2 over HTTP. At the end the database is checked:
oversold units (quantity_reserved > quantity_available), rows whose quantity_reserved differs
from the sum of their ACTIVE + CONFIRMED reservations, and reservations counted against the
successes reported by every side. Exit 1 if any unit is oversold, any row drifts, or any
reservation raised an error.

With --quick each phase lasts 2 s (explicit --seconds still wins).

Usage: bench/reserve.py [--json] [--quick] [--seconds N] [--threads T] [--hot-threads T]
                        [--no-merge]
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from _common import Figure, emit, fresh_pg_database, log, parser, stockctl
from _reserve_http import HttpResult, hot_row_over_http
from _reserve_http import available as http_available

PRODUCTS = 10_000
WAREHOUSES = 20
STOCK = 1_000_000_000
HOT = (1, 1)  # P000001 at WH001
GOAL = ">= 0.5x pgbench"
HOT_GOAL = ">= 5x pgbench"  # merged reservations (issue 19)
HTTP_GOAL = ">= 2x pgbench"
UNIT = "reservations/s"


def pid(n: int) -> str:
    return f"P{n:06d}"


def wid(n: int) -> str:
    return f"WH{n:03d}"


# --------------------------------------------------------------------------- database setup


def prepare(url: str) -> None:
    """Schema, 200K seeded rows, stock too big to run dry, fresh statistics."""
    import psycopg

    import stockctl as lib

    log("init + seed 10,000 products x 20 warehouses ...")
    sc = lib.connect(url)
    try:
        sc.init()
    finally:
        sc.close()
    stockctl("seed", "--products", str(PRODUCTS), "--warehouses", str(WAREHOUSES), database_url=url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE inventory SET quantity_available = %s", (STOCK,))
        conn.execute("VACUUM ANALYZE")
        rows, lo, hi = conn.execute(
            "SELECT count(*), min(product_id || '/' || warehouse_id),"
            " max(product_id || '/' || warehouse_id) FROM inventory"
        ).fetchone()
    expected = (PRODUCTS * WAREHOUSES, f"{pid(1)}/{wid(1)}", f"{pid(PRODUCTS)}/{wid(WAREHOUSES)}")
    if (rows, lo, hi) != expected:
        raise SystemExit(f"seed left {(rows, lo, hi)}, expected {expected}")
    log(f"{rows:,} inventory rows, quantity_available = {STOCK:,} each")


def checkpoint(url: str) -> None:
    """Same starting point for every phase: no dirty buffers left from the one before."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


# --------------------------------------------------------------------------- library side


@dataclass
class Phase:
    successes: int = 0
    errors: int = 0
    first_error: str | None = None
    elapsed: float = 0.0
    cpu: float = 0.0  # CPU time of this process (all threads) spent in the phase
    latencies: list[float] = field(default_factory=list)  # seconds per call (hot row only)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def rate(self) -> float:
        return self.successes / self.elapsed if self.elapsed else 0.0

    def p99_ms(self) -> float:
        got = sorted(self.latencies)
        return got[min(len(got) - 1, int(len(got) * 0.99))] * 1000 if got else 0.0

    def add(
        self,
        ok: int,
        errors: int,
        first_error: str | None,
        elapsed: float = 0.0,
        latencies: list[float] | None = None,
    ) -> None:
        with self.lock:
            self.latencies += latencies or []
            self.successes += ok
            self.errors += errors
            self.first_error = self.first_error or first_error
            self.elapsed += elapsed


def _worker(sc: Any, hot: bool, seconds: float, start: threading.Barrier, out: Phase) -> None:
    rng = random.Random()
    products = [pid(n) for n in range(1, PRODUCTS + 1)]
    warehouses = [wid(n) for n in range(1, WAREHOUSES + 1)]
    reserve = sc.reserve
    ok = errors = 0
    first: str | None = None
    took: list[float] = []
    clock = time.perf_counter
    start.wait()
    stop = clock() + seconds
    while (began := clock()) < stop:
        if hot:
            p, w = pid(HOT[0]), wid(HOT[1])
        else:
            p, w = rng.choice(products), rng.choice(warehouses)
        try:
            reserve(p, w, 1)
            ok += 1
        except Exception as exc:  # counted and reported; the run goes on
            errors += 1
            first = first or f"{type(exc).__name__}: {exc}"
        if hot:
            took.append(clock() - began)
    out.add(ok, errors, first, latencies=took)


def library_phase(sc: Any, threads: int, seconds: float, hot: bool) -> Phase:
    """``threads`` threads reserving 1 unit each call for ``seconds``; counts successes."""
    out = Phase()
    began: list[float] = []
    cpu_began: list[float] = []

    def go() -> None:
        began.append(time.perf_counter())
        cpu_began.append(time.process_time())

    start = threading.Barrier(threads + 1, action=go)
    pool = [
        threading.Thread(target=_worker, args=(sc, hot, seconds, start, out), daemon=True)
        for _ in range(threads)
    ]
    for t in pool:
        t.start()
    start.wait()
    for t in pool:
        t.join()
    out.elapsed = time.perf_counter() - began[0]
    out.cpu = time.process_time() - cpu_began[0]
    return out


# --------------------------------------------------------------------------- pgbench side

# How each bind parameter of _FAST_RESERVE is produced in the pgbench script. Product and
# warehouse ids come from \set random numbers (formatted like the guide's ids), event ids from
# gen_random_uuid(), the reservation's int64 id from a random number (so the reservation and
# its ledger line carry the same one), times from now(); the envelopes, topics and actor are -D
# variables that pgbench -M prepared binds as parameters, as the library binds them.
PGBENCH_VALUES = {
    "p": "('P' || lpad(:p::text, 6, '0'))",
    "w": "('WH' || lpad(:w::text, 3, '0'))",
    "q": ":q",
    "now": "now()",
    "exp": "(now() + interval '15 minutes')",
    "rid": ":rid",
    "order": "NULL::text",
    "actor": ":actor",
    "e1": "gen_random_uuid()::text",
    "e2": "gen_random_uuid()::text",
    "e3": "gen_random_uuid()::text",
    "t1": ":t1",
    "t2": ":t2",
    "t3": ":t3",
    "j1": ":j1",
    "j2": ":j2",
    "j3": ":j3",
}


def pgbench_sql() -> str:
    """The library's one-statement reserve with pgbench expressions for its parameters."""
    from stockctl.store.reservation_sql import _FAST_RESERVE

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in PGBENCH_VALUES:
            raise SystemExit(f"_FAST_RESERVE has a parameter this bench does not know: {name}")
        return PGBENCH_VALUES[name]

    sql = re.sub(r"%\((\w+)\)s", value, _FAST_RESERVE.strip())
    return sql.rstrip(";") + ";\n"


def pgbench_script(hot: bool) -> str:
    if hot:
        head = [f"\\set p {HOT[0]}", f"\\set w {HOT[1]}"]
    else:
        head = [f"\\set p random(1, {PRODUCTS})", f"\\set w random(1, {WAREHOUSES})"]
    head += ["\\set q 1", "\\set rid random(1, 9223372036854775806)"]
    return "\n".join(head) + "\n" + pgbench_sql()


def captured_envelopes() -> dict[str, str]:
    """The actor, topics and JSON envelopes the library sends for one reserve of 1 unit.

    The core's fast reserve is run against a stand-in store that records what it is given (the
    envelopes are built before any statement is sent), so no database is touched.
    """
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    from stockctl.core import holding

    seen: dict[str, str] = {}

    class Recorder:
        backend = "postgresql"

        def fast_reservation_id(self) -> int:
            return 1

        def reserve_fast(self, r: Any, actor: str, *events: Any) -> bool:
            seen["actor"] = actor
            for n, e in enumerate(events, start=1):
                seen[f"t{n}"] = e.type
                seen[f"j{n}"] = json.dumps(e.to_dict())
            return True

    ctx = SimpleNamespace(
        store=Recorder(),
        clock=lambda: datetime.now(UTC),
        source="stockctl/warehouse",
        actor="stockctl",
    )
    holding.reserve_fast(ctx, pid(HOT[0]), wid(HOT[1]), 1, timedelta(minutes=15), None)
    if set(seen) != {"actor", "t1", "t2", "t3", "j1", "j2", "j3"}:
        raise SystemExit(f"could not capture the library's event envelopes: {sorted(seen)}")
    return seen


@dataclass
class PgbenchResult:
    tps: float
    transactions: int
    failed: int
    mode: str

    def merge(self, other: PgbenchResult) -> PgbenchResult:
        """Two runs as one: all transactions over the summed time (connections excluded)."""
        elapsed = self.transactions / self.tps + other.transactions / other.tps
        done = self.transactions + other.transactions
        return PgbenchResult(done / elapsed, done, self.failed + other.failed, other.mode)


def pgbench(url: str, hot: bool, clients: int, seconds: int) -> PgbenchResult:
    """Run the script; -M prepared, or extended if the server refuses to prepare it."""
    variables = captured_envelopes()
    with tempfile.TemporaryDirectory(prefix="stockctl-bench-") as tmp:
        script = Path(tmp) / ("reserve_hot.sql" if hot else "reserve_spread.sql")
        script.write_text(pgbench_script(hot), encoding="utf-8")
        for mode in ("prepared", "extended"):
            cmd = ["pgbench", "-n", "-c", str(clients), "-j", "2", "-T", str(seconds)]
            cmd += ["-M", mode, "-f", str(script)]
            for name, val in variables.items():
                cmd += ["-D", f"{name}={val}"]
            proc = subprocess.run([*cmd, url], capture_output=True, text=True, check=False)
            if proc.returncode == 0:
                return parse_pgbench(proc.stdout, mode)
            log(f"pgbench -M {mode} failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    raise SystemExit("pgbench failed in every protocol mode")


def parse_pgbench(out: str, mode: str) -> PgbenchResult:
    tps = re.search(
        r"tps = ([\d.]+) \((?:without initial connection time|excluding connections establ)", out
    )
    done = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if not tps or not done:
        raise SystemExit(f"could not read pgbench's output:\n{out}")
    return PgbenchResult(
        float(tps.group(1)), int(done.group(1)), int(failed.group(1)) if failed else 0, mode
    )


# --------------------------------------------------------------------------- checks


@dataclass
class Checks:
    oversold_units: int
    oversold_rows: int
    drift_rows: int
    reservations: int


def check(url: str) -> Checks:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        units, rows = conn.execute(
            "SELECT coalesce(sum(quantity_reserved - quantity_available), 0), count(*)"
            " FROM inventory WHERE quantity_reserved > quantity_available"
        ).fetchone()
        (drift,) = conn.execute(
            """
            SELECT count(*) FROM inventory i
              LEFT JOIN (SELECT product_id, warehouse_id, sum(quantity) AS held
                           FROM reservations WHERE status IN ('ACTIVE', 'CONFIRMED')
                          GROUP BY product_id, warehouse_id) h
                USING (product_id, warehouse_id)
             WHERE i.quantity_reserved <> coalesce(h.held, 0)
            """
        ).fetchone()
        (total,) = conn.execute("SELECT count(*) FROM reservations").fetchone()
    return Checks(int(units), int(rows), int(drift), int(total))


# --------------------------------------------------------------------------- the run


@dataclass
class Run:
    warmup: Phase
    lib_spread: Phase
    lib_hot: Phase
    pg_spread: PgbenchResult
    pg_hot: PgbenchResult
    http_hot: HttpResult | None
    checks: Checks
    merges: Any  # the library's HotRows stats over the hot phase (None: merging off)

    @property
    def reported(self) -> int:
        """Reservations every side reported as made (warm-ups included)."""
        phases = (self.warmup, self.lib_spread, self.lib_hot)
        http = self.http_hot.successes + self.http_hot.warmup if self.http_hot else 0
        return (
            sum(p.successes for p in phases)
            + sum(g.transactions for g in (self.pg_spread, self.pg_hot))
            + http
        )


def measure(sc: Any, url: str, threads: int, seconds: int, hot: bool) -> tuple[Phase, Any]:
    """Library and pgbench on one workload for ``seconds`` each, in halves ordered A B B A, so
    a drift in machine load (other processes, table growth) weighs on both sides alike."""
    halves = [seconds // 2, seconds - seconds // 2] if seconds >= 2 else [seconds]
    lib = Phase()
    pg: PgbenchResult | None = None
    for i, half in enumerate(halves):
        for side in ("library", "pgbench") if i % 2 == 0 else ("pgbench", "library"):
            checkpoint(url)
            if side == "library":
                part = library_phase(sc, threads, half, hot)
                lib.add(part.successes, part.errors, part.first_error, part.elapsed, part.latencies)
                lib.cpu += part.cpu
                log(
                    f"  library {part.rate:,.0f}/s over {part.elapsed:.1f} s, "
                    f"{cpu_ms(part):.2f} ms CPU per reservation"
                )
            else:
                sc.app.store.engine.dispose()  # the pool's idle connections: room for pgbench
                run_ = pgbench(url, hot, threads, half)
                log(f"  pgbench {run_.tps:,.0f} tps over {half} s (-M {run_.mode})")
                pg = run_ if pg is None else pg.merge(run_)
    return lib, pg


def run(seconds: int, threads: int, hot_threads: int, merge: bool) -> Run:
    import stockctl as lib

    with fresh_pg_database("stockctl_bench_reserve") as url:
        prepare(url)
        sc = lib.connect(url, db_pool_max_open=40, db_pool_max_idle=20, reserve_merge=merge)
        try:
            warmup = library_phase(sc, threads, min(1.0, seconds / 5), hot=False)  # open the pool
            log(f"spread over {PRODUCTS * WAREHOUSES:,} rows, {threads} threads / clients:")
            lib_spread, pg_spread = measure(sc, url, threads, seconds, hot=False)
            log(f"hot row {pid(HOT[0])}/{wid(HOT[1])}, {hot_threads} threads / clients:")
            hot_rows = sc.app.ctx.hot_rows
            before = replace(hot_rows.stats) if hot_rows is not None else None
            lib_hot, pg_hot = measure(sc, url, hot_threads, seconds, hot=True)
            merges = _merged_since(before, hot_rows.stats) if hot_rows is not None else None
        finally:
            sc.close()
        http_hot = None
        if merge and http_available():
            log(f"hot row over HTTP (stockctl serve), wrk -c {hot_threads}:")
            http_hot = hot_row_over_http(url, pid(HOT[0]), wid(HOT[1]), hot_threads, seconds)
        elif merge:
            log("wrk is not on PATH (make bench-tools): no HTTP figure")
        checks = check(url)
    return Run(warmup, lib_spread, lib_hot, pg_spread, pg_hot, http_hot, checks, merges)


def _merged_since(before: Any, after: Any) -> dict[str, float]:
    merges = after.merges - before.merges
    requests = after.requests - before.requests
    return {
        "merges": merges,
        "mean": requests / merges if merges else 0.0,
        "largest": after.largest,
        "wait_ms": (after.waited - before.waited) / requests * 1000 if requests else 0.0,
    }


def cpu_ms(phase: Phase) -> float:
    return phase.cpu / phase.successes * 1000 if phase.successes else 0.0


def figures(r: Run, threads: int, hot_threads: int, shared: str) -> list[Figure]:
    def ratio(lib: Phase, pg: PgbenchResult) -> float | None:
        return round(lib.rate / pg.tps, 3) if pg.tps else None

    def note(where: str, lib: Phase, pg: PgbenchResult, threads: int = threads) -> str:
        text = (
            f"{where}: {threads} threads calling Stockctl.reserve(product, warehouse, 1), "
            f"{lib.successes:,} reserved in {lib.elapsed:.1f} s; raw = pgbench -c {threads} -j 2 "
            f"-M {pg.mode} running the library's one-statement reserve, {pg.transactions:,} "
            f"transactions; library process CPU {cpu_ms(lib):.2f} ms per reservation"
        )
        if lib.errors or pg.failed:
            text += f"; errors: library {lib.errors} ({lib.first_error}), pgbench {pg.failed}"
        return text + shared

    m = r.merges
    merged = (
        f"; merged reservations on: {m['merges']:,} merges, {m['mean']:.1f} reserves each on "
        f"average (largest {m['largest']}), {m['wait_ms']:.2f} ms mean wait before a merge"
        if m
        else "; merged reservations off (--no-merge)"
    )
    hot = r.lib_hot

    c = r.checks
    return [
        Figure(
            "reserve_spread_per_s",
            round(r.lib_spread.rate, 1),
            UNIT,
            round(r.pg_spread.tps, 1),
            ratio(r.lib_spread, r.pg_spread),
            GOAL,
            note("random row of 200,000", r.lib_spread, r.pg_spread),
        ),
        Figure(
            "reserve_hot_per_s",
            round(hot.rate, 1),
            UNIT,
            round(r.pg_hot.tps, 1),
            ratio(hot, r.pg_hot),
            HOT_GOAL,
            note("one hot row", hot, r.pg_hot, hot_threads) + merged,
        ),
        Figure(
            "reserve_hot_p99_ms",
            round(hot.p99_ms(), 2),
            "ms",
            goal="<= 20",
            note=f"library, one hot row, {hot_threads} threads: p99 of {len(hot.latencies):,} "
            f"calls (successes and errors), each timed around Stockctl.reserve",
        ),
        *_http_figures(r, hot_threads, shared),
        Figure(
            "oversold_units",
            c.oversold_units,
            "units",
            goal="0",
            note=(
                f"after the run: {c.oversold_rows} rows with reserved > available, {c.drift_rows} "
                f"rows whose reserved differs from their ACTIVE+CONFIRMED reservations; "
                f"{c.reservations:,} reservations in the database, {r.reported:,} reported made"
                + (
                    f" (plus up to {2 * hot_threads} over HTTP that wrk left in flight when its "
                    "two runs ended: the server still made them, wrk does not count them)"
                    if r.http_hot is not None
                    else ""
                )
            ),
        ),
        Figure("reserved_drift_rows", c.drift_rows, "rows", goal="0"),
    ]


def _http_figures(r: Run, connections: int, shared: str) -> list[Figure]:
    h = r.http_hot
    if h is None:
        return []
    return [
        Figure(
            "reserve_hot_http_per_s",
            round(h.rate, 1),
            UNIT,
            round(r.pg_hot.tps, 1),
            round(h.rate / r.pg_hot.tps, 3) if r.pg_hot.tps else None,
            HTTP_GOAL,
            f"one hot row over HTTP: `stockctl serve` (1 process, merged reservations on), wrk "
            f"-t2 -c{connections} POST /v1/inventory/reserve quantity 1, {h.successes:,} reserved "
            f"in {h.seconds:.1f} s, {h.non_2xx} non-2xx, {h.socket_errors} socket errors, p99 "
            f"{h.p99_ms:.1f} ms; raw = the same pgbench hot-row figure as reserve_hot_per_s "
            f"(-c {connections}){shared}",
        )
    ]


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 s phases")
    p.add_argument("--seconds", type=int, default=None, help="each timed phase (10; quick 2)")
    p.add_argument(
        "--threads", type=int, default=16, help="spread: library threads = pgbench clients"
    )
    p.add_argument(
        "--hot-threads", type=int, default=64, help="hot row: threads = clients = connections"
    )
    p.add_argument(
        "--no-merge", action="store_true", help="reserve_merge off (no HTTP phase): today's"
    )
    args = p.parse_args()
    if args.seconds is None:
        args.seconds = 2 if args.quick else 10
    if args.seconds < 1 or args.threads < 1 or args.hot_threads < 1:
        p.error("--seconds, --threads and --hot-threads must be at least 1")
    load = os.getloadavg()
    r = run(args.seconds, args.threads, args.hot_threads, not args.no_merge)
    shared = (
        f"; load average {load[0]:.2f} / {load[1]:.2f} (1 / 5 min) at start on "
        f"{os.cpu_count()} cores, machine shared with other work"
    )
    emit(figures(r, args.threads, args.hot_threads, shared), args.json)
    c = r.checks
    log(
        f"oversold units {c.oversold_units} (rows {c.oversold_rows}), reserved drift rows "
        f"{c.drift_rows}, reservations {c.reservations:,}"
    )
    bad = c.oversold_units or c.oversold_rows or c.drift_rows
    if bad:
        log("FAILED: stock oversold or reserved counters drifted")
    errors = r.lib_spread.errors + r.lib_hot.errors + r.pg_spread.failed + r.pg_hot.failed
    if r.http_hot is not None:
        errors += r.http_hot.non_2xx + r.http_hot.socket_errors
    if errors:
        log(f"FAILED: {errors} reservations raised errors ({r.lib_spread.first_error})")
    return 1 if bad or errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
