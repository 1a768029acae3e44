"""``stockctl worker --check`` and ``stockctl health`` fail while a worker cannot make progress,
pass again once it does, and fail fast with one line when Redis itself stalls.

A real worker process on a fresh PostgreSQL database and a Redis of the test's own
(``tests/redisutil.py``): the faults touch only that Redis and that database.
"""

from __future__ import annotations

import signal
import time
import uuid

import pytest
from sqlalchemy import create_engine, text

import stockctl
from stockctl.daemons.workers.health import check as check_workers
from stockctl.errors import CacheUnavailable
from tests.eventutil import cli, spawn, wait_until
from tests.redisutil import PrivateRedis, daemon_env

STALL = 2  # worker_stall_seconds for these tests


def env_for(pg_url: str, redis_url: str) -> dict[str, str]:
    return daemon_env(
        pg_url,
        redis_url,
        STOCKCTL_APP_ID=f"hc{uuid.uuid4().hex[:8]}",
        STOCKCTL_WORKER_STALL_SECONDS=str(STALL),
        STOCKCTL_WORKER_HEARTBEAT_TTL_SECONDS="3",
        STOCKCTL_RELAY_POLL_INTERVAL_MS="100",
    )


def rename_outbox(pg_url: str, old: str, new: str) -> None:
    engine = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SET lock_timeout = '5s'"))
            conn.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))
    finally:
        engine.dispose()


def test_check_and_health_follow_a_stuck_worker_and_a_stalled_redis(
    pg_url: str, private_redis: PrivateRedis
) -> None:
    env = env_for(pg_url, private_redis.url)
    with stockctl.connect(pg_url, redis_url=private_redis.url) as sc:
        sc.init()
    worker = spawn(env, "worker", "run", "--consumer", "stuck")
    try:
        wait_until(lambda: cli(env, "worker", "--check").code == 0, 30, "a healthy worker")
        assert cli(env, "health").code == 0

        # The relay cannot make progress: its table is gone. Within the stall time (and a
        # heartbeat), both checks fail and name the job and its error.
        rename_outbox(pg_url, "outbox", "outbox_away")
        failed_at = time.monotonic()
        wait_until(lambda: cli(env, "worker", "--check").code == 1, 15, "--check to fail")
        assert time.monotonic() - failed_at >= STALL - 0.5
        check = cli(env, "worker", "--check")
        assert check.code == 1
        # the missing table reads as a database without the schema
        assert "stuck: relay failing for" in check.out and "stockctl init" in check.out, check.out
        health = cli(env, "health")
        assert health.code == 2, health.out
        workers = next(x for x in health.out.splitlines() if x.startswith("workers"))
        assert " fail " in workers and "relay failing for" in workers, health.out

        # It recovers: both pass again.
        rename_outbox(pg_url, "outbox_away", "outbox")
        wait_until(lambda: cli(env, "worker", "--check").code == 0, 15, "--check to pass")
        assert cli(env, "health").code == 0

        # Redis stalls (SIGSTOP): --check fails, exit 3, one line; health exit 2, Redis failed
        # and the heartbeats unknown. Each waits about a second on Redis (the probe client's
        # timeout, never retried); the rest of a command's time is its start-up.
        private_redis.pause()
        try:
            check = cli(env, "worker", "--check", timeout=30)
            assert check.code == 3, (check.out, check.err)
            assert check.err.count("\n") == 1, check.err
            assert check.err.startswith("error: worker heartbeats unreadable: redis unavailable")
            health = cli(env, "health", timeout=30)
            assert health.code == 2, health.out
            lines = {x.split()[0]: x for x in health.out.splitlines() if x.strip()}
            assert " fail " in lines["redis"] and " ok " in lines["database"]
            assert "heartbeats live in Redis" in lines["workers"]
            waited_ms = float(lines["redis"].split()[2])  # "redis  fail  1004.52 ms  ..."
            assert waited_ms < 2000, lines["redis"]
            with stockctl.connect(pg_url, redis_url=private_redis.url) as sc:
                started = time.monotonic()
                with pytest.raises(CacheUnavailable, match="heartbeats unreadable"):
                    check_workers(sc.app)
                assert time.monotonic() - started < 2
        finally:
            private_redis.resume()
        wait_until(lambda: cli(env, "worker", "--check").code == 0, 30, "--check to pass again")
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            _, err = worker.communicate(timeout=20)
        except Exception:
            worker.kill()
            _, err = worker.communicate()
    assert worker.returncode == 0, err[-3000:]
    relay_lines = [x for x in err.splitlines() if "stockctl.worker: relay " in x]
    assert [x.split("relay ")[1].split()[0] for x in relay_lines] == ["failed,", "recovered"], err
