"""The diagnose runbooks over a fake ``Probe``: thresholds give ok / warn / fail, a dependency
that raises becomes a failed check (never a crash), and the exit code follows the worst status.
"""

from __future__ import annotations

from typing import Any

import pytest

from stockctl.core import diagnose as dg
from stockctl.core.diagnose.probe import Check, Status, Thresholds
from stockctl.core.heartbeat import Heartbeat
from stockctl.errors import CacheUnavailable


class FakeProbe:
    """Every fact the checks read, healthy by default; ``fail`` makes named methods raise."""

    def __init__(self, **facts: Any) -> None:
        self.thresholds = Thresholds()
        self.uses_redis = True
        self.worker_count = 2
        self.queue_capacity = 1000
        self.stream_maxlen = 0
        self.dedupe_markers = "unversioned"
        self.reserve_merging = "on: concurrent reserves of one row in a process merge"
        self.topology = "standalone: 127.0.0.1:6379 (db 0)"
        self.backlog: tuple[int, float] = (0, 0.0)
        self.lags: list[dict[str, Any]] = [
            {
                "topic": "warehouse.stock.updated",
                "length": 10,
                "pending": 0,
                "lag": 0,
                "consumers": {"w-1": 100},
            },
        ]
        self.dead = 0
        self.beats: dict[str, Heartbeat] = {
            "catalog:w-1": Heartbeat("w-1", 1, "h", 0.0, last_batch_seconds=0.01)
        }
        self.values: list[dict[str, Any]] = [
            {"warehouse_id": "W1", "db": "5", "cache": "5"},
            {"warehouse_id": "W2", "db": "7", "cache": "7"},
        ]
        self.last: dict[str, Any] | None = {
            "id": "ev-1",
            "type": "warehouse.stock.updated",
            "published": True,
        }
        self.in_stream = True
        self.processed = True
        self.ping_ms = 0.5
        self.info: dict[str, Any] = {
            "used_memory": 1_000,
            "maxmemory": 0,
            "keyspace_hits": 99,
            "keyspace_misses": 1,
            "evicted_keys": 0,
        }
        self.activity: dict[str, Any] = {"used": 5, "max": 100, "long_queries": 0}
        self.rate: tuple[float | None, int] = (0.99, 1000)
        self.ttl_values = [300, 280, 250]
        self.uncached: tuple[float, int] = (0.0, 50)
        self.since_warm: float | None = 60.0
        self.drift: list[str] = []
        self.overdue = 0
        self.cache_drift: list[str] = []
        self.fail: dict[str, Exception] = {}
        self.calls: list[str] = []
        for name, value in facts.items():
            assert hasattr(self, name), name
            setattr(self, name, value)

    def _get(self, method: str, value: Any) -> Any:
        self.calls.append(method)
        if method in self.fail:
            raise self.fail[method]
        return value

    def outbox_backlog(self) -> tuple[int, float]:
        return self._get("outbox_backlog", self.backlog)  # type: ignore[no-any-return]

    def topic_lag(self) -> list[dict[str, Any]]:
        return self._get("topic_lag", self.lags)  # type: ignore[no-any-return]

    def dead_letters(self) -> int:
        return self._get("dead_letters", self.dead)  # type: ignore[no-any-return]

    def heartbeats(self) -> dict[str, Heartbeat]:
        return self._get("heartbeats", self.beats)  # type: ignore[no-any-return]

    def db_vs_cache(self, product_id: str) -> list[dict[str, Any]]:
        return self._get("db_vs_cache", self.values)  # type: ignore[no-any-return]

    def last_event(self, product_id: str) -> dict[str, Any] | None:
        return self._get("last_event", self.last)  # type: ignore[no-any-return]

    def event_in_stream(self, product_id: str, event_id: str) -> bool:
        return self._get("event_in_stream", self.in_stream)  # type: ignore[no-any-return]

    def event_processed(self, event_id: str) -> bool:
        return self._get("event_processed", self.processed)  # type: ignore[no-any-return]

    def redis_ping_ms(self) -> float:
        return self._get("redis_ping_ms", self.ping_ms)  # type: ignore[no-any-return]

    def redis_info(self) -> dict[str, Any]:
        return self._get("redis_info", self.info)  # type: ignore[no-any-return]

    def redis_topology(self) -> str:
        return self._get("redis_topology", self.topology)  # type: ignore[no-any-return]

    def db_activity(self) -> dict[str, Any]:
        return self._get("db_activity", self.activity)  # type: ignore[no-any-return]

    def hit_rate(self) -> tuple[float | None, int]:
        return self._get("hit_rate", self.rate)  # type: ignore[no-any-return]

    def ttl_sample(self) -> list[int]:
        return self._get("ttl_sample", self.ttl_values)  # type: ignore[no-any-return]

    def uncached_fraction(self) -> tuple[float, int]:
        return self._get("uncached_fraction", self.uncached)  # type: ignore[no-any-return]

    def seconds_since_warm(self) -> float | None:
        return self._get("seconds_since_warm", self.since_warm)  # type: ignore[no-any-return]

    def reserved_drift(self) -> list[str]:
        return self._get("reserved_drift", self.drift)  # type: ignore[no-any-return]

    def overdue_reservations(self) -> int:
        return self._get("overdue_reservations", self.overdue)  # type: ignore[no-any-return]

    def cache_drift_sample(self) -> list[str]:
        return self._get("cache_drift_sample", self.cache_drift)  # type: ignore[no-any-return]


def _probe(**facts: Any) -> dg.Probe:
    return FakeProbe(**facts)


def by_name(checks: list[Check]) -> dict[str, Check]:
    found: dict[str, Check] = {}
    for c in checks:
        assert c.name not in found, f"two checks named {c.name!r} in one runbook"
        found[c.name] = c
    return found


def one(runbook: str, name: str, probe: dg.Probe, product: str | None = None) -> Check:
    return by_name(dg.run(probe, [runbook], product))[name]


ALL = list(dg.RUNBOOKS)


# -- a healthy system -----------------------------------------------------------------------


def test_a_healthy_system_is_all_ok_and_exits_0() -> None:
    checks = dg.run(_probe(), ALL, "P1")
    assert {c.runbook for c in checks} == set(ALL)
    assert [c for c in checks if c.status is not Status.OK] == []
    assert all(c.remedy == "" for c in checks), "an ok check tells nobody to do anything"
    assert dg.exit_code(checks) == 0


def test_product_checks_run_only_with_a_product() -> None:
    without = {c.name for c in dg.run(_probe(), ["stock-not-updating"])}
    with_product = {c.name for c in dg.run(_probe(), ["stock-not-updating"], "P1")}
    assert "P1@W1" not in without and "event applied" not in without
    assert {
        "P1@W1",
        "P1@W2",
        "last event in outbox",
        "last event in stream",
        "event applied",
    } <= with_product


# -- thresholds -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backlog", "status"),
    [
        ((0, 500.0), Status.OK),
        ((3, 1.0), Status.OK),
        ((3, 5.0), Status.WARN),
        ((3, 59.9), Status.WARN),
        ((3, 60.0), Status.FAIL),
        ((3, 600.0), Status.FAIL),
    ],
)
def test_outbox_backlog_age(backlog: tuple[int, float], status: Status) -> None:
    c = one("stock-not-updating", "outbox backlog", _probe(backlog=backlog))
    assert c.status is status
    assert f"{backlog[0]} rows" in c.value
    if status is not Status.OK:
        assert "stockctl worker run --only relay" in c.remedy


def test_an_embedded_backlog_names_the_worker_not_a_relay() -> None:
    c = one("stock-not-updating", "outbox backlog", _probe(backlog=(5, 120.0), uses_redis=False))
    assert c.status is Status.FAIL
    assert "stockctl worker run" in c.remedy and "--only relay" not in c.remedy


@pytest.mark.parametrize(
    ("lag", "pending", "status"),
    [
        (0, 0, Status.OK),
        (999, 0, Status.OK),
        (600, 400, Status.WARN),
        (1000, 0, Status.WARN),
        (9_999, 0, Status.WARN),
        (5_000, 5_000, Status.FAIL),
        (20_000, 0, Status.FAIL),
    ],
)
def test_consumer_lag_counts_undelivered_and_pending(
    lag: int, pending: int, status: Status
) -> None:
    topic = {
        "topic": "warehouse.stock.updated",
        "length": 50_000,
        "lag": lag,
        "pending": pending,
        "consumers": {"a": 1, "b": 2},
    }
    c = one("stock-not-updating", "lag warehouse.stock.updated", _probe(lags=[topic]))
    assert c.status is status
    assert c.value == f"{lag} undelivered, {pending} pending, 2 consumer(s)"


def test_empty_topics_are_summarised_as_one_ok_check() -> None:
    empty = [{"topic": t, "length": 0, "lag": 0, "pending": 0, "consumers": {}} for t in "ab"]
    checks = dg.run(_probe(lags=empty), ["stock-not-updating"])
    lag = [c for c in checks if "lag" in c.name]
    assert [(c.name, c.status) for c in lag] == [("consumer lag", Status.OK)]


def test_no_heartbeat_fails_and_names_the_worker_command() -> None:
    c = one("stock-not-updating", "worker heartbeat", _probe(beats={}))
    assert c.status is Status.FAIL
    assert c.value == "0 live worker(s)"
    assert "stockctl worker run" in c.remedy
    alive = one("queue-overflow", "workers alive", _probe(beats={}))
    assert alive.status is Status.FAIL and "stockctl worker run" in alive.remedy


def test_dead_letters_warn_with_the_dlq_command() -> None:
    c = one("stock-not-updating", "dead letters", _probe(dead=3))
    assert (c.status, c.value) == (Status.WARN, "3")
    assert "stockctl events dlq list" in c.remedy


def test_product_values_name_the_warehouse_and_both_values() -> None:
    values = [
        {"warehouse_id": "W1", "db": "5", "cache": None},
        {"warehouse_id": "W2", "db": "7", "cache": "99"},
        {"warehouse_id": "W3", "db": "1", "cache": "1"},
    ]
    checks = by_name(dg.run(_probe(values=values), ["stock-not-updating"], "P1"))
    assert checks["P1@W1"].status is Status.FAIL
    assert checks["P1@W1"].value == "database 5, cache None"
    assert checks["P1@W2"].status is Status.FAIL
    assert checks["P1@W2"].value == "database 7, cache 99"
    assert "--products P1 --repair" in checks["P1@W2"].remedy
    assert checks["P1@W3"].status is Status.OK


def test_a_product_without_rows_fails() -> None:
    checks = dg.run(_probe(values=[]), ["stock-not-updating"], "P9")
    c = by_name(checks)["P9 rows"]
    assert c.status is Status.FAIL and "stockctl stock show P9" in c.remedy


def test_unprocessed_last_event_fails_and_unpublished_warns() -> None:
    last = {"id": "ev-9", "type": "warehouse.stock.reserved", "published": False}
    checks = by_name(dg.run(_probe(last=last, processed=False), ["stock-not-updating"], "P1"))
    assert checks["last event in outbox"].status is Status.WARN
    assert "ev-9" in checks["last event in outbox"].value
    assert "last event in stream" not in checks, "an unpublished event is not looked for"
    assert checks["event applied"].status is Status.FAIL
    assert "stockctl worker run" in checks["event applied"].remedy


def test_no_event_for_the_product_warns() -> None:
    checks = by_name(dg.run(_probe(last=None), ["stock-not-updating"], "P1"))
    assert checks["last event"].status is Status.WARN


@pytest.mark.parametrize(
    ("seconds", "status"),
    [
        (0.0, Status.OK),
        (0.49, Status.OK),
        (0.5, Status.WARN),
        (0.99, Status.WARN),
        (1.0, Status.FAIL),
        (3.0, Status.FAIL),
    ],
)
def test_batch_processing_time_of_the_slowest_worker(seconds: float, status: Status) -> None:
    beats = {
        "a": Heartbeat("a", 1, "h", 0.0, last_batch_seconds=0.01),
        "b": Heartbeat("b", 2, "h", 0.0, last_batch_seconds=seconds),
    }
    assert one("slow", "batch processing time", _probe(beats=beats)).status is status


@pytest.mark.parametrize(
    ("pending", "status"),
    [(0, Status.OK), (799, Status.OK), (800, Status.WARN), (1000, Status.FAIL)],
)
def test_in_flight_entries_vs_queue_capacity(pending: int, status: Status) -> None:
    lags = [
        {"topic": "t1", "length": 5000, "lag": 0, "pending": pending // 2, "consumers": {}},
        {
            "topic": "t2",
            "length": 5000,
            "lag": 0,
            "pending": pending - pending // 2,
            "consumers": {},
        },
    ]
    c = one("slow", "in-flight entries vs queue", _probe(lags=lags, queue_capacity=1000))
    assert (c.status, c.value) == (status, f"{pending} of 1000")


@pytest.mark.parametrize(
    ("used", "status"), [(10, Status.OK), (79, Status.OK), (80, Status.WARN), (98, Status.FAIL)]
)
def test_database_connections(used: int, status: Status) -> None:
    activity = {"used": used, "max": 100, "long_queries": 0}
    assert one("slow", "database connections", _probe(activity=activity)).status is status


@pytest.mark.parametrize(
    ("merging", "waits", "status"),
    [
        ("on: merging", 50, Status.OK),
        ("off (reserve_merge: false)", 7, Status.OK),
        ("off (reserve_merge: false)", 8, Status.WARN),
        ("off (reserve_merge: false)", None, Status.OK),  # SQLite: no lock waits to count
    ],
)
def test_reserve_merging_warns_of_a_hot_row_only_while_merging_is_off(
    merging: str, waits: int | None, status: Status
) -> None:
    activity: dict[str, Any] = {"used": 3, "max": 100, "long_queries": 0}
    if waits is not None:
        activity["row_lock_waits"] = waits
    c = one("slow", "reserve merging", _probe(activity=activity, reserve_merging=merging))
    assert c.status is status and c.value.startswith(merging)
    if waits is not None:
        assert f"{waits} database sessions waiting on a row lock" in c.value
    if status is Status.WARN:
        assert "reserve_merge: true" in c.remedy


def test_long_running_queries_warn() -> None:
    activity = {"used": 3, "max": 100, "long_queries": 2}
    c = one("slow", "queries running > 1 s", _probe(activity=activity))
    assert (c.status, c.value) == (Status.WARN, "2")


@pytest.mark.parametrize(
    ("ms", "status"),
    [(0.3, Status.OK), (5.0, Status.WARN), (49.0, Status.WARN), (50.0, Status.FAIL)],
)
def test_redis_ping(ms: float, status: Status) -> None:
    assert one("slow", "redis ping", _probe(ping_ms=ms)).status is status


@pytest.mark.parametrize(
    ("used", "status"), [(500, Status.OK), (800, Status.WARN), (950, Status.FAIL)]
)
def test_redis_memory_vs_maxmemory(used: int, status: Status) -> None:
    info = {"used_memory": used, "maxmemory": 1000}
    assert one("slow", "redis memory", _probe(info=info)).status is status


@pytest.mark.parametrize(
    ("rate", "status"),
    [
        (0.95, Status.OK),
        (0.9, Status.WARN),
        (0.7, Status.WARN),
        (0.5, Status.FAIL),
        (0.1, Status.FAIL),
    ],
)
def test_hit_rate(rate: float, status: Status) -> None:
    c = one("cache-misses", "hit rate", _probe(rate=(rate, 1000)))
    assert c.status is status
    assert "of 1,000 reads" in c.value
    if status is not Status.OK:
        assert "stockctl warm-cache" in c.remedy


def test_no_reads_yet_is_not_a_miss() -> None:
    c = one("cache-misses", "hit rate", _probe(rate=(None, 0)))
    assert c.status is Status.OK


def test_redis_keyspace_hit_rate_and_evictions() -> None:
    info = {"keyspace_hits": 60, "keyspace_misses": 40, "evicted_keys": 7}
    checks = by_name(dg.run(_probe(info=info), ["cache-misses"]))
    assert checks["redis keyspace hit rate"].status is Status.WARN
    assert checks["redis keyspace hit rate"].value == "60.0%"
    assert (checks["evicted keys"].status, checks["evicted keys"].value) == (Status.WARN, "7")


@pytest.mark.parametrize(
    ("ttls", "status"),
    [
        ([300, 300, 10], Status.OK),
        ([1, 0, 300], Status.WARN),
        ([1, 1, 1], Status.WARN),
        ([10**9, 10**9], Status.OK),
        ([], Status.WARN),
    ],
)
def test_stock_key_ttls(ttls: list[int], status: Status) -> None:
    c = one("cache-misses", "stock key TTLs", _probe(ttl_values=ttls))
    assert c.status is status
    if status is Status.WARN:
        assert "cache_ttl_seconds" in c.remedy or "warm-cache" in c.remedy


def test_short_ttls_report_the_fraction_and_minimum() -> None:
    c = one("cache-misses", "stock key TTLs", _probe(ttl_values=[1, 0, 1, 300]))
    assert c.value == "75% of 4 sampled keys expire within 60 s (min 0 s)"


@pytest.mark.parametrize(
    ("fraction", "status"), [(0.0, Status.OK), (0.1, Status.WARN), (0.5, Status.FAIL)]
)
def test_products_with_no_cache_entry(fraction: float, status: Status) -> None:
    c = one("cache-misses", "products with no cache entry", _probe(uncached=(fraction, 200)))
    assert c.status is status


def test_never_warmed_warns() -> None:
    c = one("cache-misses", "last warm", _probe(since_warm=None))
    assert (c.status, c.value) == (Status.WARN, "never")


def test_a_full_stream_that_lags_overflows() -> None:
    lags = [
        {"topic": "full", "length": 120, "lag": 30, "pending": 0, "consumers": {}},
        {"topic": "drained", "length": 120, "lag": 0, "pending": 0, "consumers": {}},
        {"topic": "half", "length": 50, "lag": 50, "pending": 0, "consumers": {}},
    ]
    checks = by_name(dg.run(_probe(lags=lags, stream_maxlen=100), ["queue-overflow"]))
    assert checks["overflow"].status is Status.FAIL
    assert checks["overflow"].value == "full"
    assert checks["length full"].status is Status.FAIL
    assert checks["length full"].value == "120 of MAXLEN 100"
    assert checks["length half"].status is Status.OK
    assert dg.exit_code(list(checks.values())) == 2


def test_without_maxlen_nothing_overflows() -> None:
    lags = [{"topic": "t", "length": 10**6, "lag": 10**6, "pending": 0, "consumers": {}}]
    checks = by_name(dg.run(_probe(lags=lags, stream_maxlen=0), ["queue-overflow"]))
    assert checks["overflow"].status is Status.OK
    assert checks["streams"].status is Status.OK


def test_an_idle_consumer_with_pending_entries_warns() -> None:
    lags = [
        {
            "topic": "t",
            "length": 10,
            "lag": 0,
            "pending": 3,
            "consumers": {"dead-1": 120_000, "live-1": 10},
        }
    ]
    checks = by_name(dg.run(_probe(lags=lags, stream_maxlen=1000), ["queue-overflow"]))
    assert checks["consumer dead-1"].status is Status.WARN
    assert "consumer live-1" not in checks


def test_reserved_drift_fails_and_names_the_rows() -> None:
    drift = [f"P{i}@W1 reserved 9, holds 0" for i in range(7)]
    c = one("consistency", "reserved counters vs holds", _probe(drift=drift))
    assert c.status is Status.FAIL
    assert c.value.startswith("P0@W1 reserved 9, holds 0, P1@W1")
    assert c.value.endswith(" ...") and "P5@W1" not in c.value
    assert "stockctl stock verify --repair" in c.remedy


def test_overdue_reservations_warn_and_cache_drift_fails() -> None:
    checks = by_name(dg.run(_probe(overdue=4, cache_drift=["P1 stale: W1"]), ["consistency"]))
    assert (
        checks["expired but still ACTIVE"].status,
        checks["expired but still ACTIVE"].value,
    ) == (Status.WARN, "4")
    assert checks["cache vs database (sample)"].status is Status.FAIL
    assert checks["cache vs database (sample)"].value == "P1 stale: W1"


# -- the embedded default -------------------------------------------------------------------


def test_embedded_default_never_asks_redis() -> None:
    redis_only = ["topic_lag", "dead_letters", "redis_ping_ms", "redis_info", "event_in_stream"]
    boom = {m: AssertionError(f"{m} asked on the embedded default") for m in redis_only}
    probe = FakeProbe(uses_redis=False, fail=boom, stream_maxlen=10)
    checks = dg.run(probe, ALL, "P1")
    assert dg.exit_code(checks) == 0, [c for c in checks if c.status is not Status.OK]
    assert not set(probe.calls) & set(redis_only)


# -- unreachable dependencies ---------------------------------------------------------------


def test_an_unreachable_cache_is_a_failed_check_not_a_crash() -> None:
    down = CacheUnavailable("redis unavailable at redis://127.0.0.1:1: connection refused")
    probe = FakeProbe(fail={"heartbeats": down})
    checks = dg.run(probe, ALL, "P1")
    failed = [c for c in checks if c.status is Status.FAIL]
    assert failed, "the outage is reported"
    for c in failed:
        assert c.value.startswith("unreachable: redis unavailable"), c
        assert "stockctl health" in c.remedy
    assert {c.runbook for c in failed} == {"stock-not-updating", "slow", "queue-overflow"}
    # the other checks still ran and still report
    assert (
        by_name([c for c in checks if c.runbook == "consistency"])[
            "reserved counters vs holds"
        ].status
        is Status.OK
    )
    assert dg.exit_code(checks) == 2


def test_every_runbook_completes_when_every_redis_read_fails() -> None:
    down = CacheUnavailable("redis unavailable")
    methods = [
        "topic_lag",
        "dead_letters",
        "heartbeats",
        "db_vs_cache",
        "event_in_stream",
        "event_processed",
        "redis_ping_ms",
        "redis_info",
        "redis_topology",
        "hit_rate",
        "ttl_sample",
        "uncached_fraction",
        "seconds_since_warm",
        "cache_drift_sample",
    ]
    checks = dg.run(FakeProbe(fail=dict.fromkeys(methods, down)), ALL, "P1")
    for runbook in ALL:
        mine = [c for c in checks if c.runbook == runbook]
        assert any(c.status is Status.FAIL and "redis unavailable" in c.value for c in mine), (
            runbook
        )
    # database-only checks are unaffected
    assert (
        by_name([c for c in checks if c.runbook == "slow"])["database connections"].status
        is Status.OK
    )
    assert dg.exit_code(checks) == 2


def test_a_broken_check_is_reported_and_the_rest_still_run() -> None:
    probe = FakeProbe(fail={"outbox_backlog": KeyError("oops")})
    checks = dg.run(probe, ["stock-not-updating"])
    first = checks[0]
    assert (first.name, first.status) == ("backlog", Status.FAIL)
    assert first.value.startswith("check error KeyError")
    assert "worker heartbeat" in by_name(checks)


# -- exit codes -----------------------------------------------------------------------------


def _c(status: Status) -> Check:
    return Check("rb", f"c-{status}", status, "v")


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        ([], 0),
        ([Status.OK], 0),
        ([Status.OK, Status.OK], 0),
        ([Status.OK, Status.WARN], 1),
        ([Status.WARN, Status.WARN], 1),
        ([Status.WARN, Status.FAIL], 2),
        ([Status.FAIL, Status.OK], 2),
    ],
)
def test_exit_code_follows_the_worst_status(statuses: list[Status], code: int) -> None:
    assert dg.exit_code([_c(s) for s in statuses]) == code


def test_statuses_render_as_lowercase_words() -> None:
    assert [s.value for s in Status] == ["ok", "warn", "fail"]


def test_diagnose_names_the_redis_topology_and_the_dedupe_mode() -> None:
    topology = "sentinel mymaster: master 10.0.0.7:6379 (db 0)"
    slow = by_name(dg.run(_probe(topology=topology), ["slow"]))
    assert slow["redis topology"].value == topology
    for mode, words in (("unversioned", "by their version"), ("all", "every event")):
        checks = by_name(dg.run(_probe(dedupe_markers=mode), ["stock-not-updating"]))
        assert words in checks["event de-duplication"].value
        assert checks["event de-duplication"].status is Status.OK
