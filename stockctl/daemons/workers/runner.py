"""``stockctl worker run``: the relay, the event processor, the expiry sweeper and the
incremental sync, together or apart, each in its own thread, with a heartbeat per consumer.

A job that fails is retried with backoff (up to ``BACKOFF_MAX_SECONDS``); its failure is logged
once, then at most once every ``STILL_FAILING_LOG_SECONDS``, and its recovery once (``health``). The
heartbeat carries each job's last success and how long it has been failing, so that
``worker --check`` and ``stockctl health`` fail while a worker cannot make progress.

First SIGTERM/SIGINT: warm stop (each job finishes its batch, acks, and the process exits 0).
Second: cold stop, at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import FrameType
from typing import Protocol

from stockctl.bootstrap import App
from stockctl.core import lifecycle
from stockctl.core.heartbeat import Heartbeat, JobState
from stockctl.daemons.workers.health import FailureLog, JobHealth, one_line
from stockctl.errors import DependencyUnavailable, InvalidInput

log = logging.getLogger("stockctl.worker")

JOBS = ("relay", "processor", "expiry", "sync")
DEFAULT_JOBS = JOBS
BACKOFF_MIN_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0


class Job(Protocol):
    name: str
    processed: int

    def step(self) -> int: ...

    def idle(self, stop: threading.Event) -> None: ...

    def close(self) -> None: ...


@dataclass
class WorkerOptions:
    only: Sequence[str] = DEFAULT_JOBS
    workers: int | None = None
    batch_size: int | None = None
    batch_timeout_ms: int | None = None
    consumer: str | None = None
    burst: bool = False  # run until there is nothing to do, then exit (tests, one-off drains)


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(DEFAULT_JOBS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in JOBS]
    if unknown or not names:
        raise InvalidInput(f"unknown job(s) {', '.join(unknown)}: choose from {', '.join(JOBS)}")
    return names


@dataclass
class Runner:
    app: App
    options: WorkerOptions
    stop: threading.Event = field(default_factory=threading.Event)
    jobs: list[Job] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    health: dict[int, JobHealth] = field(default_factory=dict)  # by id() of the job
    failures: FailureLog = field(default_factory=FailureLog)

    @property
    def consumer(self) -> str:
        return self.options.consumer or f"{socket.gethostname()}-{os.getpid()}"

    def build(self) -> None:
        s, app = self.app.settings, self.app
        batch = self.options.batch_size or s.worker_batch_size
        for name in self.options.only:
            if name == "relay" and app.uses_redis:
                self.jobs.append(self._relay())
            elif name == "processor":
                self.jobs += self._processors(batch)
            elif name == "expiry":
                from stockctl.daemons.workers.expiry import ExpirySweeper

                self.jobs.append(ExpirySweeper(app.ctx, s.expiry_interval_seconds))
            elif name == "sync":
                from stockctl.daemons.workers.sync import IncrementalSync

                self.jobs.append(
                    IncrementalSync(
                        app.store,
                        app.cache(),
                        app.ctx.clock,
                        s.sync_interval_seconds,
                        timedelta(seconds=s.sync_overlap_seconds),
                        owner=self.consumer,
                    )
                )

    def _relay(self) -> Job:
        from stockctl.daemons.workers.relay import OutboxRelay

        s = self.app.settings
        publisher = self.app.stream_publisher()
        relay = OutboxRelay(
            self.app.store,
            publisher.publish,
            batch_size=s.relay_batch_size,
            poll_seconds=s.relay_poll_interval_ms / 1000,
            retention=timedelta(hours=s.outbox_retention_hours),
            clock=self.app.ctx.clock,
            lineage=publisher.lineage,
        )
        relay.metrics = self.app.metrics()
        return relay

    def _processors(self, batch: int) -> list[Job]:
        s, app = self.app.settings, self.app
        if not app.uses_redis:
            from stockctl.daemons.workers.embedded import EmbeddedPipeline

            poll = s.relay_poll_interval_ms / 1000
            pipeline = EmbeddedPipeline(
                app.ctx,
                app.store,
                app.embedded_cache(),
                batch_size=batch,
                poll_seconds=poll,
                clock=app.ctx.clock,
            )
            pipeline.metrics = app.metrics()
            return [pipeline]
        from stockctl.daemons.workers.processor import ReadTurn, StreamProcessor

        count = self.options.workers or s.worker_count
        timeout = self.options.batch_timeout_ms or s.worker_batch_timeout_ms
        per_worker = max(1, min(batch, s.worker_queue_size // count))
        turn = ReadTurn()
        names = [self.consumer] if count == 1 else [f"{self.consumer}-{i}" for i in range(count)]
        jobs: list[Job] = []
        for consumer in app.stream_consumers(names):
            job = StreamProcessor(
                app.store,
                app.cache(),
                consumer,
                self._release_order,
                batch_size=per_worker,
                block_ms=timeout,
                max_deliveries=s.worker_max_deliveries,
                claim_idle_ms=s.worker_claim_idle_ms,
                burst=self.options.burst,
                turn=turn,
                linger_ms=s.worker_linger_ms,
            )
            job.metrics = app.metrics()
            jobs.append(job)
        return jobs

    def _release_order(self, order_id: str, reason: str) -> object:
        return lifecycle.release_order(self.app.ctx, order_id, reason)

    def run(self, handle_signals: bool = True) -> int:
        """Run until stopped (or, in burst mode, until every job is idle). Returns an exit code."""
        if handle_signals:
            self._install_signals()
        if not self._build_when_ready():
            return 0  # stopped while waiting
        if self.app.settings.warm_on_start:
            from stockctl.core.warming import warm

            result = warm(self.app.store, self.app.cache())
            log.info(
                "warmed %d rows of %d products in %.2f s",
                result.rows,
                result.products,
                result.seconds,
            )
        port = self.app.settings.worker_metrics_port
        if port:
            from prometheus_client import start_http_server

            start_http_server(
                port, addr=self.app.settings.api_host, registry=self.app.metrics().registry
            )
            log.info("metrics on http://%s:%d/metrics", self.app.settings.api_host, port)
        threads = [
            threading.Thread(
                target=self.run_job, args=(job,), name=f"stockctl-{job.name}", daemon=True
            )
            for job in self.jobs
        ]
        beat = threading.Thread(target=self._heartbeats, name="stockctl-heartbeat", daemon=True)
        started = time.time()
        for t in [*threads, beat]:
            t.start()
        log.info("worker %s running %s", self.consumer, ", ".join(j.name for j in self.jobs))
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
        finally:
            self.stop.set()
            beat.join(2)
            for job in self.jobs:
                job.close()
        log.info("worker %s stopped after %.1f s", self.consumer, time.time() - started)
        return 0

    def _build_when_ready(self) -> bool:
        """Build the jobs; a dependency that does not answer yet (a Redis Cluster whose slot
        map cannot be read, say) is waited for, with one line logged, as a job's failure is,
        so that a worker started during an outage starts by itself when it ends. A burst run
        fails at once instead. False: stopped while waiting."""
        pause, waited = BACKOFF_MIN_SECONDS, False
        while True:
            try:
                self.build()
            except DependencyUnavailable as exc:
                if self.options.burst:
                    raise
                self.jobs.clear()
                if not waited:
                    log.warning("waiting to start: %s", exc)
                    waited = True
                if self.stop.wait(pause):
                    return False
                pause = min(pause * 2, BACKOFF_MAX_SECONDS)
                continue
            if waited:
                log.info("dependencies answer again: starting")
            return True

    def run_job(self, job: Job) -> None:
        """One job's loop, until ``stop``: what each job thread runs (failures backed off and
        recorded in ``health``, never raised)."""
        backoff = BACKOFF_MIN_SECONDS
        health = self.health.setdefault(id(job), JobHealth())
        while not self.stop.is_set():
            try:
                done = job.step()
            except Exception as exc:
                # a dependency down is expected: one line; anything else: its traceback once
                self._failed(job, health, exc, trace=not isinstance(exc, DependencyUnavailable))
                self.stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
                continue
            backoff = BACKOFF_MIN_SECONDS
            self._succeeded(job, health)
            if done == 0:
                if self.options.burst:
                    return
                job.idle(self.stop)
            elif not self.options.burst and getattr(job, "drained", False):
                job.idle(self.stop)  # it took all there was: no empty step before waiting

    def _failed(self, job: Job, health: JobHealth, exc: Exception, trace: bool) -> None:
        health.error = one_line(exc)
        if health.failing_since is None:
            health.failing_since = time.time()
        self.failures.failed(job.name, health.error, trace=trace)

    def _succeeded(self, job: Job, health: JobHealth) -> None:
        health.ok_at = time.time()
        if health.failing_since is None:
            return
        health.failing_since = health.error = None
        same = [j for j in self.jobs if j.name == job.name]
        if not any(self.health.get(id(j), JobHealth()).failing_since for j in same):
            self.failures.recovered(job.name)

    def job_health(self) -> dict[str, JobState]:
        """Per job kind (its threads together): the last success, since when it has been
        failing (its longest-failing thread) and that thread's last error."""
        out: dict[str, JobState] = {}
        for j in self.jobs:
            h = self.health.get(id(j), JobHealth())
            was = out.get(j.name, JobState())
            ok_at = was.ok_at
            if h.ok_at is not None and (ok_at is None or h.ok_at > ok_at):
                ok_at = h.ok_at
            since, error = was.failing_since, was.error
            if h.failing_since is not None and (since is None or h.failing_since < since):
                since, error = h.failing_since, h.error
            out[j.name] = JobState(ok_at, since, error)
        return out

    def _heartbeats(self) -> None:
        s = self.app.settings
        name = f"{s.app_id}:{self.consumer}"
        every = max(1.0, s.worker_heartbeat_ttl_seconds / 3)
        while True:
            beat = Heartbeat(
                consumer=self.consumer,
                pid=os.getpid(),
                host=socket.gethostname(),
                at=time.time(),
                jobs=self._job_totals(),
                workers=len(self.jobs),
                last_batch_seconds=max(
                    (getattr(j, "last_batch_seconds", 0.0) for j in self.jobs), default=0.0
                ),
                health=self.job_health(),
            )
            try:
                self.app.cache().heartbeat(name, beat.encode(), s.worker_heartbeat_ttl_seconds)
            except Exception as exc:  # the heartbeat must never take the worker down
                self.failures.failed("heartbeat", one_line(exc))
            else:
                self.failures.recovered("heartbeat")
            if self.stop.wait(every):
                return

    def _job_totals(self) -> dict[str, int]:
        """Items done per job kind, summed over its threads (processors share one name)."""
        totals: dict[str, int] = {}
        for j in self.jobs:
            totals[j.name] = totals.get(j.name, 0) + j.processed
        return totals

    def _install_signals(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            if self.stop.is_set():
                log.warning("second signal: stopping now")
                os._exit(1)
            log.info("signal %d: finishing the current batch, then stopping", signum)
            self.stop.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
