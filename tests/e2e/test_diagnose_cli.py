"""``stockctl diagnose``, ``stockctl health`` and ``stockctl top`` as real processes.

Redis: the shared test database (``REDIS_URL``) under a unique ``app_id`` and ``cache_prefix``
per test, keys deleted afterwards; these tests write no stream. "Redis unreachable" is a port
nothing listens on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import stockctl
from stockctl.core import seed as demo
from stockctl.core.diagnose import RUNBOOKS
from tests.conftest import REDIS_URL
from tests.eventutil import Done, Lane, cli, unique

DOWN = "redis://127.0.0.1:1"


@pytest.fixture
def lane() -> Iterator[Lane]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
    lane = Lane(REDIS_URL, client, unique("diag"), unique("dg"))
    try:
        yield lane
    finally:
        lane.clean_keys()
        client.close()


def load_demo(database_url: str, **settings: Any) -> None:
    """``stockctl init`` and ``stockctl seed`` (3 products x 2 warehouses), in process."""
    with stockctl.connect(database_url, **settings) as sc:
        sc.init()
        app = sc.app
        demo.load(app.store, demo.SeedPlan(3, 2), app.ctx.clock(), app.ctx.actor)


@pytest.fixture
def seeded(pg_url: str, lane: Lane) -> str:
    """A PostgreSQL database with 3 demo products x 2 warehouses."""
    load_demo(pg_url)
    return pg_url


def as_json(done: Done) -> Any:
    assert done.out, done.err
    return json.loads(done.out)


def beat(pg_url: str, lane: Lane, consumer: str = "host-1") -> None:
    """A live worker's heartbeat, as ``worker run`` writes it."""
    with stockctl.connect(pg_url, **lane.settings()) as sc:
        payload = {
            "consumer": consumer,
            "jobs": {"processor": 12},
            "last_batch_seconds": 0.002,
            "workers": 1,
            "at": time.time(),
        }
        sc.app.cache().heartbeat(f"{lane.app_id}:{consumer}", json.dumps(payload), 30)


# -- diagnose -------------------------------------------------------------------------------


def test_redis_unreachable_every_runbook_completes_and_exits_2(seeded: str, lane: Lane) -> None:
    env = lane.env(seeded, STOCKCTL_REDIS_URL=DOWN, STOCKCTL_REDIS_TIMEOUT_SECONDS="2")
    done = cli(env, "diagnose", "all", "--product", "P000001", "-o", "json")
    assert done.code == 2, done.err
    report = as_json(done)
    assert report["exit_code"] == 2
    checks = report["checks"]
    for runbook in RUNBOOKS:
        failed = [c for c in checks if c["runbook"] == runbook and c["status"] == "fail"]
        assert failed, f"{runbook} reports the outage"
        for c in failed:
            assert c["value"].startswith(f"unreachable: redis unavailable at {DOWN}"), c
            assert c["remedy"] == "stockctl health: bring the dependency back"
    reserved = [c for c in checks if c["name"] == "reserved counters vs holds"]
    assert [c["status"] for c in reserved] == ["ok"], "database checks still run"

    table = cli(env, "diagnose")
    assert table.code == 2
    for runbook in RUNBOOKS:
        assert runbook in table.out
    assert "redis unavailable" in table.out and "fail" in table.out


def test_no_worker_fails_stock_not_updating_and_names_worker_run(seeded: str, lane: Lane) -> None:
    env = lane.env(seeded)
    done = cli(env, "diagnose", "stock-not-updating", "-o", "json")
    assert done.code == 2, done.err
    beat_check = next(c for c in as_json(done)["checks"] if c["name"] == "worker heartbeat")
    assert beat_check["status"] == "fail"
    assert "stockctl worker run" in beat_check["remedy"]

    table = cli(env, "diagnose", "stock-not-updating")
    assert table.code == 2
    line = next(x for x in table.out.splitlines() if "worker heartbeat" in x)
    assert "fail" in line and "stockctl worker run" in line


def test_diagnose_refuses_unknown_runbooks_and_bad_ids(tmp_path: Path) -> None:
    env = {**os.environ, "STOCKCTL_DATABASE_URL": f"sqlite:///{tmp_path / 'e.db'}"}
    done = cli(env, "diagnose", "everything")
    assert done.code == 2
    assert done.err.strip().startswith("error: unknown runbook(s) everything")
    assert done.out == ""
    bad = cli(env, "diagnose", "stock-not-updating", "--product", "no spaces allowed")
    assert bad.code == 2 and bad.err.strip().startswith("error: ")
    assert len(bad.err.strip().splitlines()) == 1


def test_on_the_embedded_default_the_consistency_remedy_works(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    load_demo(url)
    env = {**os.environ, "COLUMNS": "200", "STOCKCTL_DATABASE_URL": url}
    done = cli(env, "diagnose", "consistency", "-o", "json")
    assert done.code == 2, done.out
    checks = {c["name"]: c for c in as_json(done)["checks"]}
    assert checks["reserved counters vs holds"]["status"] == "ok"
    sample = checks["cache vs database (sample)"]
    assert sample["status"] == "fail"
    assert "P000001 missing: no cached rows" in sample["value"]
    # run what it says to do, then ask again
    remedy = sample["remedy"].split()
    assert remedy[0] == "stockctl"
    assert cli(env, *remedy[1:]).code == 0
    again = cli(env, "diagnose", "consistency", "-o", "json")
    assert (again.code, as_json(again)["exit_code"]) == (0, 0), again.out


# -- health ---------------------------------------------------------------------------------


def lines(done: Done) -> dict[str, str]:
    return {x.split()[0]: x for x in done.out.splitlines() if x.strip()}


def test_health_follows_the_worker_heartbeat_and_redis(seeded: str, lane: Lane) -> None:
    env = lane.env(seeded)
    none = cli(env, "health")
    assert none.code == 2, none.out
    found = lines(none)
    assert set(found) == {"database", "redis", "workers"}
    assert " ok " in found["database"] and " ok " in found["redis"]
    assert " fail " in found["workers"] and "stockctl worker run" in found["workers"]

    beat(seeded, lane)
    alive = cli(env, "health", "-o", "json")
    assert alive.code == 0, alive.out
    report = as_json(alive)
    assert report["exit_code"] == 0
    assert [(c["check"], c["status"]) for c in report["checks"]] == [
        ("database", "ok"),
        ("redis", "ok"),
        ("workers", "ok"),
    ]
    assert report["checks"][2]["detail"].startswith("1 alive, newest beat ")
    assert all(c["latency_ms"] >= 0 for c in report["checks"])

    down = cli(lane.env(seeded, STOCKCTL_REDIS_URL=DOWN), "health")
    assert down.code == 2
    found = lines(down)
    assert " ok " in found["database"]
    assert " fail " in found["redis"] and "redis unavailable" in found["redis"]
    assert " fail " in found["workers"]


# -- top ------------------------------------------------------------------------------------


def test_top_once_renders_a_frame(seeded: str, lane: Lane) -> None:
    beat(seeded, lane, "host-7")
    done = cli(lane.env(seeded), "top", "--once")
    assert done.code == 0, done.err
    for label in (
        "events in",
        "processed",
        "outbox backlog",
        "hit rate",
        "reservations holding",
        "expiring < 1 min",
        "low/out-of-stock rows",
        "workers 1",
        "worker heartbeats",
    ):
        assert label in done.out, label
    assert f"{lane.app_id}:host-7" in done.out


def test_top_once_on_the_embedded_default(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'top.db'}"
    load_demo(url)
    done = cli({**os.environ, "COLUMNS": "200", "STOCKCTL_DATABASE_URL": url}, "top", "--once")
    assert done.code == 0, done.err
    assert "events in 0/s" in done.out and "workers 0" in done.out
    assert "low/out-of-stock rows" in done.out
