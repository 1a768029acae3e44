"""``stockctl worker run`` as a real process on PostgreSQL and Redis: signals, the heartbeat probe,
and ``kill -9`` at the worst moment.

Streams live in the events test database of Redis (see ``tests/eventutil.py`` for isolation).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import stockctl
from stockctl.library import Stockctl
from tests.conftest import new_id
from tests.eventutil import (
    Lane,
    all_product_ids,
    assert_cache_matches_db,
    cli,
    drain,
    redis_lane,
    seed_stock,
    settled,
    spawn,
    wait_until,
)


@pytest.fixture
def lane() -> Iterator[Lane]:
    with redis_lane() as lane:
        yield lane


@pytest.fixture
def sc(pg_url: str, lane: Lane) -> Iterator[Stockctl]:
    client = stockctl.connect(pg_url, **lane.settings(relay_poll_interval_ms=50))
    client.init()
    try:
        yield client
    finally:
        client.close()


def heartbeats(lane: Lane) -> list[bytes]:
    return list(lane.client.scan_iter(f"stockctl:heartbeat:{lane.app_id}:*"))


def relay_stepped(lane: Lane) -> bool:
    """A heartbeat records a relay step that did not fail."""
    for key in heartbeats(lane):
        beat = json.loads(lane.get(key.decode()) or "{}")
        if ((beat.get("health") or {}).get("relay") or {}).get("ok_at") is not None:
            return True
    return False


def converged(sc: Stockctl, lane: Lane) -> None:
    app = sc.app
    assert_cache_matches_db(app, app.cache(), lane.get, app.cache().keys, all_product_ids(app))


def stop(proc: subprocess.Popen[str], timeout: float = 10) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the worker did not exit in {timeout} s: {err[-2000:]}") from None
    return proc.returncode, err


def test_sigterm_drains_and_exits_0_and_check_follows_the_heartbeat(
    sc: Stockctl, lane: Lane, pg_url: str
) -> None:
    (p,), (w,) = seed_stock(sc, 1, 1, 30)
    env = lane.env(
        pg_url,
        STOCKCTL_WORKER_HEARTBEAT_TTL_SECONDS="2",
        STOCKCTL_RELAY_POLL_INTERVAL_MS="50",
    )
    assert cli(env, "worker", "--check").code == 1  # nobody running yet
    proc = spawn(env, "worker", "run", "--consumer", "e2e")
    try:
        wait_until(lambda: bool(heartbeats(lane)), 15, "the worker's heartbeat")
        probe = cli(env, "worker", "--check", "-o", "json")
        assert probe.code == 0, probe.err
        beats = json.loads(probe.out)
        assert beats["alive"] is True
        assert set(beats["workers"]) == {f"{lane.app_id}:e2e"}
        assert set(beats["workers"][f"{lane.app_id}:e2e"]["jobs"]) == {
            "relay",
            "processor",
            "expiry",
            "sync",
        }
        # It is working: a change reaches the cache.
        sc.receive(p, w, 12)
        total = sc.app.cache().keys.total(p)
        wait_until(lambda: lane.get(total) == "42", 15, "the change to reach the cache")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code, err = stop(proc, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 0, err
    assert time.monotonic() - started < 5
    assert "stopped" in err
    assert lane.pending_and_lag() == (0, 0)
    # The heartbeat outlives the worker by its TTL, then the probe fails.
    wait_until(lambda: not heartbeats(lane), 5, "the heartbeat to expire")
    probe = cli(env, "worker", "--check")
    assert probe.code == 1
    assert "no worker heartbeat" in probe.out


def test_a_second_sigterm_stops_at_once(sc: Stockctl, lane: Lane, pg_url: str) -> None:
    # A long relay poll keeps the warm stop waiting, so the second signal lands during it.
    env = lane.env(
        pg_url, STOCKCTL_RELAY_POLL_INTERVAL_MS="4000", STOCKCTL_WORKER_HEARTBEAT_TTL_SECONDS="2"
    )
    proc = spawn(env, "worker", "run", "--only", "relay,processor", "--consumer", "twice")
    try:
        # Its first batch done (the heartbeat says so), the relay waits for a NOTIFY.
        wait_until(lambda: relay_stepped(lane), 15, "the relay's first batch")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None, "still finishing its batch"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code, err = stop(proc, 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 1, err
    assert time.monotonic() - started < 1.5
    assert "second signal" in err


# The worker, except that it kills itself (SIGKILL) at its N-th ack: the batch has been written
# to the cache, and is not acked.
DIES_AT_ACK = r"""
import os, signal, sys
from stockctl.redis import bus as redis_bus

acks = 0
original = redis_bus.StreamConsumer.ack

def ack(self, deliveries, **kw):  # kills before the acks go out, now or with the next read
    global acks
    if deliveries:
        acks += 1
        if acks == int(os.environ["DIE_AT_ACK"]):
            os.kill(os.getpid(), signal.SIGKILL)
    original(self, deliveries, **kw)

redis_bus.StreamConsumer.ack = ack
from stockctl.cli import main
sys.argv[0] = "stockctl"
main()
"""


def test_kill_9_after_the_cache_write_before_the_ack_then_restart(
    sc: Stockctl, lane: Lane, pg_url: str
) -> None:
    app = sc.app
    ps, ws = seed_stock(sc, 10, 3, 30)
    drain(app)
    for i in range(120):
        p, w = ps[i % len(ps)], ws[i % len(ws)]
        if i % 3:
            sc.receive(p, w, 2)
        else:
            sc.reserve(p, w, 1, order_id=new_id("O"))
    from stockctl.daemons.workers.runner import Runner, WorkerOptions

    Runner(app, WorkerOptions(only=["relay"], burst=True)).run(handle_signals=False)
    env = lane.env(pg_url, DIE_AT_ACK="4")
    args = ["worker", "run", "--only", "processor", "--workers", "1", "--batch-size", "10"]
    killed = subprocess.run(
        [sys.executable, "-c", DIES_AT_ACK, *args, "--consumer", "w1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    pending, unread = lane.pending_and_lag()
    assert pending > 0 and unread > 0  # one batch in the cache but not acked, the rest unread
    # Restarted under the same name, it takes its pending entries back first.
    restarted = cli(env, *args, "--consumer", "w1", "--burst")
    assert restarted.code == 0, restarted.err
    assert lane.pending_and_lag() == (0, 0)
    assert settled(app, lane)
    converged(sc, lane)


def test_kill_9_while_changes_go_on_then_restart(sc: Stockctl, lane: Lane, pg_url: str) -> None:
    app = sc.app
    ps, ws = seed_stock(sc, 8, 2, 30)
    env = lane.env(
        pg_url,
        STOCKCTL_RELAY_POLL_INTERVAL_MS="50",
        STOCKCTL_WORKER_CLAIM_IDLE_MS="200",
    )
    args = ["worker", "run", "--only", "relay,processor", "--workers", "2", "--batch-size", "20"]
    first = spawn(env, *args, "--consumer", "first")
    halfway = threading.Event()

    def changes() -> None:
        for i in range(160):
            if i == 80:
                halfway.set()
            sc.receive(ps[i % len(ps)], ws[i % len(ws)], 1 + i % 4)

    writer = threading.Thread(target=changes)
    try:
        wait_until(lambda: bool(heartbeats(lane)), 15, "the first worker")
        writer.start()
        assert halfway.wait(30)
        first.kill()  # kill -9, mid-stream
        first.communicate()
        writer.join(30)
        # Another worker (new name): it claims what the dead one left pending, and the rest.
        second = spawn(env, *args, "--consumer", "second")
        try:
            wait_until(lambda: settled(app, lane), 30, "the second worker to catch up")
            second.send_signal(signal.SIGTERM)
            code, err = stop(second)
            assert code == 0, err
        finally:
            if second.poll() is None:
                second.kill()
                second.communicate()
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == -signal.SIGKILL
    converged(sc, lane)
