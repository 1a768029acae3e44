"""What the runbook checks read and what they say: the ``Probe`` of read-only facts, the
thresholds, a ``Check`` result and the ``Runbook`` that makes them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from stockctl.core.heartbeat import Heartbeat


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    runbook: str
    name: str
    status: Status
    value: str
    threshold: str = ""
    remedy: str = ""


@dataclass(frozen=True)
class Thresholds:
    lag_warn: int = 1_000
    lag_fail: int = 10_000
    backlog_age_warn_s: float = 5.0
    backlog_age_fail_s: float = 60.0
    batch_warn_s: float = 0.5
    batch_fail_s: float = 1.0
    redis_ping_warn_ms: float = 5.0
    redis_ping_fail_ms: float = 50.0
    redis_memory_warn: float = 0.8
    redis_memory_fail: float = 0.95
    long_query_s: float = 1.0
    hit_rate_warn: float = 0.9
    hit_rate_fail: float = 0.5
    uncached_warn: float = 0.1
    ttl_warn_s: int = 60
    pool_warn: float = 0.8
    row_lock_waits_warn: int = 8


class Probe(Protocol):
    """Read-only facts the checks need; any method may raise ``StockctlError``."""

    thresholds: Thresholds
    uses_redis: bool
    worker_count: int
    queue_capacity: int
    stream_maxlen: int
    dedupe_markers: str
    reserve_merging: str  # how hot-row reserves run here: "on (...)", "off (...)"

    def outbox_backlog(self) -> tuple[int, float]: ...
    def topic_lag(self) -> list[dict[str, Any]]: ...
    def dead_letters(self) -> int: ...
    def heartbeats(self) -> dict[str, Heartbeat]: ...
    def db_vs_cache(self, product_id: str) -> list[dict[str, Any]]: ...
    def last_event(self, product_id: str) -> dict[str, Any] | None: ...
    def event_in_stream(self, product_id: str, event_id: str) -> bool: ...
    def event_processed(self, event_id: str) -> bool:
        """Applied to the cache: a stock event's row holds its version or a newer one there
        (stock events get no marker by default), any other event has its marker."""
        ...

    def redis_ping_ms(self) -> float: ...
    def redis_info(self) -> dict[str, Any]: ...
    def redis_topology(self) -> str: ...
    def db_activity(self) -> dict[str, Any]: ...
    def hit_rate(self) -> tuple[float | None, int]: ...
    def ttl_sample(self) -> list[int]: ...
    def uncached_fraction(self) -> tuple[float, int]: ...
    def seconds_since_warm(self) -> float | None: ...
    def reserved_drift(self) -> list[str]: ...
    def overdue_reservations(self) -> int: ...
    def cache_drift_sample(self) -> list[str]: ...


@dataclass
class Runbook:
    name: str
    checks: list[Callable[[Probe, Runbook], Check | list[Check]]] = field(default_factory=list)
    product_id: str | None = None

    def check(
        self, name: str, status: Status, value: Any, threshold: str = "", remedy: str = ""
    ) -> Check:
        return Check(
            self.name,
            name,
            status,
            str(value),
            threshold,
            remedy if status is not Status.OK else "",
        )


def level(value: float, warn: float, fail: float, higher_is_worse: bool = True) -> Status:
    if higher_is_worse:
        return Status.FAIL if value >= fail else Status.WARN if value >= warn else Status.OK
    return Status.FAIL if value <= fail else Status.WARN if value <= warn else Status.OK
