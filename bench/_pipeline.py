"""Helpers of the whole-system benchmarks (soak.py, scaleout.py, scale.py): their own Redis
database, `stockctl worker run` as processes, their memory, and the consumer group's backlog.

Redis isolation. The stream keys are the event types themselves (Dapr's layout), so two runs on
one Redis database would read each other's entries. These benchmarks therefore use a logical
database of their own (``STOCKCTL_BENCH_PIPELINE_REDIS_URL``, default db 11: not 12, which
bench/events.py uses, nor 14/15, the tests'), take a Redis lock on it for the whole run (two
runs at once take turns), delete the event streams at the start (anything there is left over
from a killed run: the lock is ours) and at the end, and delete every key under the run's cache
prefix and app id at the end, even on failure. Never FLUSHDB.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from _common import STOCKCTL, log

REDIS_URL = os.environ.get("STOCKCTL_BENCH_PIPELINE_REDIS_URL", "redis://127.0.0.1:6379/11")
LOCK_NAME = "stockctl-bench:pipeline-streams"
DEAD_LETTER = "stockctl.deadletter"


def monotonic() -> float:
    """System-wide clock: comparable between processes."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} / {five:.2f} (1 / 5 min) on {os.cpu_count()} cores"


def topics() -> tuple[str, ...]:
    from stockctl.core.catalog import TOPICS

    return tuple(TOPICS)


def poll_versions(
    client: Any, samples: Any, give_up: float
) -> Iterator[tuple[float, list[Any], list[Any]]]:
    """The loop of a commit -> cache latency poller (a process of its own, so no writer's GIL
    delays its clock). Samples (rows key, warehouse, version, commit time, ...) arrive on the
    ``samples`` queue; None ends the run once none is outstanding. About every millisecond all
    outstanding samples are read in one pipelined round trip; each round yields (now, samples
    whose version the cache holds, samples given up after ``give_up`` seconds)."""
    pending: list[Any] = []
    done = False
    while not done or pending:
        items: list[Any] = []
        try:
            items.append(samples.get(timeout=0.001 if pending else 0.2))
            while True:
                items.append(samples.get_nowait())
        except queue.Empty:
            pass
        done = done or None in items
        pending += [item for item in items if item is not None]
        if not pending:
            continue
        pipe = client.pipeline(transaction=False)
        for key, warehouse, *_ in pending:
            pipe.hget(key, warehouse)
        values = pipe.execute()
        now = monotonic()
        seen, lost, still = [], [], []
        for item, value in zip(pending, values, strict=True):
            if value is not None and int(value.split(b":", 1)[0]) >= item[2]:
                seen.append(item)
            elif now - item[3] > give_up:
                lost.append(item)
            else:
                still.append(item)
        pending = still
        yield now, seen, lost


def delete_matching(client: Any, pattern: str) -> int:
    removed = 0
    batch: list[Any] = []
    for key in client.scan_iter(pattern, count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            removed += client.unlink(*batch)
            batch = []
    if batch:
        removed += client.unlink(*batch)
    return int(removed)


@dataclass
class Lane:
    """One benchmark run's slice of the pipeline Redis database."""

    url: str
    client: Any
    run_id: str
    apps: list[str] = field(default_factory=list)  # app ids used (groups, heartbeats)
    prefixes: list[str] = field(default_factory=list)  # cache prefixes used

    def names(self, tag: str) -> tuple[str, str]:
        """(app id, cache prefix) for one part of the run; cleaned at the end."""
        app_id, prefix = f"bench-{self.run_id}-{tag}", f"bench{self.run_id}{tag}"
        self.apps.append(app_id)
        self.prefixes.append(prefix)
        return app_id, prefix

    def app(self, database_url: str, app_id: str, prefix: str, **settings: Any) -> Any:
        """A stockctl App on the database and this lane."""
        from stockctl.bootstrap import bootstrap
        from stockctl.settings import load_settings

        loaded = load_settings(
            database_url=database_url,
            redis_url=self.url,
            app_id=app_id,
            cache_prefix=prefix,
            **settings,
        )
        return bootstrap(loaded)

    def env(self, database_url: str, app_id: str, prefix: str, **extra: str) -> dict[str, str]:
        """Environment of a `stockctl worker run` process on this lane."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCTL_")}
        env.update(
            COLUMNS="200",
            NO_COLOR="1",
            STOCKCTL_DATABASE_URL=database_url,
            STOCKCTL_REDIS_URL=self.url,
            STOCKCTL_APP_ID=app_id,
            STOCKCTL_CACHE_PREFIX=prefix,
        )
        env.update(extra)
        return env

    def clean_prefix(self, prefix: str) -> int:
        removed = delete_matching(self.client, f"{prefix}:*")
        return removed + delete_matching(self.client, f"stockctl:{prefix}:*")

    def clean_streams(self) -> None:
        self.client.delete(*topics(), DEAD_LETTER)

    def cleanup(self) -> None:
        self.clean_streams()
        removed = sum(self.clean_prefix(p) for p in self.prefixes)
        for app_id in self.apps:
            removed += delete_matching(self.client, f"stockctl:heartbeat:{app_id}:*")
        log(f"cleanup: streams and {removed:,} keys removed from {self.url}")


@contextmanager
def bench_lane(wait_seconds: float = 1800) -> Iterator[Lane]:
    """The run's lane: the lock, empty streams, and everything deleted on the way out."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=60)
    lock = client.lock(LOCK_NAME, timeout=4 * 3600, blocking_timeout=wait_seconds)
    if not lock.acquire():
        raise SystemExit(f"another benchmark holds {LOCK_NAME} on {REDIS_URL}")
    lane = Lane(REDIS_URL, client, uuid.uuid4().hex[:8])
    try:
        lane.clean_streams()
        yield lane
    finally:
        try:
            lane.cleanup()
        finally:
            lock.release()
            client.close()


# --------------------------------------------------------------------------- worker processes


@dataclass
class Worker:
    """`stockctl worker run` as a process, its output in a temporary file."""

    consumer: str
    proc: subprocess.Popen[bytes]
    logfile: IO[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self, last: int = 4000) -> str:
        self.logfile.flush()
        self.logfile.seek(0)
        return self.logfile.read().decode(errors="replace")[-last:]

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (warm stop); the exit code (-9 if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = -9
        if code not in (0, -signal.SIGKILL):
            log(f"worker {self.consumer} exited {code}:\n{self.output()}")
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        self.logfile.close()


def start_worker(env: dict[str, str], consumer: str, *args: str) -> Worker:
    logfile = tempfile.TemporaryFile()
    cmd = [STOCKCTL, "worker", "run", "--consumer", consumer, "--log-level", "WARNING", *args]
    proc = subprocess.Popen(
        cmd, env=env, cwd=tempfile.gettempdir(), stdout=logfile, stderr=subprocess.STDOUT
    )
    return Worker(consumer, proc, logfile)


@contextmanager
def workers(env: dict[str, str], consumers: Sequence[str], *args: str) -> Iterator[list[Worker]]:
    """Worker processes (one per consumer name); killed on the way out if still running."""
    started: list[Worker] = []
    try:
        for name in consumers:
            started.append(start_worker(env, name, *args))
        yield started
    finally:
        for w in started:
            w.close()


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS), in MB (1 MB = 2**20 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for process {pid}")


def heartbeats(app: Any) -> dict[str, dict[str, Any]]:
    """consumer -> heartbeat payload of every live worker of the app id."""
    head = app.settings.app_id + ":"
    beats = app.cache().heartbeats(head)
    return {name.removeprefix(head): json.loads(payload) for name, payload in beats.items()}


def processed(beat: dict[str, Any] | None) -> int:
    return int(((beat or {}).get("jobs") or {}).get("processor", 0))


def wait_heartbeats(
    app: Any, ws: Sequence[Worker], after: float = 0.0, timeout: float = 90
) -> dict[str, dict[str, Any]]:
    """Until every worker has a heartbeat written after ``after`` (time.time())."""
    deadline = monotonic() + timeout
    while True:
        for w in ws:
            if w.proc.poll() is not None:
                raise SystemExit(f"worker {w.consumer} exited {w.proc.returncode}:\n{w.output()}")
        beats = heartbeats(app)
        if all(float(beats.get(w.consumer, {}).get("at", 0)) > after for w in ws):
            return beats
        if monotonic() > deadline:
            raise SystemExit(f"no fresh heartbeat from {[w.consumer for w in ws]} in {timeout} s")
        time.sleep(0.1)


# --------------------------------------------------------------------------- the group's backlog


@dataclass(frozen=True)
class Backlog:
    outbox: int  # committed, not yet published
    lag: int  # on the streams, not yet delivered to the group
    pending: int  # delivered, not acked

    @property
    def total(self) -> int:
        return self.outbox + self.lag + self.pending


def backlog(app: Any) -> Backlog:
    """What `stockctl events lag` shows, summed: outbox backlog, group lag and pending."""
    from stockctl.redis.stream_admin import StreamAdmin

    unpublished, _ = app.store.outbox_backlog()
    s = app.settings
    admin = StreamAdmin(app.redis(), s.app_id, s.dead_letter_topic, app.redis_target)
    lags = admin.lag(topics())
    return Backlog(int(unpublished), sum(t.lag or 0 for t in lags), sum(t.pending for t in lags))


def wait_drained(app: Any, timeout: float) -> float | None:
    """Seconds until nothing is left to publish or process (None: not within ``timeout``)."""
    started = monotonic()
    while backlog(app).total:
        if monotonic() - started > timeout:
            return None
        time.sleep(0.05)
    return monotonic() - started


def consumer_pending(client: Any, group: str) -> dict[str, int]:
    """consumer -> entries delivered to it and not acked, over every topic."""
    out: dict[str, int] = {}
    for topic in topics():
        if not client.exists(topic):
            continue
        summary = client.xpending(topic, group)
        for c in summary.get("consumers") or []:
            name = c["name"].decode() if isinstance(c["name"], bytes) else str(c["name"])
            out[name] = out.get(name, 0) + int(c["pending"])
    return out


def stream_entries(client: Any) -> int:
    return sum(int(client.xlen(t)) for t in topics())


def dead_letters(client: Any) -> int:
    return int(client.xlen(DEAD_LETTER))


# --------------------------------------------------------------------------- the database


def raise_stock(url: str, units: int = 1_000_000) -> None:
    """Every row gets ``units`` more available, so reserves never run dry; fresh statistics."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE inventory SET quantity_available = quantity_available + %s", (units,))
        conn.execute("VACUUM ANALYZE")


def invariant_violations(app: Any, products: Sequence[str]) -> dict[str, int]:
    """Oversold rows, rows whose reserved differs from their holds, products whose cache
    differs from the database (every row's version and values, every plain key)."""
    from stockctl.core.cache import verify

    cache = app.cache()
    drift: list[Any] = []
    for start in range(0, len(products), 5000):
        drift += verify(app.store, cache, cache.keys, list(products[start : start + 5000]))
    if drift:
        log(f"cache drift, first: {drift[:3]}")
    return {
        "oversold_rows": len(app.store.oversold_rows(1_000_000)),
        "reserved_drift_rows": len(app.store.reserved_drift(1_000_000)),
        "cache_drift_products": len(drift),
    }
