"""Scale-out: two ``stockctl worker run --only processor`` processes in one consumer group share
the load; when one is killed (SIGKILL) holding delivered, unacked entries, the other takes them
over: nothing lost, nothing processed twice, the cache equal to the database.

Streams live in the events test database of Redis (see ``tests/eventutil.py`` for isolation).
The throughput of one process against two is measured by ``bench/scaleout.py``, not here.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import stockctl
from stockctl.core.catalog import TOPICS
from stockctl.daemons.workers.runner import Runner, WorkerOptions
from stockctl.library import Stockctl
from tests.eventutil import (
    DEAD_LETTER,
    Lane,
    all_product_ids,
    assert_cache_matches_db,
    drain,
    redis_lane,
    seed_stock,
    settled,
    spawn,
    text_of,
    wait_until,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

CHANGES = 1500  # per phase: a few thousand events in all, the test well under 40 s


@pytest.fixture
def lane() -> Iterator[Lane]:
    with redis_lane() as lane:
        yield lane


def change(sc: Stockctl, ps: Sequence[str], ws: Sequence[str], n: int, seed_: int) -> None:
    """N reserves and adjusts from 4 threads."""

    def work(k: int) -> None:
        rnd = random.Random(seed_ * 100 + k)
        for _ in range(n // 4):
            p, w = rnd.choice(ps), rnd.choice(ws)
            if rnd.random() < 0.7:
                sc.reserve(p, w, 1)
            else:
                sc.adjust(p, w, rnd.choice((1, -1)), reason="scale-out")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))


def publish(sc: Stockctl) -> None:
    """The outbox to the streams (the relay, in burst mode, in this process)."""
    Runner(sc.app, WorkerOptions(only=["relay"], burst=True)).run(handle_signals=False)


def entries(lane: Lane) -> int:
    return sum(int(lane.client.xlen(t)) for t in TOPICS)


def beat(lane: Lane, consumer: str) -> dict[str, Any] | None:
    found = lane.get(f"stockctl:heartbeat:{lane.app_id}:{consumer}")
    return None if found is None else dict(json.loads(found))


def fresh_count(lane: Lane, consumer: str, after: float) -> int:
    """The consumer's processed count from a heartbeat written after ``after``."""
    found: dict[str, Any] = {}

    def fresh() -> bool:
        found.update(beat(lane, consumer) or {})
        return float(found.get("at", 0)) > after

    wait_until(fresh, 10, f"a fresh heartbeat from {consumer}")
    return int(found["jobs"].get("processor", 0))


def held_by(lane: Lane, consumer: str) -> int:
    """Entries delivered to the consumer's threads and not acked, over the topics."""
    held = 0
    for topic in TOPICS:
        for c in lane.client.xpending(topic, lane.app_id).get("consumers") or []:
            name = text_of(c["name"])
            if name == consumer or name.startswith(consumer + "-"):
                held += int(c["pending"])
    return held


def start(lane: Lane, pg_url: str, consumer: str) -> subprocess.Popen[str]:
    env = lane.env(
        pg_url,
        STOCKCTL_WORKER_CLAIM_IDLE_MS="1000",
        STOCKCTL_WORKER_HEARTBEAT_TTL_SECONDS="3",  # a heartbeat every second
    )
    # Two threads each; a blocking read waits 2 s, so a stopped process's pending reads are
    # still answered by Redis when entries arrive.
    args = ["--only", "processor", "--workers", "2", "--batch-timeout", "2000"]
    return spawn(env, "worker", "run", *args, "--consumer", consumer, "--log-level", "WARNING")


def stop_holding(
    sc: Stockctl, lane: Lane, ps: list[str], ws: list[str], alpha: Any, idle_since: float
) -> tuple[int, int]:
    """Stop alpha (SIGSTOP) with its reads outstanding, publish more: it is delivered entries it
    cannot ack. Returns (entries it holds, entries it processed before); retried with more
    changes if it caught none. Nothing is published between ``idle_since`` and the stop."""
    app = sc.app
    for attempt in range(5):
        change(sc, ps, ws, CHANGES if attempt == 0 else 200, seed_=2 + attempt)
        done = fresh_count(lane, "alpha", idle_since)  # stays so until it is stopped
        os.kill(alpha.pid, signal.SIGSTOP)
        time.sleep(0.2)
        publish(sc)
        time.sleep(0.2)
        held = held_by(lane, "alpha")
        if held:
            return held, done
        os.kill(alpha.pid, signal.SIGCONT)
        wait_until(lambda: settled(app, lane), 30, "the workers to catch up")
        idle_since = time.time()
    raise AssertionError("alpha was never delivered entries while stopped")


def test_two_workers_share_the_load_and_one_killed_loses_nothing(pg_url: str, lane: Lane) -> None:
    sc = stockctl.connect(pg_url, **lane.settings())
    sc.init()
    alpha = beta = None
    try:
        app = sc.app
        ps, ws = seed_stock(sc, 30, 4, 10_000)
        drain(app)  # the cache holds every product at its seeded state; the group exists
        alpha, beta = start(lane, pg_url, "alpha"), start(lane, pg_url, "beta")
        wait_until(lambda: beat(lane, "alpha") and beat(lane, "beta"), 60, "both workers")
        base = entries(lane)

        # Both share the load: each processes part of it, none is idle, none twice.
        change(sc, ps, ws, CHANGES, seed_=1)
        publish(sc)
        wait_until(lambda: settled(app, lane), 30, "the two workers to process the changes")
        now = time.time()
        first = {c: fresh_count(lane, c, now) for c in ("alpha", "beta")}
        assert all(first.values()), first
        assert sum(first.values()) == entries(lane) - base

        # Alpha dies holding entries (stopped first, so it cannot ack them); beta takes them
        # over once they have been idle for 1 s, and processes everything else.
        held, before = stop_holding(sc, lane, ps, ws, alpha, now)
        alpha.kill()
        alpha.communicate(timeout=10)
        assert alpha.returncode == -signal.SIGKILL
        wait_until(lambda: settled(app, lane), 30, "beta to take over alpha's entries")
        assert held_by(lane, "alpha") == 0
        assert lane.client.xlen(DEAD_LETTER) == 0
        after = fresh_count(lane, "beta", time.time())
        assert before + after == entries(lane) - base, (held, before, after)
        assert_cache_matches_db(app, app.cache(), lane.get, app.cache().keys, all_product_ids(app))

        beta.send_signal(signal.SIGTERM)
        _, err = beta.communicate(timeout=15)
        assert beta.returncode == 0, err
    finally:
        for proc in (alpha, beta):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.communicate()
        sc.close()
