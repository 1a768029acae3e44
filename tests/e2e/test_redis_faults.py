"""Issue 14, "Redis lost or stalled", end to end: ``stockctl serve`` and ``stockctl worker run``
as real processes on a fresh PostgreSQL database and a Redis of the test's own
(``tests/redisutil.py``), which the test pauses (SIGSTOP) or stops without saving. No fault
ever touches the shared Redis on 127.0.0.1:6379.

* A stalled Redis: every stock read still answers 200, from the database, p99 <= 300 ms, and
  so do bulk stock and /health; cache hits resume after SIGCONT.
* A Redis that lost its data: with writes going on and no command typed, the worker's sync
  rebuilds the cache (old rows included) within 30 s of Redis coming back; ``stockctl health``
  fails while the worker cannot make progress and passes after; the worker logs a handful of
  lines, not one per retry.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

import stockctl
from tests.apiutil import READ, TOKENS
from tests.eventutil import COMMAND, assert_cache_matches_db, cli, wait_until
from tests.redisutil import PrivateRedis, daemon_env, free_port

START_TIMEOUT = 60  # seconds: imports are slow on a loaded 2-core machine


def env_for(pg_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    return daemon_env(pg_url, redis_url, STOCKCTL_API_TOKENS=json.dumps(TOKENS), **extra)


@dataclass
class Proc:
    """A daemon with its output in files (a busy server fills a pipe nobody reads)."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            tail = self.stderr()[-2000:]
            raise AssertionError(f"no exit {timeout} s after SIGTERM: {tail}") from None


@contextmanager
def daemon(env: dict[str, str], tmp: Path, name: str, *args: str) -> Iterator[Proc]:
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [*COMMAND, *args], env=env, stdout=o, stderr=e, start_new_session=True
        )
    p = Proc(proc, out, err)
    try:
        yield p
    finally:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@contextmanager
def serving(env: dict[str, str], tmp: Path) -> Iterator[tuple[Proc, str]]:
    port = free_port()
    with daemon(env, tmp, "serve", "serve", "--port", str(port)) as p:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            if p.proc.poll() is not None:
                raise AssertionError(f"serve exited {p.proc.returncode}: {p.stderr()[-2000:]}")
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, START_TIMEOUT, f"{url}/health", every=0.2)
        yield p, url


def metric(url: str, name: str) -> float:
    """One sample of the server's /metrics (0 if absent)."""
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == name:
            return float(value)
    return 0.0


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


@dataclass
class Load:
    """Threads sending stock reads, bulk stock and /health, paced; every answer recorded as
    (start time, seconds, status)."""

    url: str
    products: list[str]
    stop: threading.Event = field(default_factory=threading.Event)
    samples: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    expected: dict[str, int] = field(default_factory=dict)  # available, if known

    def start(self, readers: int = 4, pace: float = 0.02) -> None:
        for i in range(readers):
            self._spawn(f"read{i}", self._read, pace)
        self._spawn("bulk", self._bulk, pace * 2)
        self._spawn("health", self._health, pace * 2)

    def _spawn(self, name: str, target: Any, pace: float) -> None:
        self.samples[name] = []
        t = threading.Thread(target=target, args=(name, pace), daemon=True)
        self.threads.append(t)
        t.start()

    def _timed(self, name: str, send: Any) -> httpx.Response | None:
        started = time.monotonic()
        r: httpx.Response | None
        try:
            r = send()
            assert r is not None
            status = r.status_code
        except httpx.HTTPError as exc:
            r, status = None, 0
            self.wrong.append(f"{name}: {type(exc).__name__}")
        self.samples[name].append((started, time.monotonic() - started, status))
        return r

    def _read(self, name: str, pace: float) -> None:
        rng = random.Random(name)
        with httpx.Client(base_url=self.url, headers=READ, timeout=30) as http:
            while not self.stop.wait(pace):
                p = rng.choice(self.products)
                r = self._timed(name, lambda p=p: http.get(f"/v1/products/{p}"))
                if r is not None and r.status_code == 200:
                    want = self.expected.get(p)
                    if want is not None and r.json()["available"] != want:
                        self.wrong.append(f"{p}: {r.json()['available']} != {want}")

    def _bulk(self, name: str, pace: float) -> None:
        rng = random.Random(name)
        with httpx.Client(base_url=self.url, headers=READ, timeout=30) as http:
            while not self.stop.wait(pace):
                ids = rng.sample(self.products, min(100, len(self.products)))
                self._timed(
                    name, lambda ids=ids: http.post("/v1/batch/stock", json={"product_ids": ids})
                )

    def _health(self, name: str, pace: float) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while not self.stop.wait(pace):
                self._timed(name, lambda: http.get("/health"))

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def window(self, names: tuple[str, ...], start: float, end: float) -> list[tuple[float, int]]:
        return [
            (secs, status)
            for n in names
            for at, secs, status in self.samples.get(n, [])
            if start <= at < end
        ]


READERS = ("read0", "read1", "read2", "read3")


def seed(env: dict[str, str], products: int, warehouses: int) -> list[str]:
    for args in (
        ("init",),
        ("seed", "--products", str(products), "--warehouses", str(warehouses)),
    ):
        done = cli(env, *args, timeout=120)
        assert done.code == 0, done.err
    with stockctl.connect(env["STOCKCTL_DATABASE_URL"]) as sc:
        return sorted(sc.app.store.all_product_ids())


def test_a_stalled_redis_costs_reads_nothing_and_hits_resume_after_it(
    pg_url: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    env = env_for(pg_url, private_redis.url)
    products = seed(env, 300, 4)
    assert cli(env, "warm-cache").code == 0
    with serving(env, tmp_path) as (server, url):
        with stockctl.connect(pg_url) as sc:
            expected = {p: sc.stock(p).total_sellable for p in products}
        load = Load(url, products, expected=expected)
        load.start()
        try:
            wait_until(lambda: metric(url, "catalog_cache_hits_total") > 0, 30, "cache hits")
            time.sleep(2)  # the 2 s the bounds below are measured on, before the stall
            hits_before = metric(url, "catalog_cache_hits_total")
            assert hits_before > 0
            private_redis.pause()
            paused_at = time.monotonic()
            try:
                time.sleep(2)
                opened = metric(url, 'stockctl_circuit_open{circuit="cache"}')
                started = time.monotonic()
                ready = httpx.get(f"{url}/health/ready", timeout=10)
                ready_took = time.monotonic() - started
                hits_stalled = metric(url, "catalog_cache_hits_total")
                time.sleep(13)
                hits_end_of_stall = metric(url, "catalog_cache_hits_total")
            finally:
                private_redis.resume()
            resumed_at = time.monotonic()
            time.sleep(8)
            hits_after = metric(url, "catalog_cache_hits_total")
            closed = metric(url, 'stockctl_circuit_open{circuit="cache"}')
        finally:
            load.finish()
        assert server.stop() == 0, server.stderr()[-3000:]

    # The same requests in the 2 s before the stall: what this machine gives, as loaded as it is.
    warm = (paused_at - 2, paused_at)
    before = load.window(READERS, *warm)
    stall = load.window(READERS, paused_at, resumed_at)
    bulk = load.window(("bulk",), paused_at, resumed_at)
    health = load.window(("health",), paused_at, resumed_at)

    def bound(names: tuple[str, ...]) -> float:
        """300 ms, unless the machine is so loaded (tests in parallel) that these requests
        took longer than that before Redis stalled: then 1.5 x what they took."""
        return max(300.0, 1.5 * p99([s for s, _ in load.window(names, *warm)]) * 1000)

    everything = load.window((*READERS, "bulk", "health"), 0, float("inf"))
    report: dict[str, Any] = {
        "read_p99_ms_before": round(p99([s for s, _ in before]) * 1000, 1),
        "reads_in_stall": len(stall),
        "read_p99_ms": round(p99([s for s, _ in stall]) * 1000, 1),
        "read_max_ms": round(max(s for s, _ in stall) * 1000, 1),
        "bulk_p99_ms": round(p99([s for s, _ in bulk]) * 1000, 1),
        "health_p99_ms": round(p99([s for s, _ in health]) * 1000, 1),
        "ready_ms": round(ready_took * 1000, 1),
        "hits": [hits_before, hits_stalled, hits_end_of_stall, hits_after],
    }
    print("stall:", json.dumps(report))
    assert not load.wrong, load.wrong[:5]
    assert {status for _, status in everything} == {200}  # every answer, stall or not
    assert len(stall) > 500, report  # the readers kept going through the stall
    assert report["read_p99_ms"] <= bound(READERS), report
    assert report["bulk_p99_ms"] <= bound(("bulk",)), report
    assert report["health_p99_ms"] <= bound(("health",)), report
    # readiness says Redis is down, at once, without waiting on it
    assert ready.status_code == 503 and ready.json()["checks"]["redis"]["status"] == "down"
    assert ready_took < 1.0, ready_took  # a loaded machine's round trip, not a Redis timeout
    assert opened == 1.0 and closed == 0.0  # the breaker is visible in the metrics
    assert hits_end_of_stall == hits_stalled  # no read used the cache during the stall
    assert hits_after > hits_end_of_stall  # ... and they use it again after SIGCONT
    cache_lines = [x for x in server.stderr().splitlines() if "stockctl.cache" in x]
    assert 1 <= len(cache_lines) <= 4, cache_lines  # opened, back: not one line per read


# -- Redis loses its data


def behind(app: Any, ids: list[str]) -> list[str]:
    """Products the cache does not hold at least as new as the database has them now (rows,
    versions and values): with writes going on, a cached row may be newer, never older."""
    db = app.store.inventory_for_products(ids)
    cached = app.cache().get_products(ids)
    late = []
    for p in ids:
        held = {r.warehouse_id: r for r in (cached[p].rows if cached[p] else ())}
        for row in db.get(p, []):
            mine = held.get(row.warehouse_id)
            if mine is None or mine.version < row.version:
                late.append(p)
                break
            if mine.version == row.version and (mine.on_hand, mine.reserved) != (
                row.on_hand,
                row.reserved,
            ):
                late.append(p)
                break
    return late


class Writer(threading.Thread):
    """Adjusts stock through the library (database only: no Redis involved), +1 then -1."""

    def __init__(self, pg_url: str, rows: list[tuple[str, str]]) -> None:
        super().__init__(daemon=True)
        self.pg_url, self.rows = pg_url, rows
        self.halt = threading.Event()
        self.changes = 0
        self.errors: list[str] = []

    def run(self) -> None:
        rng = random.Random(7)
        with stockctl.connect(self.pg_url) as sc:
            while not self.halt.wait(0.02):
                p, w = rng.choice(self.rows)
                try:
                    sc.adjust(p, w, 1, reason="churn")
                    sc.adjust(p, w, -1, reason="churn")
                    self.changes += 2
                except Exception as exc:  # noqa: BLE001 - recorded, the test fails on it
                    self.errors.append(f"{type(exc).__name__}: {exc}")


def health_code(env: dict[str, str]) -> int:
    return cli(env, "health", timeout=30).code


def test_a_redis_that_lost_its_data_is_rebuilt_by_the_worker_alone(
    pg_url: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    env = env_for(
        pg_url,
        private_redis.url,
        STOCKCTL_WORKER_STALL_SECONDS="5",
        STOCKCTL_WORKER_HEARTBEAT_TTL_SECONDS="3",
        STOCKCTL_RELAY_POLL_INTERVAL_MS="100",
    )
    ids = seed(env, 400, 3)
    old, fresh = ids[:100], ids[100:]
    engine = create_engine(pg_url)
    with engine.begin() as conn:  # a quarter of the products last changed a month ago
        conn.execute(
            text(
                "UPDATE inventory SET last_movement_at = now() - interval '30 days' "
                "WHERE product_id = ANY(:ids)"
            ),
            {"ids": old},
        )
    engine.dispose()
    rows = [(p, w) for p in fresh[:100] for w in ("WH001", "WH002", "WH003")]
    with (
        stockctl.connect(pg_url, redis_url=private_redis.url) as watcher,
        daemon(env, tmp_path, "worker", "worker", "run", "--consumer", "w1") as worker,
        serving(env, tmp_path) as (server, url),
    ):
        app = watcher.app
        # No warm-cache typed: the worker's sync finds no warm marker and warms it all.
        wait_until(lambda: not behind(app, ids), 60, "the first warm by the worker", every=0.5)
        wait_until(lambda: health_code(env) == 0, 30, "a healthy system", every=0.5)
        writer = Writer(pg_url, rows)
        load = Load(url, ids)
        writer.start()
        load.start(readers=2, pace=0.05)
        try:
            wait_until(
                lambda: writer.changes >= 20 and len(load.window(READERS, 0, float("inf"))) >= 20,
                30,
                "writes and reads before the loss",
            )
            private_redis.stop_nosave()  # its data is gone: nothing was saved
            down_at = time.monotonic()
            started = time.monotonic()
            codes_down = [health_code(env)]
            health_down_s = time.monotonic() - started
            started = time.monotonic()
            check = cli(env, "worker", "--check", timeout=30)
            check_down_s = time.monotonic() - started
            time.sleep(max(0.0, 8 - (time.monotonic() - down_at)))
            codes_down.append(health_code(env))
            private_redis.start()
            back_at = time.monotonic()
            wait_until(lambda: not behind(app, ids), 30, "the cache to be rebuilt", every=0.5)
            converged = time.monotonic() - back_at
            wait_until(lambda: health_code(env) == 0, 30, "health to pass again", every=0.5)
            healthy = time.monotonic() - back_at
        finally:
            writer.halt.set()
            writer.join(10)
            load.finish()
        # Writes stopped: the events drain and the cache equals the database exactly.
        wait_until(lambda: not behind(app, ids), 30, "the last events", every=0.5)
        assert_cache_matches_db(app, app.cache(), redis_get(private_redis), app.cache().keys, ids)
        assert server.stop() == 0
        assert worker.stop() == 0, worker.stderr()[-3000:]
    logged = worker.stderr().splitlines()
    report = {
        "down_s": round(back_at - down_at, 1),
        "health_while_down_s": round(health_down_s, 1),
        "check_while_down_s": round(check_down_s, 1),
        "converged_s": round(converged, 1),
        "healthy_s": round(healthy, 1),
        "changes": writer.changes,
        "worker_log_lines": len(logged),
        "reads": len(load.window(READERS, 0, float("inf"))),
    }
    print("data loss:", json.dumps(report))
    print("\n".join(logged))
    assert not writer.errors, writer.errors[:3]
    assert not load.wrong, load.wrong[:3]
    assert {status for _, status in load.window(READERS, 0, float("inf"))} == {200}
    assert all(code != 0 for code in codes_down), codes_down
    assert check.code == 3 and check.err.startswith("error: worker heartbeats unreadable")
    assert converged <= 30 and healthy <= 30, report
    assert len(logged) <= 30, report  # a handful per outage, not one per retry or read
    # the first warm, then the one after the loss
    assert sum("no warm marker" in x for x in logged) == 2, report


def redis_get(server: PrivateRedis) -> Any:
    client = server.client()
    return client.get
