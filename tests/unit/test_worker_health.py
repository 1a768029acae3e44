"""A worker's progress as its heartbeat reports it: a failing job is logged once (then at most
once a minute) and once when it recovers, and a job failing ``worker_stall_seconds`` or longer,
a stale heartbeat or none at all is a problem for ``worker --check`` and ``stockctl health``."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any, cast

import pytest

from stockctl.bootstrap import App
from stockctl.core.heartbeat import JobState
from stockctl.daemons.workers import runner as runner_mod
from stockctl.daemons.workers.health import FailureLog, assess
from stockctl.daemons.workers.runner import Runner, WorkerOptions
from stockctl.errors import CacheUnavailable

NOW = 1_800_000_000.0


def beat(at: float = NOW, **health: dict[str, Any]) -> str:
    return json.dumps({"consumer": "c", "jobs": {}, "at": at, "health": health})


def test_no_heartbeat_is_a_problem_and_a_fresh_one_without_failures_is_none() -> None:
    assert assess({}, NOW, 30, 15) == ["no worker heartbeat (start one: stockctl worker run)"]
    assert assess({"app:c": beat()}, NOW, 30, 15) == []
    # a heartbeat from before the health field (an older worker) still counts as alive
    old = json.dumps({"consumer": "c", "jobs": {"processor": 3}, "at": NOW - 1})
    assert assess({"app:c": old}, NOW, 30, 15) == []


def test_a_job_failing_for_the_stall_time_or_longer_is_a_problem() -> None:
    failing = {"failing_since": NOW - 29.5, "error": "redis unavailable", "ok_at": NOW - 40}
    assert assess({"app:c": beat(relay=failing)}, NOW, 30, 15) == []
    failing["failing_since"] = NOW - 45
    assert assess({"app:c": beat(relay=failing, expiry={"failing_since": None})}, NOW, 30, 15) == [
        "app:c: relay failing for 45 s: redis unavailable"
    ]


def test_a_stale_heartbeat_is_a_problem() -> None:
    assert assess({"app:c": beat(at=NOW - 20)}, NOW, 30, 15) == ["app:c: heartbeat 20 s old"]


def test_failures_are_logged_once_then_rarely_and_the_recovery_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    failures = FailureLog(every=0.2, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="stockctl.worker"):
        for _ in range(50):
            failures.failed("processor", "redis unavailable at redis://x: refused")
        now[0] += 0.25
        failures.failed("processor", "redis unavailable at redis://x: refused")
        failures.recovered("processor")
        failures.recovered("processor")  # not failing: nothing to say
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert messages[0].startswith("processor failed, retrying (at most one line every 0 s")
    assert messages[1].startswith("processor still failing after 0 s")
    assert messages[2].startswith("processor recovered after ")


class FlakyJob:
    name = "processor"

    def __init__(self, fail_steps: int, before_step: Callable[[], None] = lambda: None) -> None:
        self.fail_steps = fail_steps
        self.before_step = before_step
        self.steps = 0
        self.processed = 0
        self.done = threading.Event()

    def step(self) -> int:
        self.before_step()
        self.steps += 1
        if self.steps <= self.fail_steps:
            raise CacheUnavailable("redis unavailable at redis://x: Connection refused")
        if self.steps == self.fail_steps + 1:
            self.done.set()
        return 1

    def idle(self, stop: threading.Event) -> None:
        stop.wait(0.01)

    def close(self) -> None:
        pass


def test_the_loop_records_failing_since_and_clears_it_on_success(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runner_mod, "BACKOFF_MIN_SECONDS", 0.001)
    monkeypatch.setattr(runner_mod, "BACKOFF_MAX_SECONDS", 0.002)
    run = Runner(cast(App, None), WorkerOptions(only=()))
    seen: list[JobState] = []

    def look() -> None:  # the health as the job starts a step: after each earlier failure
        if 0 < job.steps <= job.fail_steps:
            seen.append(run.job_health()["processor"])

    job = FlakyJob(fail_steps=40, before_step=look)
    run.jobs.append(job)
    thread = threading.Thread(target=run.run_job, args=(job,), daemon=True)
    with caplog.at_level(logging.INFO, logger="stockctl.worker"):
        thread.start()
        assert job.done.wait(10)
        run.stop.set()
        thread.join(5)
    assert len(seen) == 40
    assert all(isinstance(h.failing_since, float) for h in seen)
    assert len({h.failing_since for h in seen}) == 1  # since the first failure
    assert seen[-1].error == "redis unavailable at redis://x: Connection refused"
    health = run.job_health()["processor"]
    assert health.failing_since is None and health.error is None
    assert isinstance(health.ok_at, float)
    assert len(caplog.records) == 2, [r.getMessage() for r in caplog.records]  # failed, recovered
