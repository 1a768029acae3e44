"""``stockctl worker run``: the relay, the event processor and the expiry sweeper, together or
apart, each in its own thread, with a heartbeat per consumer.

First SIGTERM/SIGINT: warm stop (each job finishes its batch, acks, and the process exits 0).
Second: cold stop, at once.
"""

from __future__ import annotations

import json
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
from stockctl.core.catalog import TOPICS
from stockctl.errors import DependencyUnavailable, InvalidInput

log = logging.getLogger("stockctl.worker")

JOBS = ("relay", "processor", "expiry", "sync")
DEFAULT_JOBS = ("relay", "processor", "expiry")
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
                from stockctl.workers.expiry import ExpirySweeper

                self.jobs.append(ExpirySweeper(app.ctx, s.expiry_interval_seconds))
            elif name == "sync":
                from stockctl.workers.sync import IncrementalSync

                self.jobs.append(
                    IncrementalSync(
                        app.store,
                        app.cache(),
                        app.ctx.clock,
                        s.sync_interval_seconds,
                        timedelta(seconds=s.sync_overlap_seconds),
                    )
                )

    def _relay(self) -> Job:
        from stockctl.clients.redis_bus import StreamPublisher
        from stockctl.workers.relay import OutboxRelay

        s = self.app.settings
        publisher = StreamPublisher(self.app.redis(), s.stream_maxlen, self.app.redis_target)
        relay = OutboxRelay(
            self.app.store,
            publisher.publish,
            batch_size=s.relay_batch_size,
            poll_seconds=s.relay_poll_interval_ms / 1000,
            retention=timedelta(hours=s.outbox_retention_hours),
            clock=self.app.ctx.clock,
        )
        relay.metrics = self.app.metrics()
        return relay

    def _processors(self, batch: int) -> list[Job]:
        s, app = self.app.settings, self.app
        if not app.uses_redis:
            from stockctl.store.cache_sql import SqlStockCache
            from stockctl.workers.embedded import EmbeddedPipeline

            cache = app.cache()
            assert isinstance(cache, SqlStockCache)
            poll = s.relay_poll_interval_ms / 1000
            pipeline = EmbeddedPipeline(
                app.ctx, app.store, cache, batch_size=batch, poll_seconds=poll, clock=app.ctx.clock
            )
            pipeline.metrics = app.metrics()
            return [pipeline]
        from stockctl.clients.redis_bus import StreamConsumer, StreamGroup
        from stockctl.workers.processor import ReadTurn, StreamProcessor

        count = self.options.workers or s.worker_count
        timeout = self.options.batch_timeout_ms or s.worker_batch_timeout_ms
        per_worker = max(1, min(batch, s.worker_queue_size // count))
        turn = ReadTurn()
        group = StreamGroup()  # one recovery of a lost group, one waiter, for all threads
        jobs: list[Job] = []
        for i in range(count):
            name = self.consumer if count == 1 else f"{self.consumer}-{i}"
            consumer = StreamConsumer(
                app.redis(), s.app_id, name, TOPICS, s.dead_letter_topic, app.redis_target, group
            )  # its first read creates the groups (in the job loop: retried while Redis is down)
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
        self.build()
        if self.app.settings.warm_on_start:
            from stockctl.core.cache import warm

            result = warm(self.app.store, self.app.cache())
            log.info(
                "warmed %d rows of %d products in %.2f s",
                result.rows,
                result.products,
                result.seconds,
            )
        if handle_signals:
            self._install_signals()
        port = self.app.settings.worker_metrics_port
        if port:
            from prometheus_client import start_http_server

            start_http_server(
                port, addr=self.app.settings.api_host, registry=self.app.metrics().registry
            )
            log.info("metrics on http://%s:%d/metrics", self.app.settings.api_host, port)
        threads = [
            threading.Thread(
                target=self._loop, args=(job,), name=f"stockctl-{job.name}", daemon=True
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

    def _loop(self, job: Job) -> None:
        backoff = 0.1
        while not self.stop.is_set():
            try:
                done = job.step()
                backoff = 0.1
            except DependencyUnavailable as exc:
                log.warning("%s: %s (retrying in %.1f s)", job.name, exc, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
                continue
            except Exception:
                log.exception("%s failed; retrying", job.name)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)
                continue
            if done == 0:
                if self.options.burst:
                    return
                job.idle(self.stop)
            elif not self.options.burst and getattr(job, "drained", False):
                job.idle(self.stop)  # it took all there was: no empty step before waiting

    def _heartbeats(self) -> None:
        s = self.app.settings
        name = f"{s.app_id}:{self.consumer}"
        every = max(1.0, s.worker_heartbeat_ttl_seconds / 3)
        while True:
            payload = {
                "consumer": self.consumer,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "jobs": self._job_totals(),
                "last_batch_seconds": max(
                    (getattr(j, "last_batch_seconds", 0.0) for j in self.jobs), default=0.0
                ),
                "workers": len(self.jobs),
                "at": time.time(),
            }
            try:
                self.app.cache().heartbeat(
                    name, json.dumps(payload), s.worker_heartbeat_ttl_seconds
                )
            except Exception as exc:  # the heartbeat must never take the worker down
                log.warning("heartbeat failed: %s", exc)
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


def check(app: App) -> tuple[bool, dict[str, str]]:
    """True if any worker of the app id has a fresh heartbeat."""
    beats = app.cache().heartbeats(f"{app.settings.app_id}:")
    return bool(beats), beats
