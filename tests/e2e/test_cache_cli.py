"""``stockctl warm-cache`` and ``stockctl cache verify|get|stats|clear`` (and the sync job) as real
processes, against Redis and against the embedded cache.

Redis isolation: the shared test database (``REDIS_URL``, db 15) under a unique ``cache_prefix``
and app id per test; every key under them is deleted at the end.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

import stockctl
from stockctl.bootstrap import App
from stockctl.core import cache as cache_uc
from stockctl.core import seed as demo
from stockctl.core.projection import CacheKeys
from stockctl.library import Stockctl
from stockctl.store.tables import cache_entries
from tests.conftest import REDIS_URL
from tests.eventutil import assert_cache_matches_db, delete_matching, text_of, unique

_SCRIPT = Path(sys.executable).with_name("stockctl")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "stockctl"]
DOWN = "redis://127.0.0.1:1/0"


@dataclass
class Done:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def one_line_error(self, code: int) -> str:
        assert self.code == code, f"exit {self.code}, stderr: {self.err!r}"
        lines = self.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), self.err
        return lines[0]


def run(env: dict[str, str], *args: str) -> Done:
    """The CLI as a process with no terminal: stdin is /dev/null, output is piped."""
    done = subprocess.run(
        [*COMMAND, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return Done(done.returncode, done.stdout, done.stderr)


@dataclass
class Target:
    """A database and its cache, seen by the CLI (``env``) and by the library (``sc``), with
    raw access to the cache's keys to break them as an operator or a bug would."""

    kind: str
    env: dict[str, str]
    sc: Stockctl

    @property
    def app(self) -> App:
        return self.sc.app

    @property
    def keys(self) -> CacheKeys:
        return self.app.cache().keys

    def cli(self, *args: str, code: int | None = 0, **env: str) -> Done:
        done = run({**self.env, **env}, *args)
        if code is not None:
            assert done.code == code, f"stockctl {' '.join(args)}: exit {done.code}: {done.err}"
        return done

    def get(self, key: str) -> str | None:
        if self.kind == "redis":
            value = self.app.redis().get(key)
            return None if value is None else text_of(value)
        return self._sql_get(key)

    def delete(self, key: str) -> None:
        if self.kind == "redis":
            assert self.app.redis().delete(key) == 1, key
            return
        with self.app.store.transaction() as tx:
            assert tx.conn.execute(delete(cache_entries).where(cache_entries.c.key == key)).rowcount

    def put(self, key: str, value: str) -> None:
        """Overwrite a plain key, keeping its expiry."""
        if self.kind == "redis":
            assert self.app.redis().set(key, value, xx=True, keepttl=True), key
            return
        t = cache_entries
        with self.app.store.transaction() as tx:
            assert tx.conn.execute(update(t).where(t.c.key == key).values(value=value)).rowcount

    def put_row(self, product_id: str, warehouse_id: str, encoded: str) -> None:
        """Overwrite one warehouse's entry of a product's internal rows hash."""
        key = self.keys.rows(product_id)
        if self.kind == "redis":
            self.app.redis().hset(key, warehouse_id, encoded)
            return
        held = json.loads(self._sql_get(key) or "{}")
        held[warehouse_id] = encoded
        self.put(key, json.dumps(held))

    def _sql_get(self, key: str) -> str | None:
        with self.app.store.read() as conn:
            t = cache_entries
            row = conn.execute(select(t.c.value).where(t.c.key == key)).first()
        return row.value if row else None


@contextmanager
def make_target(kind: str, url: str, **settings: str) -> Iterator[Target]:
    prefix, app_id = unique("t"), unique("app")
    env = {
        **os.environ,
        "COLUMNS": "200",
        "NO_COLOR": "1",
        "STOCKCTL_DATABASE_URL": url,
        "STOCKCTL_CACHE_PREFIX": prefix,
        "STOCKCTL_APP_ID": app_id,
        **{f"STOCKCTL_{k.upper()}": v for k, v in settings.items()},
    }
    lib: dict[str, Any] = {"cache_prefix": prefix, "app_id": app_id, **settings}
    if kind == "redis":
        env["STOCKCTL_REDIS_URL"] = lib["redis_url"] = REDIS_URL
    sc = stockctl.connect(url, **lib)
    sc.init()
    try:
        yield Target(kind, env, sc)
    finally:
        try:
            if kind == "redis":
                client = sc.app.redis()
                delete_matching(client, f"{prefix}:*")
                delete_matching(client, f"stockctl:{prefix}:*")
                delete_matching(client, f"stockctl:heartbeat:{app_id}:*")
        finally:
            sc.close()


@pytest.fixture(params=["redis", "embedded"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Redis (on PostgreSQL) and the embedded cache (in a SQLite file)."""
    url = request.getfixturevalue("pg_url" if request.param == "redis" else "sqlite_url")
    with make_target(request.param, url) as t:
        yield t


def seed(t: Target, products: int, warehouses: int) -> list[str]:
    app = t.app
    demo.load(app.store, demo.SeedPlan(products, warehouses), app.ctx.clock(), app.ctx.actor)
    return [demo.product_id(n) for n in range(1, products + 1)]


# -- verify and repair


def breakages(k: CacheKeys) -> tuple[list[Callable[[str], str]], list[Callable[[str], str]]]:
    """Keys to delete, one kind per product in turn: plain keys and the internal rows hash."""
    deleted = [
        lambda p: k.warehouse(p, "WH002"),
        k.available,
        k.rows,
        k.total,
        k.status,
        k.low_stock,
        k.product,
    ]
    corrupted = [
        lambda p: k.warehouse(p, "WH003"),
        k.available,
        k.total,
        k.status,
        k.product,
    ]
    return deleted, corrupted


def test_verify_names_every_broken_product_and_repair_fixes_them(target: Target) -> None:
    """500 products x 4 warehouses warmed; 20 products lose a key, 20 get a wrong value (plain
    keys, or a row of the rows hash: older version = stale, newer with other units = wrong);
    verify names all 40 and exits 1, --repair rewrites them, verify then finds none."""
    ids = seed(target, 500, 4)
    warmed = target.cli("warm-cache", "-o", "json").json()
    assert (warmed["products"], warmed["rows"]) == (500, 2000)
    clean = target.cli("cache", "verify", "--all", "-o", "json").json()
    assert (clean["checked"], clean["drift"]) == (500, [])

    rng = random.Random(11)
    picked = rng.sample(ids, 40)
    deleted, corrupted = picked[:20], picked[20:]
    to_delete, to_corrupt = breakages(target.keys)
    for i, p in enumerate(deleted):
        target.delete(to_delete[i % len(to_delete)](p))
    expected_kind = dict.fromkeys(deleted, "missing")
    for i, p in enumerate(corrupted):
        if i % 7 == 5:
            target.put_row(p, "WH001", "0:5:0:10")  # an older version than the database's 1
            expected_kind[p] = "stale"
        elif i % 7 == 6:
            target.put_row(p, "WH004", "9:123456:0:10")  # a newer version, other units
            expected_kind[p] = "wrong"
        else:
            key = to_corrupt[i % len(to_corrupt)](p)
            target.put(key, "not-json" if key == target.keys.product(p) else "987654")
            expected_kind[p] = "wrong"

    found = target.cli("cache", "verify", "--all", "-o", "json", code=1).json()
    kinds = {d["product_id"]: d["kind"] for d in found["drift"]}
    assert len(found["drift"]) == len(kinds) == 40
    assert kinds == expected_kind

    repaired = target.cli("cache", "verify", "--all", "--repair")
    assert "Drift in 40 of 500 products (repaired)" in repaired.out
    for p in picked:
        assert p in repaired.out

    again = target.cli("cache", "verify", "--all", "-o", "json").json()
    assert again["drift"] == []
    assert_cache_matches_db(target.app, target.app.cache(), target.get, target.keys, picked)
    sampled = target.cli("cache", "verify", "--sample", "50")
    assert "no drift in 50 product(s)" in sampled.out


# -- Redis unreachable, bad input


def test_redis_unreachable_is_exit_3_with_one_line(sqlite_url: str) -> None:
    env = {
        **os.environ,
        "STOCKCTL_DATABASE_URL": sqlite_url,
        "STOCKCTL_REDIS_URL": DOWN,
        "STOCKCTL_REDIS_TIMEOUT_SECONDS": "1",
    }
    sc = stockctl.connect(sqlite_url)
    try:
        sc.init()
        demo.load(sc.app.store, demo.SeedPlan(5, 2), sc.app.ctx.clock(), "test")
    finally:
        sc.close()
    for args in (["warm-cache"], ["warm-cache", "-o", "json"], ["cache", "verify", "--all"]):
        done = run(env, *args)
        line = done.one_line_error(3)
        assert "redis unavailable at redis://127.0.0.1:1" in line, line
        assert done.out == ""


def test_batch_out_of_range_is_refused(sqlite_url: str) -> None:
    for batch in ("0", "10001"):
        done = run(
            {**os.environ, "STOCKCTL_DATABASE_URL": sqlite_url}, "warm-cache", "--batch", batch
        )
        assert "batch must be between 1 and 10000" in done.one_line_error(2)
        assert done.out == ""


def test_bad_input_is_refused_or_reported(target: Target) -> None:
    seed(target, 6, 2)
    assert target.cli("warm-cache", "--products", "P000001,no such!", code=2).err.startswith(
        "error: "
    )

    asked = "P000001,NO-SUCH-1,P000003,NO-SUCH-2"
    partial = target.cli("warm-cache", "--products", asked, "-o", "json").json()
    assert (partial["products"], partial["rows"]) == (2, 4)
    assert partial["not_found"] == ["NO-SUCH-1", "NO-SUCH-2"]
    told = target.cli("warm-cache", "--products", asked)
    assert "warmed 4 rows of 2 products" in told.out
    assert "2 product id(s) not found (no inventory rows): NO-SUCH-1, NO-SUCH-2" in told.out
    assert target.app.cache().get_products(["P000001", "P000002"])["P000002"] is None

    refused = target.cli("cache", "clear", code=2).one_line_error(2)
    assert "refusing to clear without --yes" in refused
    assert target.get(target.keys.available("P000001")) is not None
    one = target.cli("cache", "clear", "--products", "P000001", "--yes")
    assert "removed 8 key(s)" in one.out  # 6 fixed keys + 2 warehouse keys
    assert target.get(target.keys.available("P000001")) is None
    assert target.get(target.keys.available("P000003")) is not None
    target.cli("cache", "clear", "--yes")
    assert target.app.cache().get_products(["P000003"]) == {"P000003": None}


# -- inspection


def test_cache_get_shows_every_key_with_ttl_and_version(target: Target) -> None:
    seed(target, 3, 2)
    target.sc.adjust("P000002", "WH002", 7, reason="bump a version")
    target.cli("warm-cache")
    shown = target.cli("cache", "get", "P000002", "-o", "json").json()
    k = target.keys
    by_key = {e["key"]: e for e in shown}
    assert list(by_key) == [
        *k.product_keys("P000002"),
        k.warehouse("P000002", "WH001"),
        k.warehouse("P000002", "WH002"),
    ]
    for e in shown:
        assert e["value"] is not None, e
        assert 250 <= e["ttl_seconds"] <= 300, e
    assert by_key[k.warehouse("P000002", "WH001")]["version"] == 1
    assert by_key[k.warehouse("P000002", "WH002")]["version"] == 2
    assert json.loads(by_key[k.rows("P000002")]["value"])["WH002"].startswith("2:")
    assert by_key[k.available("P000002")]["value"] == target.get(k.available("P000002"))

    table = target.cli("cache", "get", "P000002").out
    assert k.warehouse("P000002", "WH002") in table and "s " in table
    unknown = target.cli("cache", "get", "NO-SUCH", "-o", "json").json()
    assert all(e["value"] is None and e["ttl_seconds"] is None for e in unknown)


def test_cache_stats_reports_the_reads_of_every_process(target: Target) -> None:
    ids = seed(target, 10, 2)
    app = target.app
    cache_uc.get_stock(app.store, app.cache(), ids[:4], app.read_counters)  # 4 misses
    cache_uc.get_stock(app.store, app.cache(), ids[:6], app.read_counters)  # 4 hits, 2 misses
    stats = target.cli("cache", "stats", "-o", "json").json()
    assert (stats["stock_reads_hits"], stats["stock_reads_misses"]) == (4, 6)
    assert stats["stock_hit_rate"] == 0.4
    assert stats["keys"] >= 6 * (6 + 2)
    if target.kind == "redis":
        assert stats["used_memory"] > 0 and "evicted_keys" in stats
    assert "stock_hit_rate" in target.cli("cache", "stats").out


def test_hash_tags_put_the_product_in_braces(pg_url: str) -> None:
    with make_target("redis", pg_url, cache_hash_tags="true") as t:
        seed(t, 2, 2)
        t.cli("warm-cache")
        shown = t.cli("cache", "get", "P000001", "-o", "json").json()
        assert all("{P000001}" in e["key"] for e in shown)
        prefix = t.keys.prefix
        assert t.get(f"{prefix}:stock:{{P000001}}:available") == shown[1]["value"]
        assert t.get(f"{prefix}:stock:P000001:available") is None
        assert t.cli("cache", "verify", "--all", "-o", "json").json()["drift"] == []


# -- incremental sync as the worker runs it


def test_worker_sync_burst_repairs_what_the_events_missed(pg_url: str) -> None:
    """No processor runs; changed rows are stale in the cache until one `worker run --only sync
    --burst` cycle refreshes them."""
    with make_target("redis", pg_url, sync_overlap_seconds="0.2") as t:
        ids = seed(t, 200, 3)
        t.cli("warm-cache")
        t.cli("worker", "run", "--only", "sync", "--burst")  # the first checkpoint
        assert t.app.cache().get_meta(cache_uc.SYNC_CHECKPOINT) is not None
        time.sleep(0.5)
        rng = random.Random(2)
        changed = sorted(set(rng.sample(ids, 30)))
        for p in changed:
            t.sc.adjust(p, f"WH00{rng.randint(1, 3)}", 5, reason="missed by the events")
        stale = t.cli("cache", "verify", "--all", "-o", "json", code=1).json()
        assert sorted(d["product_id"] for d in stale["drift"]) == changed
        t.cli("worker", "run", "--only", "sync", "--burst")
        assert t.cli("cache", "verify", "--all", "-o", "json").json()["drift"] == []
        assert_cache_matches_db(t.app, t.app.cache(), t.get, t.keys, changed)
