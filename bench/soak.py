"""Soak: a steady rate of changes through the library on PostgreSQL for minutes, with `stockctl
worker run --only relay,processor` as a separate process keeping the Redis cache up to date.

Set-up: a fresh PostgreSQL database (dropped afterwards), `stockctl init` + `stockctl seed
--products 2000 --warehouses 20` (40,000 rows), every row given a million more units so a
reserve never runs dry, the cache warmed from the database; Redis on the benchmarks' own
database (see bench/_pipeline.py). Then the worker process is started and, once its heartbeat
is there, ``--threads`` threads of this process commit ``--rate`` changes/s (open loop: change
i is due at start + i/rate, whichever thread is free takes it) for ``--seconds`` after a 5 s
warm-up: every ``--sample``-th change is ``adjust(p, w, +1)`` and is timed; of the others 5%
release the oldest reservation this run holds and the rest ``reserve(p, w, 1)`` (rows at random).

Measured:

- commit -> cache latency of every sampled change: from the adjust's return to the moment the
  row's field of ``{prefix}:stock:{p}:rows`` holds its version, seen by a poller *process* that
  reads all outstanding samples in one pipelined round trip every millisecond (a process, so
  the writers' GIL does not delay its clock); p50 / p95 / p99 per ``--interval`` (60 s; 10 s
  with --quick) and over the whole run; a sample not seen within 10 s counts as 10 s;
- stream lag every second: outbox backlog + group lag + pending (what `stockctl events lag`
  shows, summed); its maximum per interval, and the time to drain after the last change;
- the worker's resident memory (VmRSS of its process) at the start of the measured window and at
  the end: flat means end <= start x 1.2 + 10 MB;
- invariants after the worker drained: oversold rows, rows whose reserved differs from their
  holds, and products whose cache differs from the database (stockctl.core.cache.verify over
  every product): all must be 0.

Exit 1 if an invariant is violated, the memory is not flat, or the worker does not exit 0 on
SIGTERM. The machine has two cores and may be shared: the load average is reported.

Usage: bench/soak.py [--json] [--quick] [--seconds D] [--rate N] [--interval S] [--threads T]
                     [--sample K] [--products P] [--warehouses W]
"""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from _common import Figure, emit, fresh_pg_database, log, parser, stockctl
from _pipeline import (
    Backlog,
    Lane,
    backlog,
    bench_lane,
    invariant_violations,
    load_average,
    monotonic,
    poll_versions,
    raise_stock,
    rss_mb,
    start_worker,
    wait_drained,
    wait_heartbeats,
)

WARMUP_SECONDS = 5.0
RELEASE_SHARE = 0.05
GIVE_UP_SECONDS = 10.0
P99_GOAL = "<= 50 ms (DESIGN.md: p99 <= 50 ms; the guide's 100 ms)"


# --------------------------------------------------------------------------- the poller process


def poller(samples: Any, results: Any, redis_url: str, give_up: float) -> None:
    """Child process: time each sample (rows key, warehouse, version, commit time) until the
    cache holds that version; None ends the run. Sends lists of (commit time, seconds) as they
    are seen (seconds = ``give_up`` for a sample never seen), then None."""
    import redis

    client = redis.Redis.from_url(redis_url)
    for now, seen, lost in poll_versions(client, samples, give_up):
        timed = [(s[3], now - s[3]) for s in seen] + [(s[3], give_up) for s in lost]
        if timed:
            results.put(timed)
    client.close()
    results.put(None)


# --------------------------------------------------------------------------- the writers


@dataclass
class Plan:
    """Open loop: change i is due at start + i / rate, whichever thread takes it."""

    rate: float
    total: int
    sample: int
    start: float = 0.0
    taken: int = 0
    done: int = 0
    errors: int = 0
    first_error: str | None = None
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("reserve", "release", "adjust"), 0)
    )
    max_late: float = 0.0
    per_second: dict[int, int] = field(default_factory=dict)  # changes done, by second of run
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> int | None:
        """The next change's index; None once all are taken or the window is over (a machine
        that cannot keep up skips the rest rather than stretching the soak)."""
        with self.lock:
            if self.taken >= self.total or monotonic() > self.start + self.total / self.rate + 1:
                return None
            self.taken += 1
            return self.taken - 1

    def finished(self, op: str, late: float, error: str | None) -> None:
        with self.lock:
            self.done += 1
            second = int(monotonic() - self.start)
            self.per_second[second] = self.per_second.get(second, 0) + 1
            self.max_late = max(self.max_late, late)
            self.counts[op] += 1
            if error is not None:
                self.errors += 1
                self.first_error = self.first_error or error


def change(
    sc: Any, i: int, plan: Plan, row: tuple[str, str], held: deque[str], roll: float
) -> tuple[str, int | None]:
    """One committed change: (operation, the row's new version when it is a sampled one)."""
    p, w = row
    if i % plan.sample == 0:
        return "adjust", int(sc.adjust(p, w, 1, reason="soak").version)
    if roll < RELEASE_SHARE:
        try:
            rid = held.popleft()
        except IndexError:
            rid = None
        if rid is not None:
            sc.release(rid, "soak")
            return "release", None
    held.append(str(sc.reserve(p, w, 1).id))
    return "reserve", None


def writer(
    sc: Any,
    plan: Plan,
    rows: list[tuple[str, str]],
    held: deque[str],
    samples: Any,
    prefix: str,
) -> None:
    rng = random.Random()
    while (i := plan.take()) is not None:
        late = monotonic() - (plan.start + i / plan.rate)
        if late < 0:
            time.sleep(-late)
        row = rows[rng.randrange(len(rows))]
        op = "adjust" if i % plan.sample == 0 else "reserve"
        try:
            op, version = change(sc, i, plan, row, held, rng.random())
        except Exception as exc:  # counted and reported; the schedule goes on
            plan.finished(op, max(late, 0.0), f"{type(exc).__name__}: {exc}")
            continue
        if version is not None:
            samples.put((f"{prefix}:stock:{row[0]}:rows", row[1], version, monotonic()))
        plan.finished(op, max(late, 0.0), None)


# --------------------------------------------------------------------------- the run


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of unsorted values (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(min(rank, len(ordered))) - 1]


@dataclass
class Interval:
    index: int
    latencies: list[float] = field(default_factory=list)  # seconds
    lag_max: int = 0
    changes: int = 0
    rss_mb: float = 0.0

    def line(self, length: float) -> str:
        ms = [x * 1000 for x in self.latencies]
        return (
            f"{self.index * length:5.0f}-{(self.index + 1) * length:.0f} s: "
            f"{self.changes / length:6,.0f} changes/s, commit->cache p50 {percentile(ms, 50):5.1f} "
            f"p95 {percentile(ms, 95):5.1f} p99 {percentile(ms, 99):6.1f} ms "
            f"({len(ms)} samples), lag max {self.lag_max:,}, worker RSS {self.rss_mb:.1f} MB"
        )


@dataclass
class Soak:
    """What the run saw; filled by the monitor and collector threads."""

    interval: float
    seconds: float
    start: float = 0.0  # start of the measured window (after the warm-up)
    intervals: list[Interval] = field(default_factory=list)
    warmup_latencies: list[float] = field(default_factory=list)
    lag_max: int = 0
    rss_start: float = 0.0
    rss_end: float = 0.0
    drain_seconds: float | None = None
    violations: dict[str, int] = field(default_factory=dict)
    worker_exit: int | None = None
    achieved_rate: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bucket(self, t: float) -> Interval | None:
        """The interval of monotonic time ``t`` (None: warm-up or after the end)."""
        k = int((t - self.start) // self.interval)
        if t < self.start or k >= len(self.intervals):
            return None
        return self.intervals[k]

    @property
    def latencies(self) -> list[float]:
        return [x for i in self.intervals for x in i.latencies]


def collect(results: Any, soak: Soak) -> None:
    """Thread: file the poller's results by the interval of their commit."""
    while (batch := results.get()) is not None:
        with soak.lock:
            for committed, seconds in batch:
                found = soak.bucket(committed)
                (found.latencies if found else soak.warmup_latencies).append(seconds)


def report_due(soak: Soak, plan: Plan, worker_pid: int, reported: int, now: float) -> int:
    """Log every interval ended more than a second before ``now`` (its last samples have
    landed) and not yet reported, with its change count and the worker's memory."""
    while reported < len(soak.intervals) and now >= soak.start + (reported + 1) * soak.interval + 1:
        item = soak.intervals[reported]
        first = int(soak.start - plan.start + reported * soak.interval)
        with plan.lock:
            item.changes = sum(
                plan.per_second.get(s, 0) for s in range(first, first + int(soak.interval))
            )
        item.rss_mb = rss_mb(worker_pid)
        log(item.line(soak.interval))
        reported += 1
    return reported


def monitor(app: Any, worker_pid: int, plan: Plan, soak: Soak, stop: threading.Event) -> None:
    """Thread: the backlog every second, a report line per interval (the rest at the end)."""
    reported = 0
    while not stop.wait(1.0):
        now = monotonic()
        try:
            behind: Backlog | None = backlog(app)
        except Exception as exc:  # a slow query must not end the soak
            log(f"lag probe failed: {exc}")
            behind = None
        with soak.lock:
            current = soak.bucket(now)
            if behind is not None:
                soak.lag_max = max(soak.lag_max, behind.total)
                if current is not None:
                    current.lag_max = max(current.lag_max, behind.total)
        reported = report_due(soak, plan, worker_pid, reported, now)
    report_due(soak, plan, worker_pid, reported, float("inf"))


def drive(app: Any, url: str, prefix: str, worker_pid: int, args: Any, soak: Soak) -> Plan:
    import stockctl as lib

    ctx = mp.get_context("spawn")
    samples, results = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(
        target=poller,
        args=(samples, results, app.settings.redis_url.get_secret_value(), GIVE_UP_SECONDS),
        daemon=True,
    )
    proc.start()
    rows = [
        (f"P{p:06d}", f"WH{w:03d}")
        for p in range(1, args.products + 1)
        for w in range(1, args.warehouses + 1)
    ]
    count = int(args.rate * (WARMUP_SECONDS + args.seconds))
    plan = Plan(args.rate, count, args.sample)
    held: deque[str] = deque()
    soak.intervals = [Interval(k) for k in range(int(-(-args.seconds // soak.interval)))]
    sc = lib.connect(url, db_pool_max_idle=args.threads)
    stop = threading.Event()
    collector = threading.Thread(target=collect, args=(results, soak), daemon=True)
    watcher = threading.Thread(
        target=monitor, args=(app, worker_pid, plan, soak, stop), daemon=True
    )
    try:
        threads = [
            threading.Thread(
                target=writer, args=(sc, plan, rows, held, samples, prefix), daemon=True
            )
            for _ in range(args.threads)
        ]
        plan.start = monotonic() + 0.5
        soak.start = plan.start + WARMUP_SECONDS
        collector.start()
        for t in threads:
            t.start()
        time.sleep(max(0.0, soak.start - monotonic()))
        soak.rss_start = rss_mb(worker_pid)
        done_at_start = plan.done
        watcher.start()
        for t in threads:
            t.join()
        ended = monotonic()
        soak.rss_end = rss_mb(worker_pid)
        soak.achieved_rate = (plan.done - done_at_start) / (ended - soak.start)
    finally:
        sc.close()
        samples.put(None)
    soak.drain_seconds = wait_drained(app, 120)
    collector.join(GIVE_UP_SECONDS + 30)
    stop.set()
    watcher.join(10)
    proc.join(10)
    return plan


def prepare(url: str, lane: Lane, args: Any) -> tuple[Any, str, str]:
    from stockctl.core.warming import warm

    log(f"init + seed {args.products:,} products x {args.warehouses} warehouses ...")
    stockctl("init", database_url=url)
    stockctl(
        "seed",
        "--products",
        str(args.products),
        "--warehouses",
        str(args.warehouses),
        database_url=url,
    )
    raise_stock(url)
    app_id, prefix = lane.names("soak")
    app = lane.app(url, app_id, prefix)
    result = warm(app.store, app.cache())
    log(f"cache warmed: {result.rows:,} rows, {result.products:,} products, {result.seconds:.1f} s")
    return app, app_id, prefix


def run(args: Any) -> tuple[Soak, Plan]:
    soak = Soak(args.interval, args.seconds)
    with fresh_pg_database("stockctl_bench_soak") as url, bench_lane() as lane:
        app, app_id, prefix = prepare(url, lane, args)
        worker = start_worker(lane.env(url, app_id, prefix), "soak", "--only", "relay,processor")
        try:
            wait_heartbeats(app, [worker])
            log(
                f"worker pid {worker.pid} up ({rss_mb(worker.pid):.1f} MB); committing "
                f"{args.rate:,.0f} changes/s for {WARMUP_SECONDS:.0f} + {args.seconds:.0f} s; "
                f"load average {load_average()}"
            )
            plan = drive(app, url, prefix, worker.pid, args, soak)
            if soak.drain_seconds is None:
                log(f"the worker did not drain within 120 s: {backlog(app)}")
            products = [f"P{p:06d}" for p in range(1, args.products + 1)]
            soak.violations = invariant_violations(app, products)
            soak.worker_exit = worker.stop()
        finally:
            worker.close()
            app.close()
    return soak, plan


# --------------------------------------------------------------------------- report


def figures(soak: Soak, plan: Plan, args: Any, load_start: str) -> list[Figure]:
    ms = [x * 1000 for x in soak.latencies]
    allowed = soak.rss_start * 0.2 + 10
    growth = soak.rss_end - soak.rss_start
    lost = sum(1 for x in soak.latencies if x >= GIVE_UP_SECONDS)
    violations = sum(soak.violations.values()) + (0 if soak.drain_seconds is not None else 1)
    per_interval = "; ".join(
        f"{i.index * soak.interval:.0f} s: p50/p95/p99 "
        + "/".join(f"{percentile([x * 1000 for x in i.latencies], q):.1f}" for q in (50, 95, 99))
        + f" ms, lag max {i.lag_max:,}, RSS {i.rss_mb:.0f} MB"
        for i in soak.intervals
    )
    drain = "never" if soak.drain_seconds is None else f"{soak.drain_seconds:.1f} s"
    note = (
        f"{args.seconds:.0f} s at {soak.achieved_rate:,.0f} changes/s achieved (target "
        f"{args.rate:,.0f}/s open loop, {args.threads} threads, max {plan.max_late * 1000:.0f} ms "
        f"behind schedule; {plan.counts['reserve']:,} reserves, {plan.counts['release']:,} "
        f"releases, {plan.counts['adjust']:,} adjusts, {plan.errors} errors, "
        f"{plan.total - plan.taken:,} scheduled changes skipped at the end of the window"
        f"{f' ({plan.first_error})' if plan.errors else ''}) through the library on PostgreSQL, "
        f"{args.products:,} x {args.warehouses} rows, `worker run --only relay,processor` as a "
        f"process; {len(ms):,} sampled changes (every {args.sample}th, an adjust +1), {lost} never "
        f"seen; per {soak.interval:.0f} s: {per_interval}; stream lag (outbox + group lag + "
        f"pending) max {soak.lag_max:,}, drained {drain} after the last change; load average at "
        f"start {load_start}, at end {load_average()}"
    )
    return [
        Figure("soak_p50_ms", round(percentile(ms, 50), 2), "ms", note=note),
        Figure("soak_p95_ms", round(percentile(ms, 95), 2), "ms"),
        Figure("soak_p99_ms", round(percentile(ms, 99), 2), "ms", goal=P99_GOAL),
        Figure(
            "soak_achieved_rate",
            round(soak.achieved_rate, 1),
            "changes/s",
            goal=f">= {args.rate * 0.95:g}",
        ),
        Figure("soak_stream_lag_max", soak.lag_max, "events"),
        Figure(
            "soak_worker_rss_growth_mb",
            round(growth, 1),
            "MB",
            goal=f"<= {allowed:.1f} (flat: end <= start x 1.2 + 10 MB)",
            note=(
                f"worker VmRSS {soak.rss_start:.1f} MB after the warm-up, "
                f"{soak.rss_end:.1f} MB at the end"
            ),
        ),
        Figure(
            "soak_invariant_violations",
            violations,
            "",
            goal="0",
            note=(
                f"{soak.violations}, worker drained: {soak.drain_seconds is not None}, "
                f"worker exit on SIGTERM {soak.worker_exit}"
            ),
        ),
    ]


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="60 s, reported every 10 s")
    p.add_argument("--seconds", type=float, default=None, help="measured seconds (default 600)")
    p.add_argument("--rate", type=float, default=1000.0, help="changes/s")
    p.add_argument("--interval", type=float, default=None, help="report every S s (60; 10 quick)")
    p.add_argument("--threads", type=int, default=16, help="writer threads")
    p.add_argument("--sample", type=int, default=20, help="time every Nth change")
    p.add_argument("--products", type=int, default=2000)
    p.add_argument("--warehouses", type=int, default=20)
    args = p.parse_args()
    args.seconds = args.seconds or (60.0 if args.quick else 600.0)
    args.interval = args.interval or (10.0 if args.quick else 60.0)
    if args.seconds <= 0 or args.rate <= 0 or args.interval <= 0 or args.sample < 1:
        p.error("--seconds, --rate, --interval and --sample must be positive")
    load_start = load_average()
    log(f"load average at start: {load_start}")
    soak, plan = run(args)
    emit(figures(soak, plan, args, load_start), args.json)
    bad = sum(soak.violations.values()) or soak.drain_seconds is None or soak.worker_exit != 0
    if soak.rss_end > soak.rss_start * 1.2 + 10:
        log("FAILED: the worker's memory grew")
        bad = True
    if bad:
        log(f"FAILED: invariants {soak.violations}, worker exit {soak.worker_exit}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
