"""Events benchmark: raw stream drain vs the event processor, and commit -> cache latency.

All three parts run in one invocation against the same Redis, in a dedicated logical database
(``STOCKCTL_BENCH_EVENTS_REDIS_URL``, default ``redis://127.0.0.1:6379/12``), with a random app
id / consumer group and cache prefix per part. Every stream and key the run creates there is
deleted at the end, even on failure.

(a) raw drain: ``--events`` (default 200,000) realistic stock events (reserve / release / adjust /
    receive changes with their threshold events, built with stockctl's own event code, spread
    over 10,000 products x 20 warehouses starting from the state ``stockctl seed`` makes, the
    versions increasing per row) are XADDed, pipelined, onto their topic streams. A consumer group
    created at 0 then drains them with XREADGROUP COUNT 1000 over all the processor's topics plus
    a pipelined XACK per reply, doing nothing else: events/s, the raw limit.
(b) the processor, one process, on the same entries (a fresh consumer group at 0 and a fresh
    cache prefix per run; the cache is warmed first with every row at the seeded state, as
    `warm-cache` leaves it): ``Runner(WorkerOptions(only=["processor"], burst=True))`` with one
    worker thread and ``--batch`` (default 1000; XREADGROUP COUNT is per stream), and again with
    the configured default (10 worker threads, batch 100). Timed from start to the burst's end.
    Afterwards every row's hash entry is checked against the last version published for it,
    and every plain key (warehouse, total, available, status, low_stock, product) of a sample of
    products against the values computed from those rows.
(c) latency: on a fresh PostgreSQL database (init + seed 1,000 products x 20 warehouses, every
    row given a million more units so reserves never run dry, the cache warmed from the
    database) ``stockctl worker run --only relay,processor`` runs as a separate process; the
    library commits changes at a steady ``--rate`` (default 1,000/s, open loop: change i is due
    at start + i/rate and is taken by whichever of ``--threads`` threads is free) for
    ``--seconds`` (default 20) after a 2 s warm-up. With ``--mix reserve`` (default) a change is
    ``sc.reserve(p, w, 1)`` (one statement on PostgreSQL) and every ``--sample``-th one (default
    10th) is ``sc.adjust(p, w, +1)``, whose returned version is timed; ``--mix adjust`` makes
    every change an adjust (about 1.6 ms of client CPU each: 1,000/s does not fit one Python
    process here). A sampled change is timed from the commit's return to the moment its version
    is seen in the row's hash field (``{prefix}:stock:{p}:rows``, field w) by a separate poller
    process that reads all outstanding samples in one pipelined round trip every millisecond
    (a process of its own so the writers' GIL does not delay its clock; CLOCK_MONOTONIC is
    shared between processes). Then the cache is checked against the database for every row,
    the worker is stopped with SIGTERM (it must exit 0) and the database is dropped.

The machine has two cores and may be shared: the 1-minute load average at start is reported.

Usage: bench/events.py [--json] [--events N] [--seconds S] [--rate R] [--threads T]
                       [--sample K] [--mix reserve|adjust] [--batch B] [--repeat R] [--parts abc]
"""

from __future__ import annotations

import gc
import json
import multiprocessing as mp
import os
import random
import shlex
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import (
    STOCKCTL,
    Figure,
    emit,
    fresh_pg_database,
    log,
    median,
    parser,
    stockctl,
)
from _pipeline import delete_matching, monotonic, poll_versions

from stockctl.clients.redis_cache import AGG_FIELD

REDIS_URL = os.environ.get("STOCKCTL_BENCH_EVENTS_REDIS_URL", "redis://127.0.0.1:6379/12")
PRODUCTS = 10_000
WAREHOUSES = 20
LATENCY_PRODUCTS = 1_000
READ_COUNT = 1000
WARMUP_SECONDS = 2.0
THROUGHPUT_GOAL = ">= 25,000 events/s and >= 0.25x raw drain"
LATENCY_GOAL = "p99 <= 50 ms (seed: 100 ms)"
UNIT = "events/s"


def load_average() -> float:
    return os.getloadavg()[0]


def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(REDIS_URL, socket_timeout=30)


# --------------------------------------------------------------------------- event generation


@dataclass
class Workload:
    """Published entries as (topic, CloudEvent JSON), and each row's state before and after."""

    entries: list[tuple[str, str]]
    initial: dict[tuple[str, str], Any]
    final: dict[tuple[str, str], Any]


def _change(rng: random.Random, before: Any, now: datetime) -> tuple[str, Any, dict[str, Any]]:
    """One realistic change of a row: (event type, row after, event context)."""
    from dataclasses import replace

    from stockctl.core import events as ev

    sellable, reserved = before.sellable, before.quantity_reserved
    avail = before.quantity_available
    roll = rng.random()
    after_at = {"version": before.version + 1, "last_movement_at": now}
    if roll < 0.5 and sellable > 0:
        q = rng.randint(1, min(3, sellable))
        order = f"order-{uuid.uuid4().hex[:12]}"
        context = {
            "reason": "reserved",
            "reference": order,
            "reservation_id": str(uuid.uuid4()),
            "order_id": order,
            "quantity": q,
            "expires_at": (now + timedelta(minutes=15)).isoformat(),
        }
        return (
            ev.STOCK_RESERVED,
            replace(before, quantity_reserved=reserved + q, **after_at),
            context,
        )
    if roll < 0.75 and reserved > 0:
        q = rng.randint(1, reserved)
        context = {"reason": "released", "reservation_id": str(uuid.uuid4()), "quantity": q}
        return (
            ev.STOCK_RELEASED,
            replace(before, quantity_reserved=reserved - q, **after_at),
            context,
        )
    if roll < 0.9:
        delta = rng.choice((-2, -1, 1, 3)) if sellable >= 2 else 1
        context = {"reason": "cycle count", "reference": None}
        return (
            ev.STOCK_ADJUSTED,
            replace(before, quantity_available=avail + delta, **after_at),
            context,
        )
    units = rng.randint(10, 200)
    context = {"reason": "receive", "reference": f"PO-{rng.randint(1, 99999)}"}
    return ev.STOCK_UPDATED, replace(before, quantity_available=avail + units, **after_at), context


def generate(n: int, products: int, warehouses: int, seed: int = 7) -> Workload:
    """N events from random changes of rows that start as `stockctl seed` leaves them."""
    from stockctl.core import seed as seeding
    from stockctl.core.events import change_events

    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(hours=1)
    plan = seeding.SeedPlan(products, warehouses)
    initial = {(r.product_id, r.warehouse_id): r for r in seeding.inventory(plan, start)}
    rows = dict(initial)
    keys = list(rows)
    source = "stockctl/warehouse"
    entries: list[tuple[str, str]] = []
    i = 0
    while len(entries) < n:
        key = keys[rng.randrange(len(keys))]
        before = rows[key]
        i += 1
        kind, after, context = _change(rng, before, start + timedelta(milliseconds=i))
        primary, *extra = change_events(kind, before, after, source, **context)
        rows[key] = after
        for event in (primary, *extra):
            entries.append((event.topic, event.to_json()))
    # Cut at N: only threshold events of the last change can fall off, never a primary one.
    return Workload(entries[:n], initial, rows)


def publish(client: Any, entries: Sequence[tuple[str, str]], chunk: int = 2000) -> None:
    for start in range(0, len(entries), chunk):
        pipe = client.pipeline(transaction=False)
        for topic, data in entries[start : start + chunk]:
            pipe.xadd(topic, {"data": data})
        pipe.execute()


# --------------------------------------------------------------------------- (a) raw drain


def raw_drain(client: Any, group: str, topics: Sequence[str], count: int) -> tuple[int, float]:
    """XREADGROUP + XACK of everything, no processing: (entries, seconds)."""
    for topic in topics:
        client.xgroup_create(topic, group, id="0", mkstream=True)
    streams = dict.fromkeys(topics, ">")
    total = 0
    started = time.perf_counter()
    while True:
        reply = client.xreadgroup(group, "raw", streams, count=count)
        if not reply:
            break
        pipe = client.pipeline(transaction=False)
        for stream, entries in reply:
            if entries:
                pipe.xack(stream, group, *[entry_id for entry_id, _ in entries])
                total += len(entries)
        pipe.execute()
    elapsed = time.perf_counter() - started
    pending = sum(int(client.xpending(t, group)["pending"]) for t in topics)
    if pending:
        raise SystemExit(f"raw drain left {pending} entries pending")
    return total, elapsed


# --------------------------------------------------------------------------- (b) processor


def by_product(rows: dict[tuple[str, str], Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for (product_id, _), row in sorted(rows.items()):
        out.setdefault(product_id, []).append(row)
    return out


def warm(cache: Any, rows: dict[tuple[str, str], Any], chunk: int = 200) -> None:
    """Fill the cache with these rows, as `warm-cache` does (one script call per chunk)."""
    from stockctl.core.projection import RowState

    products = list(by_product(rows).items())
    for start in range(0, len(products), chunk):
        cache.fill({p: [RowState.of(r) for r in rs] for p, rs in products[start : start + chunk]})


@dataclass
class ProcessorRun:
    label: str
    workers: int | None  # None: the configured default
    batch: int | None
    events: int = 0
    seconds: float = 0.0
    totals: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # seconds over the run

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def processor_run(run: ProcessorRun, work: Workload, run_id: str, sqlite_url: str) -> ProcessorRun:
    from stockctl.bootstrap import bootstrap
    from stockctl.settings import load_settings
    from stockctl.workers.runner import Runner, WorkerOptions

    tag = f"{run_id}{run.label}"
    settings = load_settings(
        database_url=sqlite_url,
        redis_url=REDIS_URL,
        app_id=f"bench-{tag}",
        cache_prefix=f"bench{tag}",
        # Lets one thread take a batch larger than the default queue of 1000 holds.
        worker_queue_size=max(1000, (run.workers or 1) * (run.batch or 0)),
    )
    app = bootstrap(settings)
    try:
        warm(app.cache(), work.initial)
        options = WorkerOptions(
            only=["processor"], workers=run.workers, batch_size=run.batch, burst=True
        )
        runner = Runner(app, options)
        before = cpu_counters(app.redis())
        started = time.perf_counter()
        code = runner.run(handle_signals=False)
        run.seconds = time.perf_counter() - started
        after = cpu_counters(app.redis())
        run.cpu = {k: after[k] - before[k] for k in after}
        if code != 0 or runner.errors:
            raise SystemExit(f"processor run {run.label} failed: exit {code}, {runner.errors}")
        run.events = sum(job.processed for job in runner.jobs)
        run.totals = _totals(runner.jobs)
        verify_cache(app.redis(), settings.cache_prefix, work)
    finally:
        app.close()
    return run


def cpu_counters(client: Any) -> dict[str, float]:
    """CPU seconds so far: this process, the Redis server, and its script calls (server-wide:
    other clients of the same server count too)."""
    cpu = client.info("cpu")
    scripts = client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0)
    return {
        "process": time.process_time(),
        "redis": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        "scripts": scripts / 1e6,
    }


def _totals(jobs: Sequence[Any]) -> dict[str, int]:
    out = {"applied": 0, "stale": 0, "duplicates": 0, "filled": 0, "dead_lettered": 0}
    for job in jobs:
        for name in ("applied", "stale", "duplicates", "filled"):
            out[name] += getattr(job.totals, name)
        out["dead_lettered"] += job.dead_lettered
    return out


def verify_cache(client: Any, prefix: str, work: Workload, sample: int = 500) -> None:
    """Every row's version and quantities, and every plain key of a sample of products."""
    from stockctl.core.projection import CacheKeys, ProductStock, RowState, product_values

    keys = CacheKeys(prefix)
    products = by_product(work.final)
    names = list(products)
    wrong: list[str] = []
    for start in range(0, len(names), 1000):
        pipe = client.pipeline(transaction=False)
        chunk = names[start : start + 1000]
        for p in chunk:
            pipe.hgetall(keys.rows(p))
        for p, held in zip(chunk, pipe.execute(), strict=True):
            held.pop(AGG_FIELD.encode(), None)  # the product's running totals, checked below
            expected = {
                r.warehouse_id.encode(): RowState.of(r).encode().encode() for r in products[p]
            }
            if held != expected:
                wrong.append(p)
    rng = random.Random(1)
    for p in rng.sample(names, min(sample, len(names))):
        stock = ProductStock(p, tuple(RowState.of(r) for r in products[p]))
        values = product_values(keys, stock)
        held = dict(zip(values, client.mget(list(values)), strict=True))
        detail = held.pop(keys.product(p))
        expected_detail = json.loads(values.pop(keys.product(p)))
        found = {k: v.decode() if v is not None else None for k, v in held.items()}
        if found != values or detail is None or json.loads(detail) != expected_detail:
            wrong.append(p)
    if wrong:
        raise SystemExit(
            f"cache differs from the published rows for {len(wrong)} products: {wrong[:5]}"
        )


# --------------------------------------------------------------------------- (c) latency


def poller(samples: Any, results: Any, redis_url: str, give_up: float) -> None:
    """Child process: time each sampled change until the cache holds its version.

    A sample is (rows key, warehouse, version, commit time, measured?, product, commit wall
    time); None ends the run. All outstanding samples are read in one pipelined round trip,
    then it sleeps ~1 ms. Returns (seconds, product, warehouse, version, commit wall time) of
    each measured sample, and how many were never seen.
    """
    import redis

    client = redis.Redis.from_url(redis_url)
    seen: list[tuple[float, str, str, int, float]] = []
    lost = 0
    for now, found, gone in poll_versions(client, samples, give_up):
        seen += [(now - s[3], s[5], s[1], s[2], s[6]) for s in found if s[4]]
        lost += len(gone)
    client.close()
    results.put((seen, lost))


@dataclass
class Schedule:
    """Open loop: change i is due at start + i / rate, whoever takes it."""

    rate: float
    total: int
    warmup: int
    sample: int
    start: float = 0.0
    taken: int = 0
    done: int = 0
    errors: int = 0
    first_error: str | None = None
    max_late: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> int | None:
        with self.lock:
            if self.taken >= self.total:
                return None
            self.taken += 1
            return self.taken - 1

    def finished(self, late: float, error: str | None) -> None:
        with self.lock:
            self.done += 1
            self.max_late = max(self.max_late, late)
            if error is not None:
                self.errors += 1
                self.first_error = self.first_error or error


def change(sc: Any, p: str, w: str, sampled: bool, mix: str) -> int | None:
    """One committed change; the row's new version when it is a sampled one."""
    if sampled or mix == "adjust":
        return int(sc.adjust(p, w, 1, reason="bench").version)
    sc.reserve(p, w, 1)  # one round trip on PostgreSQL; the library returns no row version
    return None


def writer(
    sc: Any, plan: Schedule, rows: Sequence[tuple[str, str]], samples: Any, prefix: str, mix: str
) -> None:
    rng = random.Random()
    while (i := plan.take()) is not None:
        due = plan.start + i / plan.rate
        late = monotonic() - due
        if late < 0:
            time.sleep(-late)
        p, w = rows[rng.randrange(len(rows))]
        sampled = i % plan.sample == 0
        try:
            version = change(sc, p, w, sampled, mix)
        except Exception as exc:  # counted and reported; the schedule goes on
            plan.finished(max(late, 0.0), f"{type(exc).__name__}: {exc}")
            continue
        committed, wall = monotonic(), time.time()
        if sampled:
            key = f"{prefix}:stock:{p}:rows"
            samples.put((key, w, version, committed, i >= plan.warmup, p, wall))
        plan.finished(max(late, 0.0), None)


class CpuMeter:
    """CPU seconds of some processes, and of the whole machine, over a window."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.tick = os.sysconf("SC_CLK_TCK")
        self.before = self._read()

    def _proc(self, pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / self.tick

    def _read(self) -> dict[str, float]:
        out = {name: self._proc(pid) for name, pid in self.pids.items()}
        cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        out["machine"] = (sum(cpu) - cpu[3] - cpu[4]) / self.tick
        out["wall"] = monotonic()
        return out

    def shares(self) -> dict[str, float]:
        """Cores used by each, over the window (1.0 = one core busy)."""
        after = self._read()
        wall = after["wall"] - self.before["wall"]
        return {k: (after[k] - self.before[k]) / wall for k in after if k != "wall"}


@dataclass
class LatencyResult:
    samples: list[tuple[float, str, str, int, float]]  # seconds, product, warehouse, version, wall
    lost: int
    achieved_rate: float
    plan: Schedule
    cpu: dict[str, float]
    worker_exit: int | None = None
    relay: list[float | None] = field(default_factory=list)  # commit -> XADD per sample, s

    @property
    def latencies(self) -> list[float]:
        return [x[0] for x in self.samples]


def drive(url: str, prefix: str, worker_pid: int, args: Any) -> LatencyResult:
    """Writers on a schedule, samples timed by the poller process."""
    import stockctl as lib

    ctx = mp.get_context("spawn")
    samples, results = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=poller, args=(samples, results, REDIS_URL, 10.0), daemon=True)
    proc.start()
    rows = [
        (f"P{p:06d}", f"WH{w:03d}")
        for p in range(1, LATENCY_PRODUCTS + 1)
        for w in (range(1, WAREHOUSES + 1))
    ]
    warmup = int(args.rate * WARMUP_SECONDS)
    plan = Schedule(args.rate, warmup + int(args.rate * args.seconds), warmup, args.sample)
    sc = lib.connect(url)
    try:
        threads = [
            threading.Thread(
                target=writer, args=(sc, plan, rows, samples, prefix, args.mix), daemon=True
            )
            for _ in range(args.threads)
        ]
        plan.start = monotonic() + 0.2
        for t in threads:
            t.start()
        time.sleep(max(0.0, plan.start + WARMUP_SECONDS - monotonic()))
        meter = CpuMeter({"worker": worker_pid, "bench": os.getpid(), "poller": proc.pid or 0})
        for t in threads:
            t.join()
        cpu = meter.shares()
        elapsed = monotonic() - plan.start - WARMUP_SECONDS
    finally:
        sc.close()
    samples.put(None)
    seen, lost = results.get(timeout=60)
    proc.join(10)
    return LatencyResult(seen, lost, (plan.done - warmup) / elapsed, plan, cpu)


def start_worker(
    url: str, app_id: str, prefix: str, logfile: Any, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCTL_")}
    env.update(
        STOCKCTL_DATABASE_URL=url,
        STOCKCTL_REDIS_URL=REDIS_URL,
        STOCKCTL_APP_ID=app_id,
        STOCKCTL_CACHE_PREFIX=prefix,
    )
    cmd = [STOCKCTL, "worker", "run", "--only", "relay,processor", "--log-level", "WARNING", *extra]
    return subprocess.Popen(
        cmd, env=env, cwd=tempfile.gettempdir(), stdout=logfile, stderr=subprocess.STDOUT
    )


def wait_ready(
    client: Any, app_id: str, worker: subprocess.Popen[bytes], timeout: float = 60
) -> None:
    from stockctl.core.catalog import TOPICS

    deadline = monotonic() + timeout
    while monotonic() < deadline:
        if worker.poll() is not None:
            raise SystemExit(f"the worker exited early with {worker.returncode}")
        beating = any(client.scan_iter(f"stockctl:heartbeat:{app_id}:*", count=1000))
        groups = all(client.exists(t) for t in TOPICS)
        if beating and groups:
            return
        time.sleep(0.1)
    raise SystemExit("the worker did not start within 60 s")


def stop_worker(worker: subprocess.Popen[bytes]) -> int:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
        return -9


def cache_matches_db(app: Any, products: Sequence[str], timeout: float = 30) -> bool:
    """Wait until every row's hash entry carries the database's version and quantities."""
    from stockctl.core.projection import RowState

    client, keys = app.redis(), app.cache().keys
    deadline = monotonic() + timeout
    while True:
        db = app.store.inventory_for_products(products)
        pipe = client.pipeline(transaction=False)
        for p in products:
            pipe.hgetall(keys.rows(p))
        held = dict(zip(products, pipe.execute(), strict=True))
        for h in held.values():
            h.pop(AGG_FIELD.encode(), None)
        same = all(
            held[p] == {r.warehouse_id.encode(): RowState.of(r).encode().encode() for r in rs}
            for p, rs in db.items()
        )
        if same or monotonic() > deadline:
            return same
        time.sleep(0.2)


def prepare_latency_db(url: str, prefix: str, app_id: str) -> Any:
    """Schema, 1,000 x 20 seeded rows, an app on them, and the cache warmed from them."""
    from stockctl.bootstrap import bootstrap
    from stockctl.settings import load_settings

    stockctl("init", database_url=url)
    stockctl(
        "seed",
        "--products",
        str(LATENCY_PRODUCTS),
        "--warehouses",
        str(WAREHOUSES),
        database_url=url,
    )
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:  # reserves never run dry
        conn.execute("UPDATE inventory SET quantity_available = quantity_available + 1000000")
    settings = load_settings(
        database_url=url, redis_url=REDIS_URL, app_id=app_id, cache_prefix=prefix
    )
    app = bootstrap(settings)
    products = [f"P{p:06d}" for p in range(1, LATENCY_PRODUCTS + 1)]
    rows = app.store.inventory_for_products(products)
    warm(app.cache(), {(r.product_id, r.warehouse_id): r for rs in rows.values() for r in rs})
    return app


def relay_delays(client: Any, samples: Sequence[tuple[Any, ...]]) -> list[float | None]:
    """Commit -> XADD of each sample (None if not found): the stream entry id carries the
    XADD's server time in ms."""
    from stockctl.core.events import STOCK_ADJUSTED

    added: dict[tuple[str, str, int], float] = {}
    start = "-"
    while True:
        entries = client.xrange(STOCK_ADJUSTED, start, "+", count=5000)
        for entry_id, fields in entries:
            data = json.loads(fields[b"data"])["data"]
            ms = int(entry_id.split(b"-")[0])
            added[(data["product_id"], data["warehouse_id"], data["version"])] = ms / 1000
        if len(entries) < 5000:
            break
        start = "(" + entries[-1][0].decode()
    out: list[float | None] = []
    for _, p, w, v, wall in samples:
        xadd = added.get((p, w, v))
        out.append(None if xadd is None else xadd - wall)
    return out


def latency(args: Any, run_id: str) -> LatencyResult:
    prefix, app_id = f"bench{run_id}lat", f"bench-{run_id}-lat"
    with fresh_pg_database("stockctl_bench_events") as url, tempfile.TemporaryFile() as logfile:
        log(f"(c) init + seed {LATENCY_PRODUCTS:,} products x {WAREHOUSES} warehouses ...")
        app = prepare_latency_db(url, prefix, app_id)
        worker = start_worker(url, app_id, prefix, logfile, shlex.split(args.worker_args))
        try:
            wait_ready(app.redis(), app_id, worker)
            log(
                f"(c) committing {args.rate:,.0f} changes/s for {WARMUP_SECONDS:.0f} + "
                f"{args.seconds:.0f} s ..."
            )
            result = drive(url, prefix, worker.pid, args)
            products = [f"P{p:06d}" for p in range(1, LATENCY_PRODUCTS + 1)]
            converged = cache_matches_db(app, products)
            result.relay = relay_delays(app.redis(), result.samples)
        finally:
            result_exit = stop_worker(worker)
            app.close()
            if result_exit != 0:
                logfile.seek(0)
                log(logfile.read().decode(errors="replace")[-4000:])
        if result_exit != 0:
            raise SystemExit(f"the worker exited {result_exit} on SIGTERM, expected 0")
        if not converged:
            raise SystemExit("(c) the cache did not converge to the database within 30 s")
    result.worker_exit = result_exit
    return result


# --------------------------------------------------------------------------- main


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def check_streams_free(client: Any) -> list[str]:
    """Our streams are the topics themselves: refuse to share them with anything else."""
    from stockctl.core.catalog import TOPICS
    from stockctl.settings import Settings

    streams = [*TOPICS, Settings.model_fields["dead_letter_topic"].default]
    taken = [s for s in streams if client.exists(s)]
    if taken:
        raise SystemExit(
            f"{REDIS_URL} already has streams {taken}: another run in progress? "
            "Set STOCKCTL_BENCH_EVENTS_REDIS_URL to a free database."
        )
    return streams


def cleanup(client: Any, streams: Sequence[str], run_id: str) -> None:
    removed = client.delete(*streams) if streams else 0
    for pattern in (f"bench{run_id}*", f"stockctl:heartbeat:bench-{run_id}*"):
        removed += delete_matching(client, pattern)
    log(f"cleanup: {removed:,} keys and streams removed from {REDIS_URL}")


@contextmanager
def bench_redis() -> Iterator[tuple[Any, list[str], str]]:
    client = redis_client()
    run_id = uuid.uuid4().hex[:8]
    streams = check_streams_free(client)
    try:
        yield client, streams, run_id
    finally:
        cleanup(client, streams, run_id)
        client.close()


def embedded_store_url(directory: str) -> str:
    """The processor's store is only read to fill products missing from the cache; the cache is
    warm here, so an empty SQLite schema will do."""
    import stockctl as lib

    url = f"sqlite:///{directory}/bench-events.db"
    with lib.connect(url) as sc:
        sc.init()
    return url


@dataclass
class Throughput:
    raw_rate: float
    raw_runs: list[float]
    runs: list[ProcessorRun]
    topics: dict[str, int]


def throughput(args: Any, client: Any, streams: Sequence[str], run_id: str) -> Throughput:
    from collections import Counter

    from stockctl.core.catalog import TOPICS

    log(f"(a) generating {args.events:,} events over {PRODUCTS:,} x {WAREHOUSES} rows ...")
    work = generate(args.events, PRODUCTS, WAREHOUSES)
    topics = dict(Counter(topic for topic, _ in work.entries).most_common())
    publish(client, work.entries)
    work.entries = []
    # The workload's 400,000 row objects live in this process, unlike in a worker: keep them out
    # of the garbage collector's scans, or its full collections would be charged to the drain
    # and the processor (it measured ~10 us/event here).
    gc.collect()
    gc.freeze()
    log(f"(a) published: {topics}")
    raw_runs = []
    for i in range(args.repeat):
        n, seconds = raw_drain(client, f"bench-{run_id}-raw{i}", TOPICS, READ_COUNT)
        if n != args.events:
            raise SystemExit(f"raw drain read {n} entries, expected {args.events}")
        raw_runs.append(n / seconds)
        log(f"(a) raw drain {i + 1}/{args.repeat}: {n:,} in {seconds:.2f} s = {n / seconds:,.0f}/s")
    plans = [("single", 1, args.batch), ("default", None, None)]
    runs = []
    with tempfile.TemporaryDirectory(prefix="stockctl-bench-events-") as tmp:
        store_url = embedded_store_url(tmp)
        for label, workers, batch in plans:
            for i in range(args.repeat):
                run = processor_run(
                    ProcessorRun(f"{label}{i}", workers, batch), work, run_id, store_url
                )
                log(
                    f"(b) processor {run.label}: {run.events:,} in {run.seconds:.2f} s = "
                    f"{run.rate:,.0f}/s {run.totals}; CPU s {run.cpu}"
                )
                if run.events != args.events:
                    raise SystemExit(f"processor run {run.label} processed {run.events}")
                runs.append(run)
    client.delete(*streams)  # (c) starts on empty streams
    return Throughput(median(raw_runs), raw_runs, runs, topics)


def middle(runs: Sequence[ProcessorRun], plan: str) -> ProcessorRun:
    mine = [r for r in runs if r.label.rstrip("0123456789") == plan]
    return sorted(mine, key=lambda r: r.rate)[len(mine) // 2]


def throughput_figures(t: Throughput, args: Any, load: float) -> list[Figure]:
    raw = round(t.raw_rate)
    shares = ", ".join(f"{k} {v / args.events:.0%}" for k, v in t.topics.items())
    figures = [
        Figure(
            name=f"raw XREADGROUP (COUNT {READ_COUNT}) + XACK drain, {args.events:,} events",
            value=raw,
            unit=UNIT,
            note=(
                f"no processing; {args.events:,} stock events over {PRODUCTS:,} products x "
                f"{WAREHOUSES} warehouses on {len(t.topics)} topic streams ({shares}); "
                f"1-min load average at start {load:.2f} on {os.cpu_count()} cores"
            ),
        )
    ]
    for plan, title in (
        ("single", "1 worker thread, batch {b}"),
        ("default", "default 10 workers x batch 100"),
    ):
        run = middle(t.runs, plan)
        per_event = {k: v / run.events * 1e6 for k, v in run.cpu.items()}
        figures.append(
            Figure(
                name=f"event processor, one process, {title.format(b=args.batch)}",
                value=round(run.rate),
                unit=UNIT,
                raw=raw,
                ratio=round(run.rate / t.raw_rate, 3),
                goal=THROUGHPUT_GOAL,
                note=(
                    f"same {args.events:,} entries, fresh consumer group at 0, cache warmed "
                    f"first; XREADGROUP COUNT is per stream, so a read takes up to that many from "
                    f"each topic; {run.totals['applied']:,} applied, {run.totals['stale']:,} "
                    f"stale (threshold events share their change's version; topics are read "
                    f"side by side), {run.totals['duplicates']} duplicates; every row's cache "
                    f"entry checked against the last published version afterwards; CPU per "
                    f"event: processor process {per_event['process']:.1f} us, Redis server "
                    f"{per_event['redis']:.1f} us; time inside apply scripts (elapsed, so "
                    f"including waits for a core; server-wide) {per_event['scripts']:.1f} us"
                ),
            )
        )
    return figures


def latency_figures(r: LatencyResult, args: Any, load: float) -> list[Figure]:
    ms = [x * 1000 for x in r.latencies]
    pairs = [(s[0], x) for s, x in zip(r.samples, r.relay, strict=True) if x is not None]
    relay = [x * 1000 for _, x in pairs]
    processor = [(t - x) * 1000 for t, x in pairs]
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in r.cpu.items())
    split = "; ".join(
        f"{label} p50 / p95 / p99 "
        + " / ".join(f"{percentile(xs, q):.1f}" for q in (50, 95, 99))
        + " ms"
        for label, xs in (
            ("of which commit -> XADD (relay, from the entry id's time)", relay),
            ("XADD -> visible (processor)", processor),
        )
        if xs
    )
    changes = (
        "reserve 1 unit (library, one-statement path), every sampled one an adjust +1"
        if args.mix == "reserve"
        else "adjust +1"
    )
    note = (
        f"changes: {changes}; "
        f"{len(ms):,} sampled changes (every {args.sample}th) of {args.seconds:.0f} s at "
        f"{r.achieved_rate:,.0f} changes/s achieved (target {args.rate:,.0f}/s, open loop, "
        f"{args.threads} writer threads, max {r.plan.max_late * 1000:.0f} ms behind schedule, "
        f"{r.plan.errors} errors); `stockctl worker run --only relay,processor` as a process on "
        f"PostgreSQL, {LATENCY_PRODUCTS:,} x {WAREHOUSES} rows; cores busy during the window: "
        f"{cpu}; {r.lost} samples never seen; worker exit on SIGTERM {r.worker_exit}; "
        f"{split}; "
        f"1-min load average at start {load:.2f} on {os.cpu_count()} cores"
    )
    figures = []
    for q in (50, 95, 99):
        figures.append(
            Figure(
                name=(
                    f"commit -> visible in cache, {args.rate:,.0f} changes/s target "
                    f"({r.achieved_rate:,.0f}/s achieved), p{q}"
                ),
                value=round(percentile(ms, q), 2),
                unit="ms",
                goal=LATENCY_GOAL if q == 99 else None,
                note=note if q == 50 else None,
            )
        )
    return figures


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000, help="events for (a) and (b)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds of (c)")
    p.add_argument("--rate", type=float, default=1000.0, help="changes/s committed in (c)")
    p.add_argument("--threads", type=int, default=16, help="writer threads in (c)")
    p.add_argument("--sample", type=int, default=10, help="time every Nth change in (c)")
    p.add_argument("--batch", type=int, default=1000, help="batch of the 1-thread processor")
    p.add_argument("--repeat", type=int, default=1, help="runs of (a) and each (b); medians")
    p.add_argument(
        "--mix",
        choices=("reserve", "adjust"),
        default="reserve",
        help="(c) changes: reserves of 1 unit with every sampled change an adjust +1, or all "
        "adjusts (about 3x the client CPU per change)",
    )
    p.add_argument(
        "--worker-args", default="", help="(c) extra `worker run` options, e.g. '--workers 2'"
    )
    p.add_argument(
        "--parts", default="abc", help="which parts to run: 'abc', 'ab' (throughput) or 'c'"
    )
    args = p.parse_args()
    load = load_average()
    log(f"1-minute load average at start: {load:.2f} ({os.cpu_count()} cores)")
    figures: list[Figure] = []
    with bench_redis() as (client, streams, run_id):
        if "a" in args.parts or "b" in args.parts:
            figures += throughput_figures(throughput(args, client, streams, run_id), args, load)
        if "c" in args.parts:
            figures += latency_figures(latency(args, run_id), args, load)
    emit(figures, args.json)
    if not args.json:
        print()
        for f in figures:
            if f.note:
                print(f"- {f.name}: {f.note}")


if __name__ == "__main__":
    main()
