"""Issue 14's proof: the cache and the event streams survive a Redis failover, a reshard and
replays, on PostgreSQL and real Redis servers.

* Cluster under faults: a private 3+3 cluster, a worker process, 8 writer threads; mid-load a
  master is ``kill -9``ed (its replica takes over), or slots move with ``redis-cli --cluster
  reshard``. Afterwards: the outbox is published, every topic's group lag is 0, nothing is
  dead-lettered, and the incremental sync makes the cache equal the database.
* Sentinel under faults: the same with a private sentinel group, ``SENTINEL FAILOVER`` or a
  ``kill -9`` of the master, and a ``stockctl serve`` process reading stock meanwhile: both
  follow the new master (the seconds they took are printed), serve never fails a read.
* De-duplication: every stock event twice, a row's versions shuffled, a day-old replay, a new
  group reading from 0: nothing is applied twice, and the markers are written only as
  ``event_dedupe_markers`` says; on each shared topology.

What a failover loses. Redis replicates asynchronously: writes the old master acknowledged in
its last moments never reach the replica that takes over (on ``SENTINEL FAILOVER`` too: the old
master takes writes until it is told it is a replica). Such a write can be a cache update whose
event was already acked, or a stream entry the relay already marked published. The relay notices
the new master (its replication id) within a second and publishes again what it sent in the last
30 s, so no stream loses an event (asserted); a cache row whose update was lost after its event
was acked is repaired by the incremental sync. So the worker runs without the sync through the
fault; once the pipeline has settled the test counts the rows that still differ (and the outbox
events missing from the streams), then restarts the worker with every job, ``sync`` included
(interval 1 s), and times how long the cache takes to equal the database. ``-s`` prints the
figures.

Size. The issue's figure is 50,000 changes per run. On this 2-core machine 8 writers commit
about 80-170 changes/s (the low end when other work shares the machine) while the worker,
serve, Redis and PostgreSQL share the cores, so each fault test makes
``STOCKCTL_TEST_FAILOVER_CHANGES`` changes (default 3,000: 20-35 s of load; the four fault tests
and the rest keep the module at 3-4 minutes); set it to 50000 for the full figure (5-10 minutes
of load per test; nothing else needs raising: the deadlines are per phase, not per run).

The fault tests start redis-server and redis-cli themselves: without them they fail (never
skip), in CI and out.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.cluster import RedisCluster

import stockctl
from stockctl.bootstrap import App
from stockctl.core import events as ev
from stockctl.core.catalog import TOPICS, Outcome
from stockctl.core.envelope import parse
from stockctl.core.model import ReservationStatus
from stockctl.core.projection import RowState, update_from_event
from stockctl.core.warming import warm
from stockctl.daemons.workers.processor import StreamProcessor
from stockctl.daemons.workers.runner import Runner, WorkerOptions
from stockctl.errors import CacheUnavailable, DependencyUnavailable, StockRuleViolation
from stockctl.library import Stockctl
from stockctl.redis.cache import RedisStockCache
from stockctl.redis.stream_admin import StreamAdmin
from stockctl.redis.topology import connect, parse_redis_url
from tests.clientutil import serve
from tests.conftest import new_id
from tests.eventutil import (
    COMMAND,
    DEAD_LETTER,
    EVENTS_REDIS_URLS,
    Lane,
    all_product_ids,
    assert_cache_matches_db,
    cli,
    delete_matching,
    expected_plain,
    outbox_event_ids,
    seed_stock,
    topology_lane,
    wait_until,
)
from tests.redisutil import PrivateCluster, PrivateSentinel, daemon_env

pytestmark = pytest.mark.redis

CHANGES = int(os.environ.get("STOCKCTL_TEST_FAILOVER_CHANGES", "3000"))
WRITERS = 8
PRODUCTS, WAREHOUSES, UNITS = 200, 5, 1000
FAULT_AT = 0.4  # of the changes made when the fault is injected
SETTLE_SECONDS = 120.0
CONVERGE_SECONDS = 60.0
FOLLOW_SECONDS = 8.0  # after the sentinels name a new master, the worker and serve use it
GROUP = "catalog"  # the default app id: the private servers hold nothing else
DAY_SECONDS = 86_400
PROBE, PROBE_AT = (
    "PROBE-ROW",
    "WH001",
)  # a row the writers leave alone (in the guide's first warehouse)

RedisClient = redis.Redis | RedisCluster


@pytest.fixture
def redis_binaries() -> None:
    """The fault tests start their own servers: a missing binary fails them, never skips."""
    missing = [b for b in ("redis-server", "redis-cli") if shutil.which(b) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not on PATH: the failover tests start private Redis "
            "servers (install redis-server / redis-tools)",
            pytrace=False,
        )


# -- a worker (or any stockctl daemon) as a process, its output in a file


class Daemon:
    def __init__(self, env: dict[str, str], args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*COMMAND, *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (a warm stop); the exit code."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.args[:2]} did not stop: {self.tail()}") from None

    def kill(self) -> None:
        if self.running():
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


# -- the writers


@dataclass
class Tally:
    committed: int = 0
    refused: int = 0  # a stock rule said no (e.g. not enough sellable): no change
    failed: int = 0  # rolled back (deadlock retries exhausted): no change


def write(sc: Stockctl, ps: list[str], ws: list[str], n: int, seed: int, tick: Any) -> Tally:
    """``n`` changes: reserve, release a hold of this writer's, adjust up or down."""
    rnd = random.Random(seed)
    tally = Tally()
    holds: list[str] = []
    for _ in range(n):
        p, w = rnd.choice(ps), rnd.choice(ws)
        op = rnd.random()
        try:
            if op < 0.40 or (op < 0.65 and not holds):
                holds.append(sc.reserve(p, w, rnd.randint(1, 3), order_id=new_id("O")).id)
            elif op < 0.65:
                sc.release(holds.pop(rnd.randrange(len(holds))))
            else:
                sc.adjust(p, w, rnd.choice((-1, 1)) * rnd.randint(1, 5), reason="cycle count")
            tally.committed += 1
        except StockRuleViolation:
            tally.refused += 1
        except DependencyUnavailable:
            tally.failed += 1
        tick()
    return tally


@dataclass
class Fault:
    started: float = 0.0  # time.monotonic()
    done: float = 0.0  # the topology is whole again (new master named, slots moved)
    detail: Any = None


@dataclass
class Load:
    tallies: list[Tally]
    seconds: float
    fault: Fault

    @property
    def committed(self) -> int:
        return sum(t.committed for t in self.tallies)


def run_load(sc: Stockctl, ps: list[str], ws: list[str], inject: Callable[[], Any]) -> Load:
    """CHANGES changes from WRITERS threads; ``inject()`` runs once FAULT_AT of them are made."""
    lock = threading.Lock()
    made = [0]
    reached = threading.Event()
    threshold = int(CHANGES * FAULT_AT)

    def tick() -> None:
        with lock:
            made[0] += 1
            if made[0] >= threshold:
                reached.set()

    fault = Fault()
    writers_done = threading.Event()

    def fault_thread() -> None:
        while not reached.wait(0.2):
            assert not writers_done.is_set(), "the writers stopped before the fault was due"
        fault.started = time.monotonic()
        fault.detail = inject()
        fault.done = time.monotonic()

    per = CHANGES // WRITERS
    started = time.monotonic()
    with ThreadPoolExecutor(WRITERS + 1) as pool:
        injected = pool.submit(fault_thread)
        try:
            tallies = list(pool.map(lambda k: write(sc, ps, ws, per, k, tick), range(WRITERS)))
        finally:
            writers_done.set()
        seconds = time.monotonic() - started
        injected.result(timeout=120)  # its failure is the test's
    return Load(tallies, seconds, fault)


# -- one private topology, a fresh database, the worker


@dataclass
class Rig:
    """stockctl on a fresh PostgreSQL database and a private Redis topology."""

    pg_url: str
    redis_url: str
    connect: Callable[[], RedisClient]  # a new test-side client of the topology
    logs: Path
    sc: Stockctl = field(init=False)
    products: list[str] = field(init=False)
    warehouses: list[str] = field(init=False)
    daemons: list[Daemon] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        extra.setdefault("STOCKCTL_WORKER_CLAIM_IDLE_MS", "1000")
        return daemon_env(self.pg_url, self.redis_url, **extra)

    def prepare(self, *, probe: str | None = None) -> None:
        """``stockctl init`` and ``stockctl seed`` (PRODUCTS x WAREHOUSES rows), a probe
        product the writers leave alone, the cache warmed."""
        for args in (
            ["init"],
            ["seed", "--products", str(PRODUCTS), "--warehouses", str(WAREHOUSES)],
        ):
            done = cli(self.env(), *args)
            assert done.code == 0, done.err
        self.sc = stockctl.connect(self.pg_url, redis_url=self.redis_url, db_pool_max_idle=WRITERS)
        self.products = all_product_ids(self.app)
        self.warehouses = [w.id for w in self.app.store.list_warehouses()]
        if probe is not None:
            self.sc.add_product(probe)
            self.sc.receive(probe, PROBE_AT, UNITS)
        warm(self.app.store, self.app.cache())

    @property
    def app(self) -> App:
        return self.sc.app

    def worker(self, name: str, only: str, **env: str) -> Daemon:
        daemon = Daemon(
            self.env(**env),
            ["worker", "run", "--only", only, "--workers", "4", "--consumer", name],
            self.logs / f"worker-{name}.log",
        )
        self.daemons.append(daemon)
        beat = f"stockctl:heartbeat:{GROUP}:{name}"

        def beating() -> bool:
            assert daemon.running(), f"worker {name} exited: {daemon.tail()}"
            return bool(self.ask(lambda c: c.exists(beat)))

        wait_until(beating, 60, f"worker {name}'s heartbeat", every=0.2)
        return daemon

    def ask(self, question: Callable[[RedisClient], Any]) -> Any:
        """``question(client)`` on a fresh client; None while the topology does not answer."""
        try:
            client = self.connect()
        except (redis.RedisError, OSError):
            return None
        try:
            return question(client)
        except (redis.RedisError, OSError, CacheUnavailable):
            return None
        finally:
            client.close()

    def backlog(self) -> tuple[int, int, int] | None:
        """(unpublished outbox rows, pending entries, unread entries) over every topic;
        None while Redis cannot say (lag unknown counts as unread)."""
        lags = self.ask(lambda c: StreamAdmin(c, GROUP, DEAD_LETTER, "test").lag(TOPICS))
        if lags is None:
            return None
        unpublished, _ = self.app.store.outbox_backlog()
        unread = sum(1 if t.lag is None else t.lag for t in lags)
        return unpublished, sum(t.pending for t in lags), unread

    def settle(self) -> float:
        """Until the outbox is published and every entry read and acked; the seconds it took."""
        started = time.monotonic()
        wait_until(lambda: self.backlog() == (0, 0, 0), SETTLE_SECONDS, "the pipeline to settle")
        return time.monotonic() - started

    def dead_letters(self) -> int:
        return int(self.ask(lambda c: c.xlen(DEAD_LETTER)))

    def divergence(self) -> tuple[int, int]:
        """(rows whose cached state differs from the database, products with a plain key that
        differs), read through the library's cache."""
        ids = all_product_ids(self.app)
        cache = self.app.cache()
        db = self.app.store.inventory_for_products(ids)
        cached = cache.get_products(ids)
        rows = 0
        wanted: dict[str, dict[str, Any]] = {}
        for p in ids:
            stock = cached[p]
            held = {r.warehouse_id: r for r in stock.rows} if stock is not None else {}
            rows += sum(held.get(r.warehouse_id) != RowState.of(r) for r in db[p])
            wanted[p] = expected_plain(cache.keys, p, db[p])
        keys = [k for p in ids for k in wanted[p]]
        values = dict(zip(keys, cache.get_keys(keys), strict=True))
        products = 0
        for p in ids:
            got = {
                k: json.loads(values[k] or "null") if isinstance(v, dict) else values[k]
                for k, v in wanted[p].items()
            }
            products += got != wanted[p]
        return rows, products

    def missing_from_streams(self) -> int:
        """Committed events (outbox rows) that no topic stream holds."""
        committed = set(outbox_event_ids(self.app))

        def published(c: RedisClient) -> set[str]:
            ids: set[str] = set()
            for t in TOPICS:
                entries: Any = c.xrange(t)
                ids.update(json.loads(f["data"])["id"] for _, f in entries)
            return ids

        found = self.ask(published)
        assert found is not None, "the streams cannot be read"
        return len(committed - found)

    def assert_converged(self) -> None:
        """Rows with versions, and every plain key read with a plain GET, equal the database."""
        client = self.connect()
        try:

            def get(key: str) -> str | None:
                value = client.get(key)
                return None if value is None else str(value)

            app = self.app
            assert_cache_matches_db(app, app.cache(), get, app.cache().keys, all_product_ids(app))
        finally:
            client.close()

    def close(self) -> None:
        for d in self.daemons:
            d.kill()
        if hasattr(self, "sc"):
            self.sc.close()


@pytest.fixture
def rigs(
    redis_binaries: None, pg_url: str, tmp_path: Path
) -> Iterator[Callable[[str, Callable[[], Any]], Rig]]:
    made: list[Rig] = []

    def make(redis_url: str, connect: Callable[[], Any]) -> Rig:
        rig = Rig(pg_url, redis_url, connect, tmp_path)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


@dataclass
class Repair:
    settle_seconds: float
    rows_off: int
    products_off: int
    missing_events: int
    converge_seconds: float


def settle_then_sync(rig: Rig, first: Daemon) -> Repair:
    """Settle the pipeline with ``first`` (no sync job), count what still differs, then replace
    it by a worker running every job (sync every second) and wait for the cache to equal the
    database."""
    settle_seconds = rig.settle()
    rows_off, products_off = rig.divergence()
    missing = rig.missing_from_streams()
    assert first.stop() == 0, first.tail()
    started = time.monotonic()
    full = rig.worker("full", "relay,processor,expiry,sync", STOCKCTL_SYNC_INTERVAL_SECONDS="1")
    wait_until(lambda: rig.divergence() == (0, 0), CONVERGE_SECONDS, "the sync to repair the cache")
    converge = time.monotonic() - started
    rig.assert_converged()
    assert rig.backlog() == (0, 0, 0)
    assert rig.dead_letters() == 0
    assert full.stop() == 0, full.tail()
    return Repair(settle_seconds, rows_off, products_off, missing, converge)


def report(what: str, load: Load, repair: Repair, *notes: str) -> None:
    t = load.tallies
    extra = "".join(f"; {n}" for n in notes)
    print(
        f"\n[{what}] {load.committed} changes committed in {load.seconds:.1f} s "
        f"({load.committed / load.seconds:.0f}/s; refused {sum(x.refused for x in t)}, "
        f"rolled back {sum(x.failed for x in t)}); fault took "
        f"{load.fault.done - load.fault.started:.1f} s{extra}; pipeline settled "
        f"{repair.settle_seconds:.1f} s after the writers; then {repair.rows_off} rows "
        f"({repair.products_off} products' plain keys) differed from the database and "
        f"{repair.missing_events} committed events were on no stream; a worker with the sync "
        f"(1 s interval) made the cache equal the database {repair.converge_seconds:.1f} s "
        "after it was started"
    )


# -- 1. Redis Cluster: a master killed, slots moved


def stream_master(cluster: PrivateCluster, topic: str) -> int:
    """The port of the master serving ``topic``'s slot."""
    with cluster.client() as c:
        return int(c.get_node_from_key(topic).port)


def test_cluster_master_killed_under_load(rigs: Any) -> None:
    """``kill -9`` of the master holding the busiest stream while 8 writers change stock: its
    replica takes over; the worker goes on; the sync repairs what the failover dropped."""
    with PrivateCluster() as cluster:
        rig = rigs(cluster.url, cluster.client)
        rig.prepare()
        first = rig.worker("w1", "relay,processor,expiry")
        victim = stream_master(cluster, ev.STOCK_RESERVED)

        def kill() -> list[int]:
            cluster.kill_master(cluster.masters().index(victim))
            return cluster.wait_failover()

        load = run_load(rig.sc, rig.products, rig.warehouses, kill)
        assert victim not in load.fault.detail
        repair = settle_then_sync(rig, first)
    report("cluster: master killed", load, repair)
    assert repair.missing_events == 0, f"{repair.missing_events} committed events on no stream"


def test_a_cache_with_a_slot_map_from_before_a_reshard_follows_the_moved_slots(
    redis_binaries: None,
) -> None:
    """Every batch goes to the node the cache's slot map names; after a reshard that node
    answers MOVED (to a pipeline of reads, or "non local key" to a script): the group is
    retried on a fresh map, never reported as Redis being unavailable."""
    with PrivateCluster() as cluster:
        caches = [
            RedisStockCache(connect(parse_redis_url(cluster.url), 5.0), target="test")
            for _ in range(2)
        ]
        reader, writer = caches
        try:
            rows = {f"P{i:03d}": [RowState("W1", 1, 10 + i, 0, 5)] for i in range(60)}
            writer.fill(rows)
            assert all(reader.get_products(list(rows)).values())  # both have a slot map now
            source = cluster.masters()[0]
            with cluster.server(source).client() as c:
                ranges = c.execute_command("CLUSTER", "SLOTS")
            first = min(int(r[0]) for r in ranges if int(r[2][1]) == source)
            slots = sorted(reader.client.keyslot(reader.keys.rows(p)) for p in rows)
            moved = next(x for x in slots if x >= first) - first + 1  # one product's at least
            cluster.reshard(moved, source, cluster.masters()[1])
            got = reader.get_products(list(rows))
            assert {p: s.rows if s else None for p, s in got.items()} == {
                p: tuple(r) for p, r in rows.items()
            }
            writer.fill({p: [RowState("W1", 2, 1, 0, 5)] for p in rows})
            assert all(lv and lv.on_hand == 1 for lv in reader.get_levels(list(rows)).values())
        finally:
            for cache in caches:
                cache.close()


def reshard_plan(cluster: PrivateCluster) -> tuple[str, int, int, int]:
    """(topic, source, target, n): moving the source master's ``n`` lowest slots (as
    ``redis-cli --cluster reshard`` picks them) moves that busy topic's stream, and with it a
    good share of the products; the source keeps some slots."""
    with cluster.server(cluster.masters()[0]).client() as c:
        ranges = [
            (int(r[0]), int(r[1]), int(r[2][1])) for r in c.execute_command("CLUSTER", "SLOTS")
        ]
    plans = []
    with cluster.client() as c:
        for topic in (ev.STOCK_RESERVED, ev.STOCK_RELEASED, ev.STOCK_ADJUSTED):
            slot = c.keyslot(topic)
            lo, hi, port = next(r for r in ranges if r[0] <= slot <= r[1])
            if slot < hi:
                plans.append((slot - lo + 1, hi - lo, topic, port))
    assert plans, "every busy stream sits on its master's highest slot"
    needed, most, topic, source = min(plans)
    target = next(p for p in cluster.masters() if p != source)
    return topic, source, target, min(max(needed + 300, 1500), most)


def test_cluster_reshard_under_load(rigs: Any) -> None:
    """``redis-cli --cluster reshard`` moves slots, a busy stream's among them, from one master
    to another while 8 writers change stock. A reshard drops nothing: once the pipeline
    settles the cache equals the database and every event is on its stream, before any sync."""
    with PrivateCluster() as cluster:
        rig = rigs(cluster.url, cluster.client)
        rig.prepare()
        first = rig.worker("w1", "relay,processor,expiry")
        topic, source, target, moved = reshard_plan(cluster)

        def reshard() -> int:
            cluster.reshard(moved, source, target)
            return stream_master(cluster, topic)

        load = run_load(rig.sc, rig.products, rig.warehouses, reshard)
        assert load.fault.detail == target, f"{topic}'s slot did not move"
        repair = settle_then_sync(rig, first)
    report(f"cluster: {moved} slots resharded, {topic} with them", load, repair)
    assert (repair.rows_off, repair.products_off, repair.missing_events) == (0, 0, 0)


# -- 2. Sentinel: SENTINEL FAILOVER, and the master killed


@dataclass(frozen=True)
class Sample:
    at: float
    hits: dict[int, int | None]  # serve's shared hit counter, as each data server holds it
    probe: dict[int, int | None]  # the probe row's cached version, on each data server


class Observer:
    """Through the fault: a prober commits a change to the probe row every 0.1 s, a reader asks
    serve for a product every 0.05 s, and a sampler reads, on each data server directly, the
    probe row's cached version and serve's hit counter (``count_reads`` adds to it on the
    master serve talks to)."""

    def __init__(self, rig: Rig, group: PrivateSentinel, api_url: str) -> None:
        self.rig, self.group, self.api_url = rig, group, api_url
        self.commits: list[tuple[float, int]] = []  # (began at, version it committed)
        self.reads: list[tuple[float, int]] = []  # (at, HTTP status; 0: no answer)
        self.samples: list[Sample] = []
        self.stopping = threading.Event()
        self.prober_done = threading.Event()
        self.threads = [
            threading.Thread(target=fn, daemon=True)
            for fn in (self._probe, self._read, self._sample)
        ]

    def __enter__(self) -> Observer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.prober_done.set()
        for t in self.threads:
            t.join(15)

    def _probe(self) -> None:
        sign = 1
        while not self.prober_done.is_set():
            began = time.monotonic()
            with suppress(DependencyUnavailable):
                row = self.rig.sc.adjust(PROBE, PROBE_AT, sign, reason="probe")
                self.commits.append((began, row.version))
                sign = -sign
            self.prober_done.wait(0.1)

    def _read(self) -> None:
        with httpx.Client(base_url=self.api_url, timeout=10) as http:
            while not self.stopping.is_set():
                began = time.monotonic()
                try:
                    status = http.get(f"/v1/products/{self.rig.products[0]}").status_code
                except httpx.HTTPError:
                    status = 0
                self.reads.append((began, status))
                self.stopping.wait(0.05)

    def _sample(self) -> None:
        keys = self.rig.app.cache().keys
        hits, rows, field_ = (
            f"stockctl:{keys.prefix}:reads:hits",
            keys.rows(PROBE),
            self.rig.warehouses[0],
        )
        clients = {
            s.port: s.client(socket_timeout=0.3, socket_connect_timeout=0.3)
            for s in self.group.data
        }
        while not self.stopping.is_set():
            at = time.monotonic()
            seen: dict[int, int | None] = {}
            versions: dict[int, int | None] = {}
            for port, c in clients.items():
                try:
                    pipe = c.pipeline(transaction=False)
                    pipe.get(hits)
                    pipe.hget(rows, field_)
                    h, v = pipe.execute()
                except (redis.RedisError, OSError):
                    seen[port] = versions[port] = None
                    continue
                seen[port] = int(h or 0)
                versions[port] = int(v.split(":")[0]) if v else None
            self.samples.append(Sample(at, seen, versions))
            self.stopping.wait(0.05)

    def worker_back(self, since: float, new: int) -> float | None:
        """When the new master's cache first held a probe change begun after ``since``."""
        later = [v for began, v in list(self.commits) if began >= since]
        if not later:
            return None
        return next(
            (s.at for s in list(self.samples) if s.at >= since and (s.probe[new] or 0) >= later[0]),
            None,
        )

    def serve_back(self, since: float, new: int) -> float | None:
        """When serve's hit counter first went up on the new master after ``since``."""
        before = None
        for s in list(self.samples):
            count = s.hits[new]
            if s.at < since or count is None:
                continue
            if before is not None and count > before:
                return s.at
            before = count
        return None

    def failed_reads(self) -> list[tuple[float, int]]:
        return [r for r in self.reads if r[1] != 200]


@pytest.mark.parametrize("how", ["sentinel-failover", "kill-9"])
def test_sentinel_failover_under_load(how: str, rigs: Any, tmp_path: Path) -> None:
    """``SENTINEL FAILOVER``, or ``kill -9`` of the master, while 8 writers change stock: the
    worker and serve follow the new master (seconds printed), serve answers every read
    meanwhile (from the database while Redis is away), no change is lost."""
    with PrivateSentinel() as group:
        rig = rigs(group.url, group.client)
        rig.prepare(probe=PROBE)
        first = rig.worker("w1", "relay,processor,expiry")
        with (
            serve(rig.pg_url, tmp_path, STOCKCTL_REDIS_URL=group.url) as api,
            Observer(rig, group, api.url) as watch,
        ):
            fault = group.failover if how == "sentinel-failover" else group.kill_master
            load = run_load(rig.sc, rig.products, rig.warehouses, fault)
            new, began, named = load.fault.detail, load.fault.started, load.fault.done
            wait_until(
                lambda: watch.worker_back(named, new) is not None, 60, "the worker to follow"
            )
            watch.prober_done.set()  # the pipeline can settle
            wait_until(lambda: watch.serve_back(named, new) is not None, 60, "serve to follow")
            worker_back, serve_back = watch.worker_back(named, new), watch.serve_back(named, new)
        assert worker_back is not None and serve_back is not None
        # the old master answers as a master until the sentinels reconfigure it (~10 s after
        # SENTINEL FAILOVER): a client that did not ask the sentinels again would stay there
        assert worker_back - named < FOLLOW_SECONDS and serve_back - named < FOLLOW_SECONDS
        assert watch.failed_reads() == [], f"serve failed reads: {watch.failed_reads()[:5]}"
        repair = settle_then_sync(rig, first)
    # the relay noticed the new master and sent the last 30 s again: no stream lost an event
    assert repair.missing_events == 0, f"{repair.missing_events} committed events on no stream"
    report(
        f"sentinel: {how}",
        load,
        repair,
        f"worker processing on the new master {worker_back - began:.1f} s after the fault "
        f"began ({worker_back - named:.1f} s after the sentinels named it)",
        f"serve's reads hit the new master's cache {serve_back - began:.1f} s after the fault "
        f"({serve_back - named:.1f} s after), none of its {len(watch.reads)} reads failed",
    )


# -- 3. De-duplication: duplicates, shuffled versions, day-old replays, a new group from 0


@pytest.fixture(params=list(EVENTS_REDIS_URLS))
def lane(request: pytest.FixtureRequest) -> Iterator[Lane]:
    """The events lane (its own app id and prefix, the streams to itself) on each shared
    topology: standalone, cluster, sentinel."""
    yield from topology_lane(request)


def process(app: App, consumer: str) -> Outcome:
    """Run the processor until the streams are drained; what it did, summed over threads."""
    runner = Runner(
        app, WorkerOptions(only=["processor"], workers=1, consumer=consumer, burst=True)
    )
    assert runner.run(handle_signals=False) == 0
    total = Outcome()
    for job in runner.jobs:
        assert isinstance(job, StreamProcessor)
        for name in ("applied", "duplicates", "stale", "filled", "released"):
            setattr(total, name, getattr(total, name) + getattr(job.totals, name))
    return total


def day_old(data: str) -> str:
    event = json.loads(data)
    sent = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
    event["time"] = (sent - timedelta(days=1)).isoformat()
    return json.dumps(event)


def stock_event_ids(entries: dict[str, list[tuple[str, dict[str, str]]]]) -> list[str]:
    """The ids of the entries that carry a row version (stock events)."""
    out = []
    for topic, found in entries.items():
        for _, fields in found:
            if update_from_event(parse(fields["data"], topic=topic)) is not None:
                out.append(json.loads(fields["data"])["id"])
    return out


def order_cancelled(order_id: str | None) -> tuple[str, str]:
    """An ``order.cancelled`` CloudEvent as another service would publish it: (id, JSON)."""
    event_id = str(uuid.uuid4())
    event = {
        "specversion": "1.0",
        "id": event_id,
        "source": "orders",
        "type": ev.ORDER_CANCELLED,
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": {"order_id": order_id},
    }
    return event_id, json.dumps(event)


def change_every_row(sc: Stockctl, ps: list[str], ws: list[str], rounds: int) -> None:
    """``rounds`` changes of every row (versions 2 to rounds + 1): adjusts, one round of holds."""
    for round_ in range(rounds):
        for p in ps:
            for w in ws:
                if round_ == 2:
                    sc.reserve(p, w, 2, order_id=new_id("O"))
                else:
                    sc.adjust(p, w, round_ + 1, reason="count")


def put_back(lane: Lane, published: dict[str, list[tuple[str, dict[str, str]]]]) -> None:
    """Every entry twice on its stream, shuffled: a row's versions out of order."""
    rnd = random.Random(14)
    for topic, found in published.items():
        twice = [f["data"] for _, f in found] * 2
        rnd.shuffle(twice)
        for data in twice:
            lane.xadd(topic, data)


def marker_ttls(lane: Lane, event_ids: list[str]) -> set[int]:
    """The TTL of each event's de-duplication marker, ``{prefix}:event:processed:{id}`` as
    DESIGN.md names it (``catalog:`` with the default prefix); -2: none."""
    return {int(lane.client.ttl(f"{lane.prefix}:event:processed:{e}")) for e in event_ids}


@pytest.mark.parametrize("markers", ["unversioned", "all"])
def test_duplicates_shuffled_versions_and_day_old_replays_apply_nothing_twice(
    pg_url: str, lane: Lane, markers: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache warmed at the guide's versions; then four changes per row. Their events go on
    the streams twice each, shuffled (a row's versions out of order), then again with a
    CloudEvent ``time`` a day old; then a new consumer group reads every stream from 0. The
    cache ends equal to the database; each event applies at most once, and no replay applies
    anything. ``event_dedupe_markers: all`` (STOCKCTL_EVENT_DEDUPE_MARKERS) writes the guide's
    ``{prefix}:event:processed:{id}`` marker, 24 h, for every stock event; the default writes
    none for them (their version guard is their de-duplication), one for order events."""
    if markers == "all":
        monkeypatch.setenv("STOCKCTL_EVENT_DEDUPE_MARKERS", "all")
    sc = stockctl.connect(pg_url, **lane.settings())
    other_group = lane.app_id + "-replay"
    replayer = stockctl.connect(pg_url, **lane.settings(app_id=other_group))
    app = sc.app

    def check() -> None:
        assert_cache_matches_db(app, app.cache(), lane.get, app.cache().keys, ps)

    try:
        sc.init()
        ps, ws = seed_stock(sc, 12, 3, 100)
        warm(app.store, app.cache())  # every row cached at version 1
        change_every_row(sc, ps, ws, 4)
        Runner(app, WorkerOptions(only=["relay"], burst=True)).run(handle_signals=False)
        published = {t: lane.entries(t) for t in TOPICS}
        ids = stock_event_ids(published)
        assert len(ids) >= len(ps) * len(ws) * 5  # the guide's receipts and the four changes
        lane.clean_streams()
        put_back(lane, published)
        first = process(app, "first")
        check()
        # the guide's versions were cached already; of the rest, each applied at most once
        assert first.applied <= len(ids) - len(ps) * len(ws), first
        assert first.applied + first.duplicates + first.stale == 2 * len(ids), first
        if markers == "all":
            assert first.duplicates == len(ids), first  # every second copy
            ttls = marker_ttls(lane, ids)
            assert DAY_SECONDS - 300 < min(ttls) and max(ttls) <= DAY_SECONDS, ttls
        else:
            assert first.duplicates == 0, first
            assert marker_ttls(lane, ids) == {-2}, "a marker for a stock event"
        # the whole stream again, a day old
        for topic, found in published.items():
            for _, f in found:
                lane.xadd(topic, day_old(f["data"]))
        again = process(app, "first")
        assert again.applied == 0 and again.duplicates + again.stale == len(ids), again
        check()
        # a new group reads every stream from 0: three copies of every event
        replay = process(replayer.app, "replayer")
        assert replay.applied == 0 and replay.duplicates + replay.stale == 3 * len(ids), replay
        check()
        lags = StreamAdmin(lane.client, other_group, DEAD_LETTER, "test").lag(TOPICS)
        assert [(t.pending, t.lag) for t in lags] == [(0, 0)] * len(TOPICS), lags
        # an order event gets its marker whatever the setting, and releases once
        hold = sc.reserve(ps[0], ws[0], 1, order_id=new_id("O"))
        event_id, data = order_cancelled(hold.order_id)
        lane.xadd(ev.ORDER_CANCELLED, data)
        assert process(app, "first").released == 1
        assert sc.get_reservation(hold.id).status == ReservationStatus.RELEASED
        lane.xadd(ev.ORDER_CANCELLED, data)  # delivered again
        again = process(app, "first")
        assert (again.released, again.duplicates) == (0, 1), again
        assert DAY_SECONDS - 300 < min(marker_ttls(lane, [event_id]))
    finally:
        sc.close()
        replayer.close()
        delete_matching(lane.client, f"stockctl:heartbeat:{other_group}:*")
