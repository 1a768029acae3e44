"""A worker's health: how each job thread records its failures and recoveries (``JobHealth``,
logged through ``FailureLog``: once when it starts failing, then at most once every
``STILL_FAILING_LOG_SECONDS``, and once on recovery), and how ``worker --check`` and
``stockctl health`` judge the heartbeats that carry them (``check``, ``assess``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from stockctl.bootstrap import App
from stockctl.core.heartbeat import Heartbeat, InvalidHeartbeat
from stockctl.errors import CacheUnavailable, DependencyUnavailable

log = logging.getLogger("stockctl.worker")

STILL_FAILING_LOG_SECONDS = 60.0


@dataclass
class JobHealth:
    """One job thread's progress, as its heartbeat reports it (wall-clock seconds)."""

    ok_at: float | None = None  # the last step that did not fail
    failing_since: float | None = None  # the first failure since then; None: not failing
    error: str | None = None  # the last failure, one line


class FailureLog:
    """Logs a failing thing (a job name, the heartbeat) once when it starts failing, then at
    most once every ``every`` seconds while it keeps failing, and once when it recovers:
    an outage of Redis costs a handful of lines, not one per retry."""

    def __init__(
        self, every: float = STILL_FAILING_LOG_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every = every
        self.clock = clock  # seconds, monotonic
        self._lock = threading.Lock()
        self._failing: dict[str, tuple[float, float]] = {}  # name -> (since, last logged)

    def failed(self, name: str, error: str, *, trace: bool = False) -> None:
        now = self.clock()
        with self._lock:
            since, logged = self._failing.get(name, (None, 0.0))
            if since is None:
                self._failing[name] = (now, now)
            elif now - logged >= self.every:
                self._failing[name] = (since, now)
            else:
                return
        if since is None:
            log.warning(
                "%s failed, retrying (at most one line every %.0f s while it fails): %s",
                name,
                self.every,
                error,
                exc_info=trace,
            )
        else:
            log.warning("%s still failing after %.0f s: %s", name, now - since, error)

    def recovered(self, name: str) -> None:
        with self._lock:
            since, _ = self._failing.pop(name, (None, 0.0))
        if since is not None:
            log.info("%s recovered after %.1f s", name, self.clock() - since)

    def failing(self, name: str) -> bool:
        return name in self._failing


def one_line(exc: BaseException) -> str:
    text = (str(exc).splitlines() or [""])[0].strip()
    return text if isinstance(exc, DependencyUnavailable) else f"{type(exc).__name__}: {text}"


@dataclass(frozen=True)
class WorkerCheck:
    beats: dict[str, str]  # heartbeat name -> payload (JSON)
    problems: list[str]  # empty: every worker with a heartbeat is making progress

    @property
    def alive(self) -> bool:
        return bool(self.beats)

    @property
    def ok(self) -> bool:
        return self.alive and not self.problems


def assess(
    beats: dict[str, str], now: float, stall_seconds: float, ttl_seconds: float
) -> list[str]:
    """What keeps these heartbeats from saying "making progress": none at all, one older than
    its TTL, or a job failing for ``stall_seconds`` or longer. One line each."""
    if not beats:
        return ["no worker heartbeat (start one: stockctl worker run)"]
    problems: list[str] = []
    for name, raw in sorted(beats.items()):
        try:
            beat = Heartbeat.decode(raw)
        except InvalidHeartbeat:
            problems.append(f"{name}: heartbeat is not JSON")
            continue
        age = beat.age(now)
        if age > ttl_seconds:
            problems.append(f"{name}: heartbeat {age:.0f} s old")
        for job, h in sorted(beat.health.items()):
            since = h.failing_since
            if since is not None and now - since >= stall_seconds:
                problems.append(f"{name}: {job} failing for {now - since:.0f} s: {h.error}")
    return problems


def check(app: App) -> WorkerCheck:
    """The heartbeats of the app id's workers, and what keeps them from making progress. Read
    through ``App.probe_cache``: a stalled Redis raises ``CacheUnavailable`` within a second."""
    try:
        beats = app.probe_cache().heartbeats(f"{app.settings.app_id}:")
    except CacheUnavailable as exc:
        raise CacheUnavailable(f"worker heartbeats unreadable: {exc}") from None
    s = app.settings
    problems = assess(beats, time.time(), s.worker_stall_seconds, s.worker_heartbeat_ttl_seconds)
    return WorkerCheck(beats, problems)
