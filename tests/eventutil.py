"""Helpers for the event pipeline tests: a private slice of Redis, draining, and cache checks.

Redis isolation. Stream keys are the event types (Dapr's layout), so they cannot be renamed per
test, and every consumer group created at ``0`` reads whatever the streams already hold. The
pipeline tests therefore use their own Redis logical database (``STOCKCTL_TEST_EVENTS_REDIS_URL``,
default db 14 — not db 15, which the other suites share) and:

* hold a Redis lock (``stockctl-tests:event-streams``) for the whole test, so that test processes
  running at the same time (pytest-xdist, two people) take turns on the streams;
* delete the event-type streams and the dead-letter stream of that database at the start and at
  the end of the test (never FLUSHDB);
* give each test its own ``app_id`` (consumer group and heartbeat names) and ``cache_prefix``,
  and delete the keys under them at the end.

Cache-only tests (no streams) need no lock: a unique prefix is enough.

The same holds on the other two topologies (``EVENTS_REDIS_URLS``): the sentinel group's master
at db 14, and the test Redis Cluster, which has only db 0: there the lock and deleting nothing
but the event-type streams and the test's own keys keep the pipeline tests apart from each other
and from the other suites on the cluster (which never touch the event-type streams).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from sqlalchemy import select

from stockctl.bootstrap import App
from stockctl.core.cache_ports import StockCache
from stockctl.core.catalog import TOPICS
from stockctl.core.model import Inventory
from stockctl.core.projection import CacheKeys, ProductStock, RowState
from stockctl.daemons.workers.runner import Runner, WorkerOptions
from stockctl.redis.stream_admin import StreamAdmin
from stockctl.store.tables import outbox
from tests.conftest import REDIS_CLUSTER_URL, REDIS_SENTINEL_URL, new_id, redis_client

EVENTS_REDIS_URL = os.environ.get("STOCKCTL_TEST_EVENTS_REDIS_URL", "redis://127.0.0.1:6379/14")
EVENTS_REDIS_URLS = {  # the pipeline suite runs on each
    "standalone": EVENTS_REDIS_URL,
    "cluster": os.environ.get("STOCKCTL_TEST_EVENTS_REDIS_CLUSTER_URL", REDIS_CLUSTER_URL),
    "sentinel": os.environ.get(
        "STOCKCTL_TEST_EVENTS_REDIS_SENTINEL_URL", REDIS_SENTINEL_URL.rsplit("/", 1)[0] + "/14"
    ),
}
DEAD_LETTER = "stockctl.deadletter"
STREAMS = (*TOPICS, DEAD_LETTER)
LOCK_NAME = "stockctl-tests:event-streams"

_SCRIPT = Path(sys.executable).with_name("stockctl")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "stockctl"]


def text_of(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def delete_matching(client: redis.Redis | RedisCluster, pattern: str) -> None:
    batch = list(client.scan_iter(pattern, 1000))
    for i in range(0, len(batch), 500):
        client.delete(*batch[i : i + 500])


@dataclass
class Lane:
    """One test's slice of the events Redis database."""

    url: str
    client: redis.Redis | RedisCluster
    app_id: str
    prefix: str

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "redis_url": self.url,
            "app_id": self.app_id,
            "cache_prefix": self.prefix,
            **extra,
        }

    def env(self, database_url: str, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "COLUMNS": "200",
            "NO_COLOR": "1",
            "STOCKCTL_DATABASE_URL": database_url,
            "STOCKCTL_REDIS_URL": self.url,
            "STOCKCTL_APP_ID": self.app_id,
            "STOCKCTL_CACHE_PREFIX": self.prefix,
        }
        env.update(extra)
        return env

    def get(self, key: str) -> str | None:
        """A plain GET, as the runbooks do it."""
        value = self.client.get(key)
        return None if value is None else text_of(value)

    def xadd(self, topic: str, data: str, **fields: str) -> str:
        entry: dict[Any, Any] = {"data": data, **fields}
        return text_of(self.client.xadd(topic, entry))

    def entries(self, topic: str) -> list[tuple[str, dict[str, str]]]:
        found: Any = self.client.xrange(topic)
        return [(text_of(i), {text_of(k): text_of(v) for k, v in f.items()}) for i, f in found]

    def published_event_ids(self) -> list[str]:
        """The CloudEvent id of every entry on every topic (with repeats, if any)."""
        return [json.loads(f["data"])["id"] for t in TOPICS for _, f in self.entries(t)]

    def admin(self) -> StreamAdmin:
        return StreamAdmin(self.client, self.app_id, DEAD_LETTER, "test")

    def pending_and_lag(self) -> tuple[int, int]:
        """Summed over the topics: entries delivered but not acked, and entries not yet read."""
        lags = self.admin().lag(TOPICS)
        return sum(t.pending for t in lags), sum(t.lag or 0 for t in lags)

    def clean_streams(self) -> None:
        self.client.delete(*STREAMS)

    def clean_keys(self) -> None:
        delete_matching(self.client, f"{self.prefix}:*")
        delete_matching(self.client, f"stockctl:heartbeat:{self.app_id}:*")
        delete_matching(self.client, f"stockctl:{self.prefix}:*")  # read counters, checkpoints


@contextmanager
def redis_lane(url: str = EVENTS_REDIS_URL) -> Iterator[Lane]:
    """The test's own app id and cache prefix on the events database, with the streams to
    itself: it takes the streams lock, deletes the event-type and dead-letter streams, and on
    the way out deletes them again with every key under its prefix and app id (the module
    docstring explains why a dedicated database, a lock and deletion, never FLUSHDB)."""
    client = redis_client(url)
    lock = client.lock(LOCK_NAME, timeout=600, blocking_timeout=600)
    assert lock.acquire(), "another test run holds the event streams for too long"
    lane = Lane(url, client, unique("app"), unique("t"))
    try:
        lane.clean_streams()
        yield lane
    finally:
        try:
            lane.clean_streams()
            lane.clean_keys()
        finally:
            lock.release()
            client.close()


def topology_lane(request: pytest.FixtureRequest) -> Iterator[Lane]:
    """A ``redis_lane`` on the topology ``request.param`` names (a key of
    ``EVENTS_REDIS_URLS``), for a fixture parametrized over them."""
    if request.param != "standalone":
        request.getfixturevalue("redis_topologies")  # the cluster and sentinels answer
    with redis_lane(EVENTS_REDIS_URLS[request.param]) as lane:
        yield lane


# -- running the worker in-process


def drain(app: App, *, consumer: str = "drain", workers: int = 1) -> None:
    """Publish the outbox, then process every stream entry, then return (burst mode)."""
    if app.uses_redis:
        Runner(app, WorkerOptions(only=["relay"], consumer=consumer, burst=True)).run(
            handle_signals=False
        )
    Runner(
        app, WorkerOptions(only=["processor"], workers=workers, consumer=consumer, burst=True)
    ).run(handle_signals=False)


class Background:
    """A ``Runner`` in a thread, as ``stockctl worker run`` runs it, until ``stop()``."""

    def __init__(self, app: App, **options: Any) -> None:
        import threading

        options.setdefault("only", ["relay", "processor"])
        self.runner = Runner(app, WorkerOptions(**options))
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, name="test-worker", daemon=True)

    def _run(self) -> None:
        self.code = self.runner.run(handle_signals=False)

    def __enter__(self) -> Background:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.runner.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the worker did not stop"
        assert self.code == 0

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def settled(app: App, lane: Lane) -> bool:
    """Outbox published, every entry read and acked."""
    backlog, _ = app.store.outbox_backlog()
    return backlog == 0 and lane.pending_and_lag() == (0, 0)


# -- the database side


def outbox_event_ids(app: App) -> list[str]:
    with app.store.engine.connect() as conn:
        return [r.event_id for r in conn.execute(select(outbox.c.event_id))]


def all_product_ids(app: App) -> list[str]:
    from stockctl.store.tables import inventory

    with app.store.engine.connect() as conn:
        return sorted({r.product_id for r in conn.execute(select(inventory.c.product_id))})


# -- cache checks


def expected_plain(keys: CacheKeys, product_id: str, rows: Sequence[Inventory]) -> dict[str, Any]:
    """The plain keys of a product and their values, written out from DESIGN.md.

    ``catalog:product:{p}`` is compared as parsed JSON.
    """
    sellable = {r.warehouse_id: max(r.on_hand - r.reserved, 0) for r in rows}
    total = sum(r.on_hand for r in rows)
    available = sum(sellable.values())
    highest = max((r.low_stock_threshold for r in rows), default=0)
    if available <= 0:
        status = "out_of_stock"
    elif available <= highest:
        status = "low_stock"
    else:
        status = "in_stock"
    values: dict[str, Any] = {keys.warehouse(product_id, w): str(s) for w, s in sellable.items()}
    values[keys.total(product_id)] = str(total)
    values[keys.available(product_id)] = str(available)
    values[keys.status(product_id)] = status
    values[keys.low_stock(product_id)] = "1" if status == "low_stock" else "0"
    values[keys.product(product_id)] = {
        "product_id": product_id,
        "total": total,
        "available": available,
        "status": status,
        "warehouses": sellable,
    }
    return values


def read_plain(get: Callable[[str], str | None], wanted: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in wanted.items():
        found = get(key)
        out[key] = json.loads(found) if isinstance(value, dict) and found is not None else found
    return out


def assert_cache_matches_db(
    app: App,
    cache: StockCache,
    get: Callable[[str], str | None],
    keys: CacheKeys,
    product_ids: Sequence[str],
) -> None:
    """Rows (with versions) and every plain key of each product equal the database."""
    db = app.store.inventory_for_products(product_ids)
    cached = cache.get_products(product_ids)
    wrong: list[tuple[str, object, object]] = []
    for p in product_ids:
        rows = db.get(p, [])
        want = ProductStock(p, tuple(RowState.of(r) for r in rows))
        if cached[p] != want:
            wrong.append((p, cached[p], want))
            continue
        plain = expected_plain(keys, p, rows)
        got = read_plain(get, plain)
        if got != plain:
            wrong.append((p, got, plain))
    assert not wrong, f"{len(wrong)} product(s) differ, first: {wrong[0]}"


# -- the CLI as a process


@dataclass
class Done:
    code: int
    out: str
    err: str


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> Done:
    done = subprocess.run(
        [*COMMAND, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert "Traceback" not in done.stderr, done.stderr
    return Done(done.returncode, done.stdout, done.stderr)


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*COMMAND, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def seed_stock(
    sc: Any, products: int, warehouses: int, units: int, step: int = 0
) -> tuple[list[str], list[str]]:
    """New products x new warehouses; a product's i-th warehouse receives ``units + i * step``."""
    ps = [new_id("P") for _ in range(products)]
    ws = [new_id("W") for _ in range(warehouses)]
    for w in ws:
        sc.add_warehouse(w)
    for p in ps:
        sc.add_product(p)
        for i, w in enumerate(ws):
            sc.receive(p, w, units + i * step)
    return ps, ws
