"""The seed's troubleshooting runbooks as checks: each measures one thing, compares it with a
threshold and says what to do. A dependency that cannot be reached is a failed check, never a
crash.

The checks read through a ``Probe`` (below); ``stockctl.ops.diagnostics`` wires it to the real
database, cache and streams.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from stockctl.errors import StockctlError


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
    def heartbeats(self) -> dict[str, dict[str, Any]]: ...
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


def _level(value: float, warn: float, fail: float, higher_is_worse: bool = True) -> Status:
    if higher_is_worse:
        return Status.FAIL if value >= fail else Status.WARN if value >= warn else Status.OK
    return Status.FAIL if value <= fail else Status.WARN if value <= warn else Status.OK


# -- checks ---------------------------------------------------------------------------------


def backlog(p: Probe, rb: Runbook) -> Check:
    count, age = p.outbox_backlog()
    t = p.thresholds
    status = _level(age, t.backlog_age_warn_s, t.backlog_age_fail_s) if count else Status.OK
    remedy = (
        "start the relay: stockctl worker run --only relay"
        if p.uses_redis  # embedded: the processor job reads the outbox itself (no relay)
        else "start the worker (it reads the outbox): stockctl worker run, or stockctl up"
    )
    return rb.check(
        "outbox backlog",
        status,
        f"{count} rows, oldest {age:.1f} s",
        f"warn {t.backlog_age_warn_s:g} s, fail {t.backlog_age_fail_s:g} s",
        remedy,
    )


def group_lag(p: Probe, rb: Runbook) -> list[Check]:
    if not p.uses_redis:
        return [rb.check("consumer lag", Status.OK, "embedded: the outbox backlog is the lag")]
    t = p.thresholds
    out = []
    for topic in p.topic_lag():
        if topic.get("lag") is None and topic.get("length"):
            out.append(
                rb.check(
                    f"group on {topic['topic']}",
                    Status.FAIL,
                    f"{topic['length']} entries and no consumer group reading them",
                    "a group",
                    "start a worker (it creates the group at 0): stockctl worker run",
                )
            )
            continue
        lag = int(topic.get("lag") or 0) + int(topic.get("pending") or 0)
        if lag == 0 and not topic.get("length"):
            continue
        status = _level(lag, t.lag_warn, t.lag_fail)
        idle = topic.get("consumers") or {}
        out.append(
            rb.check(
                f"lag {topic['topic']}",
                status,
                f"{topic.get('lag')} undelivered, {topic.get('pending')} pending, "
                f"{len(idle)} consumer(s)",
                f"warn {t.lag_warn}, fail {t.lag_fail}",
                "add workers: stockctl worker run --only processor (processes share the group)",
            )
        )
    return out or [rb.check("consumer lag", Status.OK, "0 on every topic")]


def heartbeat(p: Probe, rb: Runbook) -> Check:
    beats = p.heartbeats()
    fresh = len(beats)
    status = Status.OK if fresh else Status.FAIL
    return rb.check(
        "worker heartbeat",
        status,
        f"{fresh} live worker(s)",
        "at least 1",
        "start a worker: stockctl worker run",
    )


def dead_letters(p: Probe, rb: Runbook) -> Check:
    if not p.uses_redis:
        return rb.check("dead letters", Status.OK, "embedded: none kept")
    n = p.dead_letters()
    return rb.check(
        "dead letters",
        Status.WARN if n else Status.OK,
        n,
        "0",
        "inspect: stockctl events dlq list; then replay or drop each",
    )


def product_values(p: Probe, rb: Runbook) -> list[Check]:
    assert rb.product_id is not None
    out = []
    for row in p.db_vs_cache(rb.product_id):
        same = row["cache"] == row["db"]
        out.append(
            rb.check(
                f"{rb.product_id}@{row['warehouse_id']}",
                Status.OK if same else Status.FAIL,
                f"database {row['db']}, cache {row['cache']}",
                "equal",
                f"repair: stockctl cache verify --products {rb.product_id} --repair",
            )
        )
    return out or [
        rb.check(
            f"{rb.product_id} rows",
            Status.FAIL,
            "no inventory rows",
            remedy=f"check the id: stockctl stock show {rb.product_id}",
        )
    ]


def product_event(p: Probe, rb: Runbook) -> list[Check]:
    assert rb.product_id is not None
    last = p.last_event(rb.product_id)
    if last is None:
        return [
            rb.check(
                "last event",
                Status.WARN,
                "no event in the outbox for this product",
                remedy="a change that committed always writes one: check the writer",
            )
        ]
    out = [
        rb.check(
            "last event in outbox",
            Status.OK if last["published"] else Status.WARN,
            f"{last['type']} {last['id']} ({'published' if last['published'] else 'unpublished'})",
            remedy="start the relay: stockctl worker run --only relay",
        )
    ]
    if p.uses_redis and last["published"]:
        seen = p.event_in_stream(rb.product_id, last["id"])
        out.append(
            rb.check(
                "last event in stream",
                Status.OK if seen else Status.WARN,
                "found" if seen else "not among the stream's recent entries",
                remedy="stockctl events tail to watch; stream may be trimmed",
            )
        )
    processed = p.event_processed(last["id"])
    out.append(
        rb.check(
            "event applied",
            Status.OK if processed else Status.FAIL,
            "yes" if processed else "no",
            remedy="the processor has not applied it: stockctl worker run",
        )
    )
    return out


def processing_time(p: Probe, rb: Runbook) -> Check:
    t = p.thresholds
    times = [float(b.get("last_batch_seconds") or 0) for b in p.heartbeats().values()]
    worst = max(times, default=0.0)
    return rb.check(
        "batch processing time",
        _level(worst, t.batch_warn_s, t.batch_fail_s),
        f"{worst * 1000:.1f} ms (slowest worker's last batch)",
        f"warn {t.batch_warn_s:g} s, fail {t.batch_fail_s:g} s",
        "check Redis latency and database load below; lower --batch-size",
    )


def queue_fill(p: Probe, rb: Runbook) -> Check:
    pending = sum(int(x.get("pending") or 0) for x in p.topic_lag()) if p.uses_redis else 0
    cap = max(p.queue_capacity, 1)
    status = _level(pending / cap, 0.8, 1.0)
    return rb.check(
        "in-flight entries vs queue",
        status,
        f"{pending} of {cap}",
        "warn 80%, fail 100%",
        "add workers or raise worker_queue_size",
    )


def database(p: Probe, rb: Runbook) -> list[Check]:
    t = p.thresholds
    act = p.db_activity()
    out = [
        rb.check(
            "database connections",
            _level(act["used"] / max(act["max"], 1), t.pool_warn, 0.98),
            f"{act['used']} of {act['max']}",
            f"warn {t.pool_warn:.0%}",
            "raise max_connections or db_pool_max_open; look for leaks",
        )
    ]
    if "long_queries" in act:
        n = act["long_queries"]
        out.append(
            rb.check(
                f"queries running > {t.long_query_s:g} s",
                Status.WARN if n else Status.OK,
                n,
                "0",
                "inspect pg_stat_activity; check indexes and locks",
            )
        )
    return out


def reserve_merging(p: Probe, rb: Runbook) -> Check:
    """Merged reservations of hot rows, and sessions queued on a row lock (a hot row's sign)."""
    t = p.thresholds
    waits = p.db_activity().get("row_lock_waits")
    shown = p.reserve_merging
    if waits is not None:
        shown += f"; {waits} database sessions waiting on a row lock"
    off = not p.reserve_merging.startswith("on")
    hot = waits is not None and waits >= t.row_lock_waits_warn
    return rb.check(
        "reserve merging",
        Status.WARN if hot and off else Status.OK,
        shown,
        f"warn {t.row_lock_waits_warn} waiting while merging is off",
        "hot rows: set reserve_merge: true (merges concurrent reserves of one row)",
    )


def redis_latency(p: Probe, rb: Runbook) -> list[Check]:
    if not p.uses_redis:
        return [rb.check("redis", Status.OK, "not configured (embedded default)")]
    t = p.thresholds
    out = [rb.check("redis topology", Status.OK, p.redis_topology())]
    ms = p.redis_ping_ms()
    info = p.redis_info()
    used, cap = int(info.get("used_memory") or 0), int(info.get("maxmemory") or 0)
    out += [
        rb.check(
            "redis ping",
            _level(ms, t.redis_ping_warn_ms, t.redis_ping_fail_ms),
            f"{ms:.2f} ms",
            f"warn {t.redis_ping_warn_ms:g} ms",
            "check Redis CPU (slowlog) and the network",
        )
    ]
    if cap:
        out.append(
            rb.check(
                "redis memory",
                _level(used / cap, t.redis_memory_warn, t.redis_memory_fail),
                f"{used / cap:.0%} of maxmemory",
                f"warn {t.redis_memory_warn:.0%}",
                "raise maxmemory or lower cache_ttl_seconds",
            )
        )
    else:
        out.append(rb.check("redis memory", Status.OK, f"{used:,} bytes (no maxmemory)"))
    return out


def hit_rate(p: Probe, rb: Runbook) -> list[Check]:
    t = p.thresholds
    rate, reads = p.hit_rate()
    out = []
    if rate is None:
        out.append(rb.check("hit rate", Status.OK, "no reads counted yet"))
    else:
        out.append(
            rb.check(
                "hit rate",
                _level(rate, t.hit_rate_warn, t.hit_rate_fail, higher_is_worse=False),
                f"{rate:.1%} of {reads:,} reads",
                f"warn < {t.hit_rate_warn:.0%}",
                "warm it: stockctl warm-cache; raise cache_ttl_seconds",
            )
        )
    if p.uses_redis:
        info = p.redis_info()
        hits, misses = int(info.get("keyspace_hits") or 0), int(info.get("keyspace_misses") or 0)
        if hits + misses:
            r = hits / (hits + misses)
            out.append(
                rb.check(
                    "redis keyspace hit rate",
                    _level(r, t.hit_rate_warn, t.hit_rate_fail, False),
                    f"{r:.1%}",
                    f"warn < {t.hit_rate_warn:.0%}",
                    "stockctl warm-cache",
                )
            )
        evicted = int(info.get("evicted_keys") or 0)
        out.append(
            rb.check(
                "evicted keys",
                Status.WARN if evicted else Status.OK,
                evicted,
                "0",
                "Redis is evicting: raise maxmemory",
            )
        )
    return out


def ttls(p: Probe, rb: Runbook) -> Check:
    t = p.thresholds
    sample = p.ttl_sample()
    if not sample:
        return rb.check(
            "stock key TTLs", Status.WARN, "no stock keys cached", remedy="stockctl warm-cache"
        )
    short = sum(1 for s in sample if 0 <= s < t.ttl_warn_s)
    frac = short / len(sample)
    return rb.check(
        "stock key TTLs",
        Status.WARN if frac > 0.5 else Status.OK,
        f"{frac:.0%} of {len(sample)} sampled keys expire within {t.ttl_warn_s} s "
        f"(min {min(sample)} s)",
        "most keys longer",
        "raise cache_ttl_seconds (0 = no expiry); keep the sync job running",
    )


def uncached(p: Probe, rb: Runbook) -> list[Check]:
    t = p.thresholds
    frac, sampled = p.uncached_fraction()
    since = p.seconds_since_warm()
    return [
        rb.check(
            "products with no cache entry",
            _level(frac, t.uncached_warn, 0.5),
            f"{frac:.0%} of {sampled} sampled",
            f"warn {t.uncached_warn:.0%}",
            "stockctl warm-cache",
        ),
        rb.check(
            "last warm",
            Status.OK if since is not None else Status.WARN,
            "never" if since is None else f"{since / 60:.0f} min ago",
            remedy="stockctl warm-cache (or set warm_on_start)",
        ),
    ]


def stream_lengths(p: Probe, rb: Runbook) -> list[Check]:
    if not p.uses_redis:
        return [rb.check("streams", Status.OK, "embedded: the outbox is the log")]
    out = []
    for topic in p.topic_lag():
        length = int(topic.get("length") or 0)
        if p.stream_maxlen:
            status = _level(length / p.stream_maxlen, 0.9, 1.0)
            out.append(
                rb.check(
                    f"length {topic['topic']}",
                    status,
                    f"{length} of MAXLEN {p.stream_maxlen}",
                    "warn 90%",
                    "entries beyond MAXLEN are trimmed unread: add workers",
                )
            )
        for consumer, idle_ms in (topic.get("consumers") or {}).items():
            if idle_ms > 60_000 and topic.get("pending"):
                out.append(
                    rb.check(
                        f"consumer {consumer}",
                        Status.WARN,
                        f"idle {idle_ms / 1000:.0f} s with entries pending",
                        remedy="a live worker reclaims them (XAUTOCLAIM)",
                    )
                )
    return out or [rb.check("streams", Status.OK, "no MAXLEN set; nothing trimmed")]


def workers_alive(p: Probe, rb: Runbook) -> Check:
    alive = len(p.heartbeats())
    return rb.check(
        "workers alive",
        Status.OK if alive else Status.FAIL,
        alive,
        "at least 1",
        "stockctl worker run",
    )


def stream_overflow(p: Probe, rb: Runbook) -> Check:
    """Fail when a stream is at MAXLEN and its group still lags (unread entries get trimmed)."""
    if not p.uses_redis or not p.stream_maxlen:
        return rb.check("overflow", Status.OK, "no MAXLEN trimming configured")
    full = [
        t["topic"]
        for t in p.topic_lag()
        if int(t.get("length") or 0) >= p.stream_maxlen and (t.get("lag") or 0)
    ]
    return rb.check(
        "overflow",
        Status.FAIL if full else Status.OK,
        ", ".join(full) or "none",
        "no stream full while lagging",
        "add workers now; raise stream_maxlen",
    )


def reserved(p: Probe, rb: Runbook) -> Check:
    drift = p.reserved_drift()
    return rb.check(
        "reserved counters vs holds",
        Status.FAIL if drift else Status.OK,
        ", ".join(drift[:5]) + (" ..." if len(drift) > 5 else "") or "consistent",
        "0 rows",
        "stockctl stock verify --repair",
    )


def overdue(p: Probe, rb: Runbook) -> Check:
    n = p.overdue_reservations()
    return rb.check(
        "expired but still ACTIVE",
        Status.WARN if n else Status.OK,
        n,
        "0",
        "run the sweeper: stockctl reservations expire (or worker --only expiry)",
    )


def cache_sample(p: Probe, rb: Runbook) -> Check:
    drift = p.cache_drift_sample()
    return rb.check(
        "cache vs database (sample)",
        Status.FAIL if drift else Status.OK,
        ", ".join(drift[:5]) + (" ..." if len(drift) > 5 else "") or "no drift",
        "0",
        "stockctl cache verify --all --repair",
    )


def dedupe_mode(p: Probe, rb: Runbook) -> Check:
    """Which events get a catalog:event:processed:{id} marker (informational)."""
    if p.dedupe_markers == "all":
        shown = "every event gets a 24 h marker (event_dedupe_markers: all, the seed's way)"
    else:
        shown = (
            "markers only for events without a row version; stock events are de-duplicated "
            "by their version (event_dedupe_markers: unversioned)"
        )
    return rb.check("event de-duplication", Status.OK, shown)


RUNBOOKS: dict[str, list[Callable[[Probe, Runbook], Check | list[Check]]]] = {
    "stock-not-updating": [backlog, group_lag, heartbeat, dead_letters, dedupe_mode],
    "slow": [processing_time, queue_fill, database, reserve_merging, redis_latency],
    "cache-misses": [hit_rate, ttls, uncached],
    "queue-overflow": [stream_lengths, stream_overflow, queue_fill, dead_letters, workers_alive],
    "consistency": [reserved, overdue, cache_sample],
}


def run(probe: Probe, names: Sequence[str], product_id: str | None = None) -> list[Check]:
    """Run the runbooks; a check whose dependency fails becomes a failed check."""
    results: list[Check] = []
    for name in names:
        rb = Runbook(name, list(RUNBOOKS[name]), product_id)
        if name == "stock-not-updating" and product_id is not None:
            rb.checks = [product_values, product_event, *rb.checks]
        for check in rb.checks:
            results += _safe(check, probe, rb)
    return results


def _safe(
    check: Callable[[Probe, Runbook], Check | list[Check]], probe: Probe, rb: Runbook
) -> list[Check]:
    label = check.__name__.replace("_", " ")
    try:
        found = check(probe, rb)
    except StockctlError as exc:
        return [
            rb.check(
                label,
                Status.FAIL,
                f"unreachable: {exc}",
                remedy="stockctl health: bring the dependency back",
            )
        ]
    except Exception as exc:  # a broken check must not hide the others
        return [rb.check(label, Status.FAIL, f"check error {type(exc).__name__}: {exc}")]
    return found if isinstance(found, list) else [found]


def exit_code(checks: Sequence[Check]) -> int:
    if any(c.status is Status.FAIL for c in checks):
        return 2
    return 1 if any(c.status is Status.WARN for c in checks) else 0
