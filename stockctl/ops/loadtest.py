"""``stockctl loadtest``: an open-loop traffic generator and its report.

Open loop: operation *i* is due at ``start + i / rate`` whether or not earlier ones returned,
and its latency is measured from that due time, so a server that falls behind shows it (no
coordinated omission). The pieces that decide what to send and how to summarise are pure and
tested without timing; ``run`` drives them with a thread pool.
"""

from __future__ import annotations

import math
import random
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from stockctl.errors import InvalidInput, StockctlError

if TYPE_CHECKING:
    from stockctl.core.operations import StockOperations

OPERATIONS = ("reserve", "confirm", "release", "adjust")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*s)?\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")


def parse_rate(text: str) -> float:
    m = _RATE.match(text)
    if not m or not 0 < float(m.group(1)) <= 100_000:
        raise InvalidInput(f"malformed rate {text!r}: use e.g. 1000/s (at most 100000)")
    return float(m.group(1))


def parse_duration(text: str) -> float:
    m = _DURATION.match(text)
    if not m:
        raise InvalidInput(f"malformed duration {text!r}: use e.g. 90s, 10m, 1h")
    seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if not 0 < seconds <= 7 * 86400:
        raise InvalidInput("duration must be more than 0 and at most 7 days")
    return seconds


def parse_mix(text: str) -> dict[str, float]:
    """``reserve=50,confirm=30,release=15,adjust=5`` -> weights summing to 1."""
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in OPERATIONS:
            raise InvalidInput(f"unknown operation {name!r} in --mix: {', '.join(OPERATIONS)}")
        try:
            weight = float(value)
        except ValueError:
            raise InvalidInput(f"weight of {name!r} is not a number") from None
        if weight < 0 or name in weights:
            raise InvalidInput(f"weight of {name!r} must be given once and be >= 0")
        weights[name] = weight
    total = sum(weights.values())
    if total <= 0:
        raise InvalidInput("--mix weights add up to 0")
    return {k: v / total for k, v in weights.items()}


def schedule(rate: float, duration: float) -> Iterator[float]:
    """Due times (seconds from start) of an open-loop run at a constant rate."""
    count = int(math.floor(round(rate * duration, 9)))  # 0.57 * 100 is 56.99999999999999
    return (i / rate for i in range(count))


def choose(mix: dict[str, float], rng: random.Random) -> str:
    roll, acc = rng.random(), 0.0
    last = ""
    for name, weight in mix.items():
        acc += weight
        last = name
        if roll < acc:
            return name
    return last


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending list; 0 for an empty one."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values) / 100))  # q / 100 * n: 0.07 * 100 > 7
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class Target:
    product_id: str
    warehouse_id: str


class Driver(Protocol):
    """The operations a load test sends (library or HTTP API)."""

    def reserve(self, target: Target, order_id: str) -> int: ...
    def confirm(self, reservation_id: int) -> None: ...
    def release(self, reservation_id: int) -> None: ...
    def adjust(self, target: Target, delta: int) -> None: ...


@dataclass
class Picker:
    """Which row an operation touches: a hot set gets ``hot_fraction`` of the traffic."""

    targets: list[Target]
    hot_fraction: float
    rng: random.Random
    hot: list[Target] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.targets:
            raise InvalidInput("no inventory rows to load: seed first (stockctl seed)")
        if not 0 <= self.hot_fraction <= 1:
            raise InvalidInput("--hot-fraction must be between 0 and 1")
        self.hot = self.targets[: max(1, len(self.targets) // 100)]

    def pick(self) -> Target:
        pool = self.hot if self.rng.random() < self.hot_fraction else self.targets
        return self.rng.choice(pool)


@dataclass
class Sample:
    due: float  # seconds from start
    op: str
    latency: float
    outcome: str  # ok | refused:<slug> | error:<kind> | skipped


@dataclass
class Report:
    samples: list[Sample] = field(default_factory=list)
    duration: float = 0.0
    violations: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        by_op: dict[str, list[float]] = {}
        for s in self.samples:
            if s.outcome == "ok":
                by_op.setdefault(s.op, []).append(s.latency)
        outcomes = Counter(s.outcome for s in self.samples)
        done = sum(1 for s in self.samples if s.outcome != "skipped")
        all_ok = sorted(x for v in by_op.values() for x in v)
        return {
            "operations": done,
            "achieved_rate": round(done / self.duration, 1) if self.duration else 0.0,
            "outcomes": dict(outcomes),
            "latency_ms": _percentiles(all_ok),
            "latency_ms_by_operation": {k: _percentiles(sorted(v)) for k, v in by_op.items()},
            "invariant_violations": self.violations,
        }

    def timeline(self) -> list[tuple[int, float, float, int]]:
        """Per second of due time: (second, p50 ms, p99 ms, operations)."""
        buckets: dict[int, list[float]] = {}
        for s in self.samples:
            if s.outcome != "skipped":
                buckets.setdefault(int(s.due), []).append(s.latency)
        out = []
        for second in sorted(buckets):
            values = sorted(buckets[second])
            out.append(
                (second, percentile(values, 50) * 1000, percentile(values, 99) * 1000, len(values))
            )
        return out


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    return {f"p{q}": round(percentile(values, q) * 1000, 3) for q in (50, 95, 99)} | {
        "max": round((values[-1] if values else 0.0) * 1000, 3)
    }


class Held:
    """Reservation ids available to confirm (ACTIVE) or release (ACTIVE or CONFIRMED)."""

    def __init__(self) -> None:
        self._active: deque[int] = deque()
        self._confirmed: deque[int] = deque()
        self._lock = threading.Lock()

    def add(self, reservation_id: int) -> None:
        with self._lock:
            self._active.append(reservation_id)

    def for_confirm(self) -> int | None:
        with self._lock:
            return self._active.popleft() if self._active else None

    def confirmed(self, reservation_id: int) -> None:
        with self._lock:
            self._confirmed.append(reservation_id)

    def for_release(self) -> int | None:
        with self._lock:
            if self._confirmed:
                return self._confirmed.popleft()
            return self._active.popleft() if self._active else None


def execute(op: str, driver: Driver, picker: Picker, held: Held) -> str:
    """Run one operation; the outcome label for the report."""
    try:
        if op == "reserve":
            held.add(driver.reserve(picker.pick(), f"lt-{uuid.uuid4().hex[:12]}"))
        elif op == "confirm":
            rid = held.for_confirm()
            if rid is None:
                return "skipped"
            driver.confirm(rid)
            held.confirmed(rid)
        elif op == "release":
            rid = held.for_release()
            if rid is None:
                return "skipped"
            driver.release(rid)
        else:
            driver.adjust(picker.pick(), picker.rng.choice((1, -1)))
    except StockctlError as exc:
        kind = "refused" if exc.exit_code in (1, 2) and exc.http_status < 500 else "error"
        return f"{kind}:{exc.slug}"
    except Exception as exc:  # an unexpected failure is a result of the run, not a crash
        return f"error:{type(exc).__name__}"
    return "ok"


def run(
    driver: Driver,
    picker: Picker,
    mix: dict[str, float],
    rate: float,
    duration: float,
    *,
    concurrency: int = 32,
    on_sample: Callable[[Sample], None] | None = None,
    stop: threading.Event | None = None,
) -> Report:
    """Send the scheduled operations; returns every sample (latency from due time)."""
    report = Report()
    held = Held()
    stop = stop or threading.Event()
    lock = threading.Lock()
    start = time.perf_counter()

    def one(due: float, op: str) -> None:
        outcome = execute(op, driver, picker, held)
        sample = Sample(due, op, time.perf_counter() - start - due, outcome)
        with lock:
            report.samples.append(sample)
        if on_sample is not None:
            on_sample(sample)

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="loadtest") as pool:
        for due in schedule(rate, duration):
            if stop.is_set():
                break
            wait = start + due - time.perf_counter()
            if wait > 0 and stop.wait(wait):
                break
            pool.submit(one, due, choose(mix, picker.rng))
    report.duration = time.perf_counter() - start
    return report


class OpsDriver:
    """The load's four operations over the operations contract: the library on a database,
    or the warehouse client over the HTTP API (adjust then needs an admin token)."""

    def __init__(self, ops: StockOperations) -> None:
        self.ops = ops

    def reserve(self, target: Target, order_id: str) -> int:
        return self.ops.reserve(target.product_id, target.warehouse_id, 1, order_id=order_id).id

    def confirm(self, reservation_id: int) -> None:
        self.ops.confirm(reservation_id)

    def release(self, reservation_id: int) -> None:
        self.ops.release(reservation_id, "loadtest")

    def adjust(self, target: Target, delta: int) -> None:
        self.ops.adjust(target.product_id, target.warehouse_id, delta, reason="loadtest")


def check_invariants(
    store: Any,
    cache: Any,
    products: Sequence[str],
    drained: Callable[[], bool],
    wait_seconds: float = 30.0,
) -> list[str]:
    """No oversell, reserved == sum of holds, and (once the worker drained) cache == database
    for the products the run touched; ``cache`` None: no cache check (no worker to drain)."""
    from stockctl.core import cache as cache_uc

    problems = [f"oversold: {r}" for r in store.oversold_rows(20)]
    problems += [
        f"reserved {d.reserved} != holds {d.expected_reserved} at {d.product_id}@{d.warehouse_id}"
        for d in store.reserved_drift(20)
    ]
    if cache is None:
        return problems
    deadline = time.monotonic() + wait_seconds
    while not drained() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not drained():
        problems.append(f"the worker did not drain the events within {wait_seconds:g} s")
        return problems
    drift = cache_uc.verify(store, cache, cache.keys, list(products))
    problems += [f"cache {d.kind} for {d.product_id}: {d.detail}" for d in drift[:20]]
    return problems
