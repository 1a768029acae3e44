"""Events benchmark: the event processor on standalone Redis and on a Redis Cluster, and commit
-> cache latency.

All parts run in one invocation. Standalone: a dedicated logical database
(``STOCKCTL_BENCH_EVENTS_REDIS_URL``, default ``redis://127.0.0.1:6379/12``; the run refuses it
if the event streams are there already). Cluster: the test Redis Cluster
(``STOCKCTL_BENCH_EVENTS_CLUSTER_URL``, default ``redis+cluster://127.0.0.1:7100,127.0.0.1:7101,
127.0.0.1:7102``: 3 masters + 3 replicas, started by ``scripts/redis_topologies.sh``, which
``make services`` runs, and which this script runs itself when that default cluster does not
answer). A cluster has only db 0 and the stream keys are the topics themselves, so the cluster
parts hold the pipeline tests' streams lock (``stockctl-tests:event-streams``, as
tests/eventutil.py takes it: a test and this run take turns) and refuse to start if the streams
are there. Every part uses a random app id / consumer group and cache prefix; every stream and
key the run creates is deleted at the end, even on failure (keys found by SCAN of every
master), and nothing else.

(a) raw drain, for reference only (no longer a yardstick): ``--events`` (default 200,000)
    realistic stock events (reserve / release / adjust / receive changes with their threshold
    events, built with stockctl's own event code, spread over 10,000 products x 20 warehouses
    starting from the state ``stockctl seed`` makes, the versions increasing per row) are
    XADDed, pipelined, onto their topic streams on standalone. A consumer group created at 0 then
    drains them with XREADGROUP COUNT 1000 over all the processor's topics plus a pipelined XACK
    per reply, doing nothing else: events/s.
(b) the processor, one process, standalone, on the same entries (a fresh consumer group at 0
    and a fresh cache prefix per run; the cache is warmed first with every row at the seeded
    state, as `warm-cache` leaves it): ``Runner(WorkerOptions(only=["processor"], burst=True))``
    with one worker thread and ``--batch`` (default 1000; XREADGROUP COUNT is per stream), and
    again with the configured default (10 worker threads, batch 100). Timed from start to the
    burst's end. Afterwards every row's hash entry is checked against the last version published
    for it, and every plain key (warehouse, total, available, status, low_stock, product) of a
    sample of products against the values computed from those rows. Per event: the Redis
    server's CPU (INFO cpu, server-wide) and this process's CPU. Goals (issue 14): >= 35,000
    events/s, <= 15 us Redis CPU and <= 12 us processor CPU per event.
(c) latency, standalone: on a fresh PostgreSQL database (init + seed 1,000 products x 20
    warehouses, every row given a million more units so reserves never run dry, the cache
    warmed from the database) ``stockctl worker run --only relay,processor`` runs as a separate
    process; the library commits changes at a steady ``--rate`` (default 1,000/s, open loop:
    change i is due at start + i/rate and is taken by whichever of ``--threads`` threads is
    free) for ``--seconds`` (default 20) after a 2 s warm-up. With ``--mix reserve`` (default) a
    change is ``sc.reserve(p, w, 1)`` (one statement on PostgreSQL) and every ``--sample``-th one
    (default 10th) is ``sc.adjust(p, w, +1)``, whose returned version is timed; ``--mix adjust``
    makes every change an adjust (about 1.6 ms of client CPU each: 1,000/s does not fit one
    Python process here). A sampled change is timed from the commit's return to the moment its
    version is seen in the row's hash field (``{prefix}:stock:{p}:rows``, field w; on a cluster
    ``{prefix}:stock:{{p}}:rows``) by a separate poller process that reads all outstanding
    samples in one pipelined round trip every millisecond (a process of its own so the writers'
    GIL does not delay its clock; CLOCK_MONOTONIC is shared between processes). Then the cache
    is checked against the database for every row, the worker is stopped with SIGTERM (it must
    exit 0) and the database is dropped. Goal: p99 <= 25 ms at 1,000 changes/s.
(d) as (b) on the cluster: the same workload published there (the pipeline grouped by node),
    the cache warmed through ``app.cache()`` (keys hash-tagged by product), the processor
    reading one XREADGROUP per topic stream; the cache verified under the tagged key names.
    Redis CPU per event is summed over the masters (the replicas' is reported beside it); goal
    <= 1.5x standalone's (part b's) for the same plan.
(e) as (c) on the cluster (no goal of its own: reported beside (c)).

The machine has two cores and may be shared: the 1-minute load average at start is reported.

Usage: bench/events.py [--json] [--events N] [--seconds S] [--rate R] [--threads T]
                       [--sample K] [--mix reserve|adjust] [--batch B] [--repeat R]
                       [--parts abcde]
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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
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

from stockctl.redis.cache import AGG_FIELD

REDIS_URL = os.environ.get("STOCKCTL_BENCH_EVENTS_REDIS_URL", "redis://127.0.0.1:6379/12")
DEFAULT_CLUSTER_URL = "redis+cluster://127.0.0.1:7100,127.0.0.1:7101,127.0.0.1:7102"
CLUSTER_URL = os.environ.get("STOCKCTL_BENCH_EVENTS_CLUSTER_URL", DEFAULT_CLUSTER_URL)
TOPOLOGY_SCRIPT = ROOT / "scripts" / "redis_topologies.sh"
# tests/eventutil.py's lock on the shared cluster: whoever holds it has the event streams.
STREAMS_LOCK = "stockctl-tests:event-streams"
LOCK_SECONDS = 120  # renewed every 30 s while held: a killed run frees it within 2 minutes
LOCK_WAIT_SECONDS = 900
PRODUCTS = 10_000
WAREHOUSES = 20
LATENCY_PRODUCTS = 1_000
READ_COUNT = 1000
WARMUP_SECONDS = 2.0
RATE_GOAL = ">= 35,000 events/s"
REDIS_CPU_GOAL = "<= 15 us/event"
PROCESS_CPU_GOAL = "<= 12 us/event"
CLUSTER_REDIS_CPU_GOAL = "<= 1.5x standalone"
LATENCY_GOAL = "<= 25 ms"
UNIT = "events/s"
CPU_UNIT = "us/event"


def load_average() -> float:
    return os.getloadavg()[0]


def redis_client(url: str) -> Any:
    """A client as stockctl makes it: ``redis.Redis`` on standalone, ``RedisCluster`` on a
    cluster."""
    from stockctl.redis.topology import connect, parse_redis_url

    return connect(parse_redis_url(url), 30.0)


@dataclass
class Lane:
    """One topology's part of the run: its URL, a client, the streams it holds for the run."""

    name: str  # "standalone" or "cluster"
    url: str
    client: Any
    run_id: str
    streams: list[str] = field(default_factory=list)

    @property
    def cluster(self) -> bool:
        return self.name == "cluster"

    @property
    def tag(self) -> str:
        """Marks this lane's app ids and cache prefixes (all under the run id)."""
        return "c" if self.cluster else "s"

    def keys(self, prefix: str) -> Any:
        from stockctl.core.projection import CacheKeys

        return CacheKeys(prefix, hash_tags=self.cluster)

    def masters(self) -> list[tuple[str, Any]]:
        """(host:port, a client of that node alone) of every master."""
        if not self.cluster:
            kwargs = self.client.connection_pool.connection_kwargs
            return [(f"{kwargs['host']}:{kwargs['port']}", self.client)]
        return [(n.name, self.client.get_redis_connection(n)) for n in self.client.get_primaries()]

    def replicas(self) -> list[tuple[str, Any]]:
        if not self.cluster:
            return []
        return [(n.name, self.client.get_redis_connection(n)) for n in self.client.get_replicas()]


# --------------------------------------------------------------------------- event generation


@dataclass
class Workload:
    """Published entries as (topic, CloudEvent JSON), and each row's state before and after."""

    entries: list[tuple[str, str]]
    initial: dict[tuple[str, str], Any]
    final: dict[tuple[str, str], Any]
    topics: dict[str, int] = field(default_factory=dict)  # entries per topic


def _change(rng: random.Random, before: Any, now: datetime) -> tuple[str, Any, dict[str, Any]]:
    """One realistic change of a row: (event type, row after, event context)."""
    from dataclasses import replace

    from stockctl.core import events as ev

    sellable, reserved = before.sellable, before.reserved
    avail = before.on_hand
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
            replace(before, reserved=reserved + q, **after_at),
            context,
        )
    if roll < 0.75 and reserved > 0:
        q = rng.randint(1, reserved)
        context = {"reason": "released", "reservation_id": str(uuid.uuid4()), "quantity": q}
        return (
            ev.STOCK_RELEASED,
            replace(before, reserved=reserved - q, **after_at),
            context,
        )
    if roll < 0.9:
        delta = rng.choice((-2, -1, 1, 3)) if sellable >= 2 else 1
        context = {"reason": "cycle count", "reference": None}
        return (
            ev.STOCK_ADJUSTED,
            replace(before, on_hand=avail + delta, **after_at),
            context,
        )
    units = rng.randint(10, 200)
    context = {"reason": "receive", "reference": f"PO-{rng.randint(1, 99999)}"}
    return ev.STOCK_UPDATED, replace(before, on_hand=avail + units, **after_at), context


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


def processor_run(run: ProcessorRun, work: Workload, lane: Lane, sqlite_url: str) -> ProcessorRun:
    from stockctl.bootstrap import bootstrap
    from stockctl.daemons.workers.runner import Runner, WorkerOptions
    from stockctl.settings import load_settings

    tag = f"{lane.run_id}{lane.tag}{run.label}"
    settings = load_settings(
        database_url=sqlite_url,
        redis_url=lane.url,
        app_id=f"bench-{tag}",
        cache_prefix=f"bench{tag}",
        # Lets one thread take a batch larger than the default queue of 1000 holds.
        worker_queue_size=max(1000, (run.workers or 1) * (run.batch or 0)),
    )
    app = bootstrap(settings)
    try:
        cache = app.cache()
        warm(cache, work.initial)
        options = WorkerOptions(
            only=["processor"], workers=run.workers, batch_size=run.batch, burst=True
        )
        runner = Runner(app, options)
        before = cpu_counters(lane)
        started = time.perf_counter()
        code = runner.run(handle_signals=False)
        run.seconds = time.perf_counter() - started
        after = cpu_counters(lane)
        run.cpu = {k: after[k] - before[k] for k in after}
        if code != 0 or runner.errors:
            raise SystemExit(f"processor run {run.label} failed: exit {code}, {runner.errors}")
        run.events = sum(job.processed for job in runner.jobs)
        run.totals = _totals(runner.jobs)
        verify_cache(lane.client, cache.keys, work)
    finally:
        app.close()
        # The next run starts on a keyspace of the same size (the final cleanup gets the rest).
        removed = delete_matching(lane.client, f"{settings.cache_prefix}:*")
        log(f"{run.label}: {removed:,} cache keys removed")
    return run


def cpu_counters(lane: Lane) -> dict[str, float]:
    """CPU seconds so far: this process; the Redis masters (summed) and their script calls, each
    master, and the replicas (summed). Server-wide: other clients of the same servers count too."""
    out = {"process": time.process_time(), "redis": 0.0, "scripts": 0.0, "replicas": 0.0}
    for name, node in lane.masters():
        cpu = node.info("cpu")
        used = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
        out["redis"] += used
        out[f"master {name}"] = used
        scripts = node.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0)
        out["scripts"] += scripts / 1e6
    for _, node in lane.replicas():
        cpu = node.info("cpu")
        out["replicas"] += float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return out


def _totals(jobs: Sequence[Any]) -> dict[str, int]:
    out = {"applied": 0, "stale": 0, "duplicates": 0, "filled": 0, "dead_lettered": 0}
    for job in jobs:
        for name in ("applied", "stale", "duplicates", "filled"):
            out[name] += getattr(job.totals, name)
        out["dead_lettered"] += job.dead_lettered
    return out


def verify_cache(client: Any, keys: Any, work: Workload, sample: int = 500) -> None:
    """Every row's version and quantities, and every plain key of a sample of products, under
    the cache's own key names (``CacheKeys``; hash-tagged on a cluster)."""
    from stockctl.core.projection import ProductStock, RowState, product_values

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
    client = redis_client(redis_url)
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
    sc: Any, plan: Schedule, rows: Sequence[tuple[str, str]], samples: Any, keys: Any, mix: str
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
            key = keys.rows(p)
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


def drive(url: str, lane: Lane, prefix: str, worker_pid: int, args: Any) -> LatencyResult:
    """Writers on a schedule, samples timed by the poller process."""
    import stockctl as lib

    ctx = mp.get_context("spawn")
    samples, results = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=poller, args=(samples, results, lane.url, 10.0), daemon=True)
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
                target=writer,
                args=(sc, plan, rows, samples, lane.keys(prefix), args.mix),
                daemon=True,
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
    url: str, redis_url: str, app_id: str, prefix: str, logfile: Any, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCTL_")}
    env.update(
        STOCKCTL_DATABASE_URL=url,
        STOCKCTL_REDIS_URL=redis_url,
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


def prepare_latency_db(url: str, redis_url: str, prefix: str, app_id: str) -> Any:
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
        database_url=url, redis_url=redis_url, app_id=app_id, cache_prefix=prefix
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


def latency(args: Any, lane: Lane, part: str) -> LatencyResult:
    tag = f"{lane.run_id}{lane.tag}lat"
    prefix, app_id = f"bench{tag}", f"bench-{tag}"
    with fresh_pg_database("stockctl_bench_events") as url, tempfile.TemporaryFile() as logfile:
        log(f"({part}) init + seed {LATENCY_PRODUCTS:,} products x {WAREHOUSES} warehouses ...")
        app = prepare_latency_db(url, lane.url, prefix, app_id)
        extra = shlex.split(args.worker_args)
        worker = start_worker(url, lane.url, app_id, prefix, logfile, extra)
        try:
            wait_ready(app.redis(), app_id, worker)
            log(
                f"({part}) committing {args.rate:,.0f} changes/s for {WARMUP_SECONDS:.0f} + "
                f"{args.seconds:.0f} s on {lane.name} ..."
            )
            result = drive(url, lane, prefix, worker.pid, args)
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
            raise SystemExit(f"({part}) the cache did not converge to the database within 30 s")
    result.worker_exit = result_exit
    lane.client.delete(*lane.streams)  # a later part starts on empty streams
    return result


# --------------------------------------------------------------------------- main


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def check_streams_free(client: Any, url: str, shared: bool) -> list[str]:
    """Our streams are the topics themselves: refuse to share them with anything else (a stream
    key lives on its slot's master: EXISTS is routed there on a cluster)."""
    from stockctl.core.catalog import TOPICS
    from stockctl.settings import Settings

    streams = [*TOPICS, Settings.model_fields["dead_letter_topic"].default]
    taken = [s for s in streams if client.exists(s)]
    if taken:
        how = (
            f"we hold {STREAMS_LOCK}, so a run or a pipeline test that was killed left them: "
            "delete them (they are the event-type streams) or run the pipeline tests once"
            if shared
            else "another run in progress? Set STOCKCTL_BENCH_EVENTS_REDIS_URL to a free database"
        )
        raise SystemExit(f"{url} already has streams {taken}: {how}.")
    return streams


def cleanup(lane: Lane) -> None:
    """The run's streams, and every key under its cache prefixes and app ids (SCAN of every
    master on a cluster); nothing else."""
    removed = lane.client.delete(*lane.streams) if lane.streams else 0
    for pattern in (
        f"bench{lane.run_id}*",  # cache keys, event markers
        f"stockctl:bench{lane.run_id}*",  # read counters, checkpoints
        f"stockctl:heartbeat:bench-{lane.run_id}*",
    ):
        removed += delete_matching(lane.client, pattern)
    log(f"cleanup: {removed:,} keys and streams removed from {lane.url}")


@contextmanager
def streams_lock(client: Any) -> Iterator[None]:
    """The pipeline tests' lock on the shared cluster, renewed while held."""
    from redis.exceptions import LockError

    lock = client.lock(
        STREAMS_LOCK,
        timeout=LOCK_SECONDS,
        blocking_timeout=LOCK_WAIT_SECONDS,
        thread_local=False,
    )
    if client.exists(STREAMS_LOCK):
        log(f"waiting for {STREAMS_LOCK} (a pipeline test or another run holds it) ...")
    if not lock.acquire():
        raise SystemExit(f"{STREAMS_LOCK} still held after {LOCK_WAIT_SECONDS} s")
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LOCK_SECONDS / 4):
            try:
                lock.extend(LOCK_SECONDS, replace_ttl=True)
            except Exception as exc:  # the run goes on; its streams check covers a clash
                log(f"could not renew {STREAMS_LOCK}: {exc}")

    renewer = threading.Thread(target=renew, name="bench-lock", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        try:
            lock.release()
        except LockError as exc:
            log(f"{STREAMS_LOCK} was no longer ours: {exc}")


def cluster_client(url: str) -> Any:
    """A client of the cluster; the test cluster is started (scripts/redis_topologies.sh, as
    `make services` does) when it is the default URL and does not answer."""
    from stockctl.errors import CacheUnavailable

    def healthy() -> Any:
        client = redis_client(url)
        if client.cluster_info().get("cluster_state") == "ok":
            return client
        client.close()
        raise CacheUnavailable(f"{url}: cluster_state is not ok")

    try:
        return healthy()
    except CacheUnavailable as exc:
        if url != DEFAULT_CLUSTER_URL:
            raise SystemExit(f"the cluster at {url} does not answer: {exc}") from None
        log(f"{exc}; starting the test cluster with {TOPOLOGY_SCRIPT} ...")
    subprocess.run([str(TOPOLOGY_SCRIPT)], check=True, timeout=300)
    return healthy()


@contextmanager
def bench_lane(name: str, run_id: str) -> Iterator[Lane]:
    """A topology's lane: its streams to ourselves (on the cluster, under the tests' lock),
    and everything the run made there deleted on the way out."""
    cluster = name == "cluster"
    url = CLUSTER_URL if cluster else REDIS_URL
    client = cluster_client(url) if cluster else redis_client(url)
    try:
        with streams_lock(client) if cluster else nullcontext():
            lane = Lane(name, url, client, run_id, check_streams_free(client, url, cluster))
            try:
                yield lane
            finally:
                cleanup(lane)
    finally:
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
    lane: str
    runs: list[ProcessorRun]
    load: float  # 1-minute load average as the part started
    masters: int = 1
    replicas: int = 0
    idle: dict[str, float] = field(default_factory=dict)  # CPU s per s with no run of ours


def idle_cpu(lane: Lane, seconds: float = 1.0) -> dict[str, float]:
    """What the servers use with no run of ours going: their own upkeep and other clients."""
    before = cpu_counters(lane)
    time.sleep(seconds)
    after = cpu_counters(lane)
    return {k: (after[k] - before[k]) / seconds for k in ("redis", "replicas")}


def workload(args: Any) -> Workload:
    from collections import Counter

    log(f"generating {args.events:,} events over {PRODUCTS:,} x {WAREHOUSES} rows ...")
    work = generate(args.events, PRODUCTS, WAREHOUSES)
    work.topics = dict(Counter(topic for topic, _ in work.entries).most_common())
    # The workload's 400,000 row objects live in this process, unlike in a worker: keep them out
    # of the garbage collector's scans, or its full collections would be charged to the drain
    # and the processor (it measured ~10 us/event here).
    gc.collect()
    gc.freeze()
    log(f"workload: {work.topics}")
    return work


def raw_drains(args: Any, lane: Lane) -> list[float]:
    from stockctl.core.catalog import TOPICS

    rates = []
    for i in range(args.repeat):
        group = f"bench-{lane.run_id}-raw{i}"
        n, seconds = raw_drain(lane.client, group, TOPICS, READ_COUNT)
        if n != args.events:
            raise SystemExit(f"raw drain read {n} entries, expected {args.events}")
        rates.append(n / seconds)
        log(f"(a) raw drain {i + 1}/{args.repeat}: {n:,} in {seconds:.2f} s = {n / seconds:,.0f}/s")
    return rates


def processor_runs(args: Any, lane: Lane, work: Workload, part: str) -> Throughput:
    load = load_average()
    idle = idle_cpu(lane)
    plans = [("single", 1, args.batch), ("default", None, None)]
    runs = []
    with tempfile.TemporaryDirectory(prefix="stockctl-bench-events-") as tmp:
        store_url = embedded_store_url(tmp)
        for label, workers, batch in plans:
            for i in range(args.repeat):
                run = processor_run(
                    ProcessorRun(f"{label}{i}", workers, batch), work, lane, store_url
                )
                cpu = ", ".join(f"{k} {v:.2f}" for k, v in run.cpu.items())
                log(
                    f"({part}) processor on {lane.name}, {run.label}: {run.events:,} in "
                    f"{run.seconds:.2f} s = {run.rate:,.0f}/s {run.totals}; CPU s: {cpu}"
                )
                if run.events != args.events:
                    raise SystemExit(f"processor run {run.label} processed {run.events}")
                runs.append(run)
    return Throughput(lane.name, runs, load, len(lane.masters()), len(lane.replicas()), idle)


def middle(runs: Sequence[ProcessorRun], plan: str) -> ProcessorRun:
    mine = [r for r in runs if r.label.rstrip("0123456789") == plan]
    return sorted(mine, key=lambda r: r.rate)[len(mine) // 2]


def machine(load: float) -> str:
    return f"1-min load average at start {load:.2f} on {os.cpu_count()} cores"


def raw_figure(rates: Sequence[float], work: Workload, args: Any, load: float) -> Figure:
    shares = ", ".join(f"{k} {v / args.events:.0%}" for k, v in work.topics.items())
    return Figure(
        name=(
            f"raw XREADGROUP (COUNT {READ_COUNT}) + XACK drain, standalone, {args.events:,} events"
        ),
        value=round(median(rates)),
        unit=UNIT,
        note=(
            f"for reference only (no longer a yardstick); no processing; {args.events:,} stock "
            f"events over {PRODUCTS:,} products x {WAREHOUSES} warehouses on "
            f"{len(work.topics)} topic streams ({shares}); {machine(load)}"
        ),
    )


PLANS = (("single", "1 worker thread, batch {b}"), ("default", "default 10 workers x batch 100"))


def per_event(run: ProcessorRun) -> dict[str, float]:
    return {k: v / run.events * 1e6 for k, v in run.cpu.items()}


def throughput_figures(t: Throughput, args: Any, base: Throughput | None) -> list[Figure]:
    """Per plan: events/s, Redis CPU and processor CPU per event. On the cluster each has
    standalone's (``base``, when part b ran) as its raw figure, and the ratio."""
    cluster = t.lane == "cluster"
    where = f"{t.masters}-master cluster" if cluster else "standalone"
    figures = []
    for plan, title in PLANS:
        run = middle(t.runs, plan)
        us = per_event(run)
        ref = middle(base.runs, plan) if base is not None else None
        ref_us = per_event(ref) if ref is not None else None
        stream_reads = "one XREADGROUP per topic stream (pipelined per node); " if cluster else ""
        note = (
            f"same {args.events:,} entries, fresh consumer group at 0, cache warmed first; "
            f"{stream_reads}XREADGROUP COUNT is per stream, so a read takes up to that many from "
            f"each topic; {run.totals['applied']:,} applied, {run.totals['stale']:,} stale "
            f"(threshold events share their change's version; topics are read side by side), "
            f"{run.totals['duplicates']} duplicates; every row's cache entry checked against the "
            f"last published version afterwards; {machine(t.load)}"
        )
        masters = ", ".join(
            f"{k.split(' ', 1)[1]} {v:.1f}" for k, v in us.items() if k.startswith("master ")
        )
        idle = (
            f"with no run of ours (1 s just before the runs) the "
            f"{'masters' if cluster else 'server'} used {t.idle['redis'] * 1000:.0f} ms CPU/s"
            + (f", the replicas {t.idle['replicas'] * 1000:.0f} ms/s" if cluster else "")
        )
        redis_note = (
            f"INFO cpu (user + sys) of the server over the run, server-wide (other clients "
            f"count too: {idle}); time inside apply scripts (elapsed, so including waits for a "
            f"core) {us['scripts']:.1f} us/event"
        )
        if cluster:
            redis_note = (
                f"INFO cpu (user + sys) summed over the {t.masters} masters ({masters} "
                f"us/event), server-wide (other clients count too: {idle}); the {t.replicas} "
                f"replicas besides: {us['replicas']:.1f} us/event in all; time inside apply "
                f"scripts (elapsed, summed over the masters) {us['scripts']:.1f} us/event; "
                f"raw: standalone's (part b), same plan"
                + ("" if ref_us else "; part b did not run: no ratio")
            )
        named = f"event processor, one process, {where}, {title.format(b=args.batch)}"
        suffix = " (raw: standalone)" if cluster else ""
        figures.append(
            Figure(
                name=named + suffix,
                value=round(run.rate),
                unit=UNIT,
                raw=round(ref.rate) if ref else None,
                ratio=round(run.rate / ref.rate, 3) if ref else None,
                goal=None if cluster else RATE_GOAL,
                note=note,
            )
        )
        figures.extend(
            Figure(
                name=f"{named}: {label}{suffix}",
                value=round(us[key], 2),
                unit=CPU_UNIT,
                raw=round(ref_us[key], 2) if ref_us else None,
                ratio=round(us[key] / ref_us[key], 3) if ref_us else None,
                goal=goal,
                note=cpu_note,
            )
            for label, key, goal, cpu_note in (
                (
                    "Redis server CPU per event",
                    "redis",
                    CLUSTER_REDIS_CPU_GOAL if cluster else REDIS_CPU_GOAL,
                    redis_note,
                ),
                (
                    "processor CPU per event (this process)",
                    "process",
                    None if cluster else PROCESS_CPU_GOAL,
                    None,
                ),
            )
        )
    return figures


def latency_figures(r: LatencyResult, args: Any, load: float, lane: str) -> list[Figure]:
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
        f"{split}; {machine(load)}"
        + ("" if lane == "standalone" else f"; the goal ({LATENCY_GOAL}) is standalone's, part c")
    )
    figures = []
    for q in (50, 95, 99):
        figures.append(
            Figure(
                name=(
                    f"commit -> visible in cache, {lane}, {args.rate:,.0f} changes/s target "
                    f"({r.achieved_rate:,.0f}/s achieved), p{q}"
                ),
                value=round(percentile(ms, q), 2),
                unit="ms",
                goal=LATENCY_GOAL if q == 99 and lane == "standalone" else None,
                note=note if q == 50 else None,
            )
        )
    return figures


def arguments() -> Any:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000, help="events for (a), (b) and (d)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds of (c) and (e)")
    p.add_argument("--rate", type=float, default=1000.0, help="changes/s committed in (c), (e)")
    p.add_argument("--threads", type=int, default=16, help="writer threads in (c) and (e)")
    p.add_argument("--sample", type=int, default=10, help="time every Nth change in (c), (e)")
    p.add_argument("--batch", type=int, default=1000, help="batch of the 1-thread processor")
    p.add_argument("--repeat", type=int, default=1, help="runs of (a), each (b), each (d); medians")
    p.add_argument(
        "--mix",
        choices=("reserve", "adjust"),
        default="reserve",
        help="(c), (e) changes: reserves of 1 unit with every sampled change an adjust +1, or "
        "all adjusts (about 3x the client CPU per change)",
    )
    p.add_argument(
        "--worker-args", default="", help="(c), (e) extra `worker run` options, e.g. '--workers 2'"
    )
    p.add_argument(
        "--parts",
        default="abcde",
        help="which parts to run: a raw drain, b processor, c latency (standalone), d processor "
        "and e latency on the cluster; e.g. 'abd' (throughput only) or 'ce'",
    )
    args = p.parse_args()
    if not args.parts or set(args.parts) - set("abcde"):
        p.error(f"--parts takes letters of 'abcde', not {args.parts!r}")
    return args


def standalone_parts(
    args: Any, run_id: str, work: Workload | None, load: float
) -> tuple[list[Figure], Throughput | None]:
    """(a), (b) and (c): the figures, and (b)'s runs for (d) to compare with."""
    figures: list[Figure] = []
    base: Throughput | None = None
    with bench_lane("standalone", run_id) as lane:
        if work is not None and set(args.parts) & set("ab"):
            log("(a) publishing to standalone ...")
            publish(lane.client, work.entries)
            if "d" not in args.parts:
                work.entries = []
            if "a" in args.parts:
                figures.append(raw_figure(raw_drains(args, lane), work, args, load))
            if "b" in args.parts:
                base = processor_runs(args, lane, work, "b")
                figures += throughput_figures(base, args, None)
            lane.client.delete(*lane.streams)  # (c) starts on empty streams
        if "c" in args.parts:
            figures += latency_figures(latency(args, lane, "c"), args, load_average(), lane.name)
    return figures, base


def cluster_parts(
    args: Any, run_id: str, work: Workload | None, base: Throughput | None
) -> list[Figure]:
    """(d) and (e), on the cluster."""
    figures: list[Figure] = []
    with bench_lane("cluster", run_id) as lane:
        if work is not None and "d" in args.parts:
            log(f"(d) publishing to the cluster at {lane.url} ...")
            publish(lane.client, work.entries)
            work.entries = []
            figures += throughput_figures(processor_runs(args, lane, work, "d"), args, base)
            lane.client.delete(*lane.streams)  # (e) starts on empty streams
        if "e" in args.parts:
            figures += latency_figures(latency(args, lane, "e"), args, load_average(), lane.name)
    return figures


def main() -> None:
    args = arguments()
    parts = set(args.parts)
    load = load_average()
    log(f"1-minute load average at start: {load:.2f} ({os.cpu_count()} cores)")
    run_id = uuid.uuid4().hex[:8]
    work = workload(args) if parts & set("abd") else None
    figures: list[Figure] = []
    base: Throughput | None = None
    if parts & set("abc"):
        figures, base = standalone_parts(args, run_id, work, load)
    if parts & set("de"):
        figures += cluster_parts(args, run_id, work, base)
    emit(figures, args.json)
    if not args.json:
        print()
        for f in figures:
            if f.note:
                print(f"- {f.name}: {f.note}")


if __name__ == "__main__":
    main()
