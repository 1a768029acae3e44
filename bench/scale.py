"""Scale: the guide's 10x (100,000 products x 100 warehouses = 10,000,000 inventory rows) on
PostgreSQL against 200,000 rows (10,000 x 20): seed, warm-cache, Redis memory, reservations/s
and events/s at each size, and the query plans of the reserve statement and the warm scan.

Heavy (about 5 GB of database and a few GB of Redis at full size, many minutes): not part of
`make bench`; run it with `make bench-scale` or `bench/run_all.py scale`.

# bench: opt-in

For each size, on a fresh PostgreSQL database (dropped afterwards) and the benchmarks' own Redis
database (bench/_pipeline.py; every key it writes is deleted before the next size):

1. `stockctl init`, then `stockctl seed --products P --warehouses W` timed as a process, then
   ANALYZE (what an operator runs after a bulk load; autovacuum would get there later);
2. `stockctl warm-cache -o json` as a process: its reported time, and Redis ``used_memory``
   before and after (the keys of every product: rows hash, plain keys, product JSON);
3. the plan of the warm scan (the ordered read `warm-cache` streams through a server-side
   cursor): EXPLAIN of the cursor, and EXPLAIN (ANALYZE, BUFFERS) of the same SELECT;
4. reservations/s: ``--threads`` threads calling ``Stockctl.reserve(p, w, 1)`` for
   ``--seconds`` on rows picked at random (BERNOULLI sample) among those with stock, as
   bench/reserve.py's library phase does; EXPLAIN (ANALYZE, BUFFERS) of the one-statement
   reserve on such a row, in a transaction rolled back;
5. events/s: the events of those reservations are published (the relay, burst) and processed
   by the worker's processor in this process (burst mode, default 10 threads x batch 100) on
   the warm cache: entries / seconds.

Usage: bench/scale.py [--json] [--quick] [--products P] [--warehouses W] [--seconds S]
                      [--threads T] [--base-products P] [--base-warehouses W]
"""

from __future__ import annotations

import json
import random
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

from _common import STOCKCTL, Figure, emit, fresh_pg_database, log, parser, pg_connect, stockctl
from _pipeline import Lane, bench_lane, load_average, monotonic, stream_entries

WARM_SELECT = (
    "SELECT product_id, warehouse_id, version, quantity_available, quantity_reserved,"
    " low_stock_threshold FROM inventory ORDER BY product_id, warehouse_id"
)


@dataclass
class Size:
    products: int
    warehouses: int
    seed_seconds: float = 0.0
    seed_load_seconds: float = 0.0
    database_mb: float = 0.0
    warm_seconds: float = 0.0
    warm_rows: int = 0
    redis_mb: float = 0.0
    reserved: int = 0
    reserve_errors: int = 0
    first_error: str | None = None
    reserve_seconds: float = 0.0
    events: int = 0
    event_seconds: float = 0.0
    plans: dict[str, str] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.products * self.warehouses

    @property
    def label(self) -> str:
        return f"{self.rows:,} rows ({self.products:,} x {self.warehouses})"

    @property
    def reserve_rate(self) -> float:
        return self.reserved / self.reserve_seconds if self.reserve_seconds else 0.0

    @property
    def event_rate(self) -> float:
        return self.events / self.event_seconds if self.event_seconds else 0.0


# --------------------------------------------------------------------------- steps


def seed(url: str, size: Size) -> None:
    stockctl("init", database_url=url)
    log(f"[{size.label}] stockctl seed ...")
    started = monotonic()
    args = ("--products", str(size.products), "--warehouses", str(size.warehouses), "-o", "json")
    proc = stockctl("seed", *args, database_url=url)
    size.seed_seconds = monotonic() - started
    size.seed_load_seconds = float(json.loads(proc.stdout)["seconds"])
    with pg_connect(url.rsplit("/", 1)[1]) as conn:
        conn.execute("ANALYZE")
        (size.database_mb,) = conn.execute(
            "SELECT pg_database_size(current_database()) / 1048576.0"
        ).fetchone()
    log(f"[{size.label}] seeded in {size.seed_seconds:.1f} s, database {size.database_mb:,.0f} MB")


def redis_used_mb(client: Any) -> float:
    return int(client.info("memory")["used_memory"]) / 1048576


def warm(url: str, lane: Lane, app_id: str, prefix: str, size: Size) -> None:
    before = redis_used_mb(lane.client)
    proc = subprocess.run(
        [STOCKCTL, "warm-cache", "-o", "json"],
        env=lane.env(url, app_id, prefix),
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"warm-cache failed: {proc.stderr.strip()[-2000:]}")
    report = json.loads(proc.stdout)
    size.warm_seconds, size.warm_rows = float(report["seconds"]), int(report["rows"])
    size.redis_mb = redis_used_mb(lane.client) - before
    log(
        f"[{size.label}] warm-cache {size.warm_rows:,} rows in {size.warm_seconds:.1f} s, "
        f"Redis +{size.redis_mb:,.0f} MB"
    )


def explain(url: str, sql: str, params: Any = None) -> str:
    """The plan text; statements are run in a transaction that is rolled back."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(sql, params).fetchall()
        conn.rollback()
    return "\n".join(str(r[0]) for r in rows)


def targets(url: str, size: Size, wanted: int = 50_000) -> list[tuple[str, str]]:
    """Rows at random with sellable stock (a reserve of 1 never finds one short)."""
    percent = min(100.0, 100.0 * wanted * 1.2 / size.rows)
    with pg_connect(url.rsplit("/", 1)[1]) as conn:
        rows = conn.execute(
            f"SELECT product_id, warehouse_id FROM inventory TABLESAMPLE BERNOULLI ({percent})"
            " WHERE quantity_available - quantity_reserved >= 10"
        ).fetchall()
    return [(str(p), str(w)) for p, w in rows]


def reserve_phase(url: str, rows: list[tuple[str, str]], size: Size, args: Any) -> None:
    import stockctl as lib

    sc = lib.connect(url, db_pool_max_open=40, db_pool_max_idle=args.threads)
    lock = threading.Lock()

    def work(seconds: float, out: list[int]) -> None:
        rng = random.Random()
        ok = errors = 0
        first = None
        stop = monotonic() + seconds
        while monotonic() < stop:
            p, w = rows[rng.randrange(len(rows))]
            try:
                sc.reserve(p, w, 1)
                ok += 1
            except Exception as exc:  # counted and reported
                errors += 1
                first = first or f"{type(exc).__name__}: {exc}"
        with lock:
            out[0] += ok
            out[1] += errors
            size.first_error = size.first_error or first

    def phase(seconds: float) -> tuple[list[int], float]:
        out = [0, 0]
        threads = [threading.Thread(target=work, args=(seconds, out)) for _ in range(args.threads)]
        started = monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out, monotonic() - started

    try:
        phase(1.0)  # opens the pool's connections; its reservations are published too
        (ok, errors), elapsed = phase(args.seconds)
    finally:
        sc.close()
    size.reserved, size.reserve_errors, size.reserve_seconds = ok, errors, elapsed
    log(f"[{size.label}] {ok:,} reservations in {elapsed:.1f} s = {size.reserve_rate:,.0f}/s")


def reserve_plan(url: str, row: tuple[str, str]) -> str:
    """EXPLAIN ANALYZE of the library's one-statement reserve, rolled back."""
    import uuid
    from datetime import UTC, datetime, timedelta

    from reserve import captured_envelopes

    from stockctl.store.reservation_sql import _FAST_RESERVE

    now = datetime.now(UTC)
    params: dict[str, Any] = {
        "p": row[0],
        "w": row[1],
        "q": 1,
        "now": now,
        "exp": now + timedelta(minutes=15),
        "rid": str(uuid.uuid4()),
        "order": None,
        **{f"e{n}": str(uuid.uuid4()) for n in (1, 2, 3)},
        **captured_envelopes(),
    }
    return explain(url, "EXPLAIN (ANALYZE, BUFFERS) " + _FAST_RESERVE, params)


def events_phase(app: Any, lane: Lane, size: Size) -> None:
    from stockctl.daemons.workers.runner import Runner, WorkerOptions

    Runner(app, WorkerOptions(only=["relay"], burst=True)).run(handle_signals=False)
    size.events = stream_entries(lane.client)
    runner = Runner(app, WorkerOptions(only=["processor"], burst=True))
    started = monotonic()
    runner.run(handle_signals=False)
    size.event_seconds = monotonic() - started
    done = sum(j.processed for j in runner.jobs)
    if done != size.events:
        raise SystemExit(f"processed {done} of {size.events} entries")
    log(f"[{size.label}] {size.events:,} events in {size.event_seconds:.2f} s")


def measure(lane: Lane, size: Size, args: Any) -> Size:
    with fresh_pg_database("stockctl_bench_scale") as url:
        seed(url, size)
        app_id, prefix = lane.names(f"r{size.rows}")
        app = lane.app(url, app_id, prefix)
        try:
            warm(url, lane, app_id, prefix, size)
            size.plans["warm scan (cursor)"] = explain(
                url, f"EXPLAIN DECLARE c NO SCROLL CURSOR WITH HOLD FOR {WARM_SELECT}"
            )
            log(f"[{size.label}] EXPLAIN ANALYZE of the warm scan ...")
            size.plans["warm scan"] = explain(url, f"EXPLAIN (ANALYZE, BUFFERS) {WARM_SELECT}")
            rows = targets(url, size)
            size.plans["reserve"] = reserve_plan(url, rows[0])
            reserve_phase(url, rows, size, args)
            events_phase(app, lane, size)
        finally:
            app.close()
            lane.clean_streams()
            removed = lane.clean_prefix(prefix)
            log(f"[{size.label}] {removed:,} cache keys deleted")
    for name, plan in size.plans.items():
        log(f"[{size.label}] plan of the {name}:\n{plan}")
    return size


# --------------------------------------------------------------------------- report


def ratio(big: float, base: float) -> float | None:
    return round(big / base, 3) if base else None


def figures(base: Size, big: Size, load_start: str) -> list[Figure]:
    """Each figure at the big size, with the base size's as the 'raw' column."""

    def fig(name: str, b: float, s: float, unit: str, goal: str | None = None) -> Figure:
        return Figure(
            f"{name} ({big.rows:,} rows; raw: at {base.rows:,})",
            round(b, 2),
            unit,
            round(s, 2),
            ratio(b, s),
            goal,
        )

    def plan_line(size: Size, name: str) -> str:
        lines = size.plans.get(name, "").splitlines()
        top = lines[0].strip() if lines else "?"
        timing = [x.strip() for x in lines if x.strip().startswith("Execution Time")]
        return f"{top}{' / ' + timing[0] if timing else ''}"

    per_row = 1048576 * big.redis_mb / max(big.warm_rows, 1)
    first_error = big.first_error or base.first_error
    note = (
        f"ratio = value at {big.rows:,} / value at {base.rows:,}. Seed {big.seed_seconds:.0f} s "
        f"(load {big.seed_load_seconds:.0f} s) vs {base.seed_seconds:.1f} s; database "
        f"{big.database_mb:,.0f} MB vs {base.database_mb:,.0f} MB; Redis {per_row:.0f} bytes per "
        f"row at {big.rows:,} ({1048576 * base.redis_mb / max(base.warm_rows, 1):.0f} at "
        f"{base.rows:,}); reserve errors {big.reserve_errors} / {base.reserve_errors}"
        f"{f' ({first_error})' if first_error else ''}"
        f"; plans at {big.rows:,}: warm cursor {plan_line(big, 'warm scan (cursor)')}; warm "
        f"SELECT {plan_line(big, 'warm scan')}; reserve {plan_line(big, 'reserve')}; at "
        f"{base.rows:,}: warm SELECT {plan_line(base, 'warm scan')}; reserve "
        f"{plan_line(base, 'reserve')}; load average at start {load_start}, at end "
        f"{load_average()}"
    )
    out = [
        fig("scale_seed_seconds", big.seed_seconds, base.seed_seconds, "s"),
        fig(
            "scale_seed_rows_per_s",
            big.rows / big.seed_seconds,
            base.rows / base.seed_seconds,
            "rows/s",
        ),
        fig("scale_warm_seconds", big.warm_seconds, base.warm_seconds, "s"),
        fig(
            "scale_warm_rows_per_s",
            big.warm_rows / big.warm_seconds,
            base.warm_rows / base.warm_seconds,
            "rows/s",
        ),
        fig("scale_redis_used_mb", big.redis_mb, base.redis_mb, "MB"),
        fig(
            "scale_reserve_per_s",
            big.reserve_rate,
            base.reserve_rate,
            "reservations/s",
            ">= 0.5x at 200K",
        ),
        fig("scale_events_per_s", big.event_rate, base.event_rate, "events/s", ">= 0.5x at 200K"),
    ]
    out[0].note = note
    return out


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2,000 x 100 against 2,000 x 20, 3 s")
    p.add_argument("--products", type=int, default=None, help="default 100,000 (quick 2,000)")
    p.add_argument("--warehouses", type=int, default=100)
    p.add_argument("--base-products", type=int, default=None, help="default 10,000 (quick 2,000)")
    p.add_argument("--base-warehouses", type=int, default=20)
    p.add_argument("--seconds", type=float, default=None, help="reserve phase (10; quick 3)")
    p.add_argument("--threads", type=int, default=16)
    args = p.parse_args()
    args.products = args.products or (2_000 if args.quick else 100_000)
    args.base_products = args.base_products or (2_000 if args.quick else 10_000)
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    load_start = load_average()
    log(f"load average at start: {load_start}")
    with bench_lane() as lane:
        base = measure(lane, Size(args.base_products, args.base_warehouses), args)
        big = measure(lane, Size(args.products, args.warehouses), args)
    emit(figures(base, big, load_start), args.json)
    return 1 if base.reserve_errors or big.reserve_errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
