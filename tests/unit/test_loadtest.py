"""The load generator's own logic, without timing: parsing, the open-loop schedule, the mix,
percentile maths, the reservation pool, outcome labels, the report and the invariant checks.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from typing import Any

import pytest

from stockctl.core.model import Inventory
from stockctl.core.ports import ReservedDrift
from stockctl.core.projection import CacheKeys, ProductStock, RowState, product_values
from stockctl.errors import (
    CacheUnavailable,
    InsufficientStock,
    InvalidInput,
    InvalidTransition,
    ReservationNotFound,
)
from stockctl.ops import loadtest as lt

# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("100/s", 100.0),
        ("1000/s", 1000.0),
        ("2.5/s", 2.5),
        ("100", 100.0),
        (" 50 / s ", 50.0),
        ("100000/s", 100_000.0),
    ],
)
def test_parse_rate(text: str, rate: float) -> None:
    assert lt.parse_rate(text) == rate


@pytest.mark.parametrize(
    "text", ["", "0/s", "0", "-5/s", "abc", "100/m", "100 per s", "100001/s", "1e3/s", "/s"]
)
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(InvalidInput, match="rate"):
        lt.parse_rate(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("90", 90.0),
        ("10m", 600.0),
        ("1.5m", 90.0),
        ("1h", 3600.0),
        (" 4s ", 4.0),
        ("168h", 7 * 86400.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert lt.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "0", "-1s", "1d", "10 minutes", "s", "169h", "1x"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(InvalidInput, match="duration"):
        lt.parse_duration(text)


def test_parse_mix_normalises_the_weights() -> None:
    mix = lt.parse_mix("reserve=50,confirm=30,release=15,adjust=5")
    assert mix == pytest.approx({"reserve": 0.5, "confirm": 0.3, "release": 0.15, "adjust": 0.05})
    assert list(mix) == ["reserve", "confirm", "release", "adjust"]
    assert lt.parse_mix(" reserve = 1 ") == {"reserve": 1.0}
    assert lt.parse_mix("reserve=3,adjust=1,confirm=0") == pytest.approx(
        {"reserve": 0.75, "adjust": 0.25, "confirm": 0.0}
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("buy=10", "unknown operation"),
        ("reserve=10,fly=1", "unknown operation"),
        ("reserve=ten", "not a number"),
        ("reserve", "not a number"),
        ("reserve=-1,confirm=2", ">= 0"),
        ("reserve=1,reserve=2", "given once"),
        ("reserve=0,confirm=0", "add up to 0"),
        ("", "unknown operation"),
    ],
)
def test_parse_mix_refuses(text: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        lt.parse_mix(text)


# -- the open-loop schedule -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "duration", "count"),
    [
        (10, 2, 20),
        (100, 30, 3000),
        (3, 1.5, 4),
        (1000, 0.0005, 0),
        (0.5, 10, 5),
        (0.57, 100, 57),
        (100, 0.29, 29),
        (1.1, 10, 11),
    ],
)
def test_schedule_sends_rate_times_duration_operations(
    rate: float, duration: float, count: int
) -> None:
    assert len(list(lt.schedule(rate, duration))) == count


def test_schedule_is_evenly_spaced_from_zero_and_ends_before_the_duration() -> None:
    due = list(lt.schedule(50, 4))
    assert due[0] == 0.0
    gaps = [b - a for a, b in zip(due, due[1:], strict=False)]
    assert gaps == pytest.approx([0.02] * (len(due) - 1))
    assert due == sorted(due) and due[-1] < 4


# -- the mix --------------------------------------------------------------------------------


def test_choose_follows_the_mix_over_many_draws() -> None:
    mix = lt.parse_mix("reserve=50,confirm=30,release=15,adjust=5")
    rng = random.Random(7)
    draws = 100_000
    seen = Counter(lt.choose(mix, rng) for _ in range(draws))
    assert set(seen) == set(mix)
    for name, weight in mix.items():
        assert seen[name] / draws == pytest.approx(weight, abs=0.01), (name, seen)


def test_choose_never_picks_a_zero_weight_and_is_reproducible() -> None:
    mix = lt.parse_mix("reserve=1,confirm=0,adjust=1")
    rng_a, rng_b = random.Random(42), random.Random(42)
    a = [lt.choose(mix, rng_a) for _ in range(5000)]
    b = [lt.choose(mix, rng_b) for _ in range(5000)]
    assert a == b
    assert "confirm" not in a
    assert Counter(a)["reserve"] / 5000 == pytest.approx(0.5, abs=0.03)


class _Roll(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def test_choose_falls_back_to_the_last_operation_on_rounding() -> None:
    mix = {"reserve": 0.3, "confirm": 0.3, "adjust": 0.3}  # sums below 1: rounding slack
    assert lt.choose(mix, _Roll(0.0)) == "reserve"
    assert lt.choose(mix, _Roll(0.45)) == "confirm"
    assert lt.choose(mix, _Roll(0.95)) == "adjust"


# -- percentiles ----------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert lt.percentile(values, 50) == 50
    assert lt.percentile(values, 95) == 95
    assert lt.percentile(values, 99) == 99
    assert lt.percentile(values, 100) == 100
    assert lt.percentile(values, 0) == 1
    assert lt.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2
    assert lt.percentile([1.0, 2.0, 3.0, 4.0], 51) == 3
    assert lt.percentile([1.0, 2.0, 3.0, 4.0], 75) == 3
    assert lt.percentile([1.0, 2.0, 3.0, 4.0], 76) == 4
    assert lt.percentile([0.25], 99) == 0.25


@pytest.mark.parametrize("n", [1, 7, 10, 100, 300, 1000])
def test_percentile_matches_exact_integer_ranks(n: int) -> None:
    values = [float(v) for v in range(1, n + 1)]
    for q in range(101):
        rank = max(1, -(-q * n // 100))  # ceil(q * n / 100) in integers
        assert lt.percentile(values, q) == rank, (n, q)


def test_percentile_of_nothing_is_zero() -> None:
    assert lt.percentile([], 50) == 0.0
    assert lt.percentile([], 99) == 0.0


# -- which rows ------------------------------------------------------------------------------


def _targets(n: int) -> list[lt.Target]:
    return [lt.Target(f"P{i:04d}", "W1") for i in range(n)]


def test_picker_sends_the_hot_fraction_to_the_hottest_one_percent() -> None:
    targets = _targets(500)
    picker = lt.Picker(targets, 0.8, random.Random(11))
    assert picker.hot == targets[:5]
    picks = [picker.pick() for _ in range(20_000)]
    hot = sum(1 for t in picks if t in picker.hot)
    # 80% go to the hot set, and 1% of the other 20% land there too
    assert hot / len(picks) == pytest.approx(0.8 + 0.2 * 0.01, abs=0.015)
    assert all(t in targets for t in picks)


def test_picker_extremes_and_refusals() -> None:
    targets = _targets(10)
    always_hot = lt.Picker(targets, 1.0, random.Random(1))
    assert always_hot.hot == targets[:1]
    assert {always_hot.pick() for _ in range(100)} == {targets[0]}
    spread = lt.Picker(targets, 0.0, random.Random(1))
    assert len({spread.pick() for _ in range(500)}) == 10
    with pytest.raises(InvalidInput, match="seed first"):
        lt.Picker([], 0.0, random.Random(1))
    for bad in (-0.1, 1.5):
        with pytest.raises(InvalidInput, match="hot-fraction"):
            lt.Picker(targets, bad, random.Random(1))


# -- held reservations ------------------------------------------------------------------------


def test_held_confirms_active_ones_in_order() -> None:
    held = lt.Held()
    assert held.for_confirm() is None and held.for_release() is None
    for rid in ("r1", "r2", "r3"):
        held.add(rid)
    assert held.for_confirm() == "r1"
    assert held.for_confirm() == "r2"


def test_held_releases_confirmed_ones_first_then_active_ones() -> None:
    held = lt.Held()
    held.add("a1")
    held.add("a2")
    held.add("a3")
    rid = held.for_confirm()
    assert rid == "a1"
    held.confirmed(rid)
    assert held.for_release() == "a1", "a confirmed hold is released first"
    assert held.for_release() == "a2"
    assert held.for_confirm() == "a3"
    assert held.for_release() is None, "a popped id is never handed out twice"
    assert held.for_confirm() is None


def test_a_confirmed_hold_is_never_confirmed_again() -> None:
    held = lt.Held()
    held.add("x")
    rid = held.for_confirm()
    assert rid is not None
    held.confirmed(rid)
    assert held.for_confirm() is None
    assert held.for_release() == "x"


# -- one operation ----------------------------------------------------------------------------


class FakeDriver:
    def __init__(self, fail: dict[str, Exception] | None = None) -> None:
        self.fail = fail or {}
        self.calls: list[tuple[str, Any]] = []
        self.n = 0

    def _do(self, op: str, arg: Any) -> None:
        self.calls.append((op, arg))
        if op in self.fail:
            raise self.fail[op]

    def reserve(self, target: lt.Target, order_id: str) -> str:
        self._do("reserve", (target, order_id))
        self.n += 1
        return f"res-{self.n}"

    def confirm(self, reservation_id: str) -> None:
        self._do("confirm", reservation_id)

    def release(self, reservation_id: str) -> None:
        self._do("release", reservation_id)

    def adjust(self, target: lt.Target, delta: int) -> None:
        self._do("adjust", (target, delta))


def _picker() -> lt.Picker:
    return lt.Picker(_targets(3), 0.0, random.Random(5))


def test_execute_runs_the_operations_and_labels_them_ok() -> None:
    driver, picker, held = FakeDriver(), _picker(), lt.Held()
    assert lt.execute("confirm", driver, picker, held) == "skipped"
    assert lt.execute("release", driver, picker, held) == "skipped"
    assert driver.calls == [], "nothing to confirm or release: nothing sent"
    assert lt.execute("reserve", driver, picker, held) == "ok"
    assert lt.execute("reserve", driver, picker, held) == "ok"
    assert lt.execute("confirm", driver, picker, held) == "ok"
    assert lt.execute("release", driver, picker, held) == "ok"
    assert lt.execute("adjust", driver, picker, held) == "ok"
    ops = [c[0] for c in driver.calls]
    assert ops == ["reserve", "reserve", "confirm", "release", "adjust"]
    assert driver.calls[2] == ("confirm", "res-1")
    assert driver.calls[3] == ("release", "res-1"), "the confirmed hold is released"
    target, order_id = driver.calls[0][1]
    assert target in picker.targets and order_id.startswith("lt-")
    assert driver.calls[4][1][1] in (1, -1)


@pytest.mark.parametrize(
    ("op", "exc", "label"),
    [
        ("reserve", InsufficientStock("no stock"), "refused:insufficient-stock"),
        ("confirm", InvalidTransition("released"), "refused:invalid-transition"),
        ("release", ReservationNotFound("gone"), "refused:reservation-not-found"),
        ("adjust", InvalidInput("bad"), "refused:invalid-input"),
        ("reserve", CacheUnavailable("redis down"), "error:cache-unavailable"),
        ("confirm", TimeoutError("slow"), "error:TimeoutError"),
        ("adjust", RuntimeError("bug"), "error:RuntimeError"),
    ],
)
def test_execute_labels_refusals_and_errors(op: str, exc: Exception, label: str) -> None:
    held = lt.Held()
    held.add("r-1")
    held.add("r-2")
    assert lt.execute(op, FakeDriver({op: exc}), _picker(), held) == label


def test_a_failed_reserve_holds_nothing() -> None:
    held = lt.Held()
    driver = FakeDriver({"reserve": InsufficientStock("none")})
    lt.execute("reserve", driver, _picker(), held)
    assert held.for_confirm() is None


def test_a_failed_confirm_does_not_count_the_hold_as_confirmed() -> None:
    held = lt.Held()
    held.add("r-1")
    held.add("r-2")
    lt.execute("confirm", FakeDriver({"confirm": InvalidTransition("x")}), _picker(), held)
    assert held.for_release() == "r-2", "r-1 was neither confirmed nor kept"


# -- the report ------------------------------------------------------------------------------


def _sample(due: float, op: str, ms: float, outcome: str = "ok") -> lt.Sample:
    return lt.Sample(due, op, ms / 1000, outcome)


def test_summary() -> None:
    samples = [_sample(0.1 * i, "reserve", float(i)) for i in range(1, 11)]  # 1..10 ms
    samples += [_sample(0.05, "confirm", 100.0), _sample(0.06, "confirm", 200.0)]
    samples += [_sample(0.07, "reserve", 999.0, "refused:insufficient-stock")]
    samples += [_sample(0.08, "release", 0.0, "skipped")] * 2
    samples += [_sample(0.09, "adjust", 5000.0, "error:TimeoutError")]
    report = lt.Report(samples, duration=2.0, violations=["oversold: P1@W1"])
    s = report.summary()
    assert s["operations"] == 14, "skipped operations were never sent"
    assert s["achieved_rate"] == 7.0
    assert s["outcomes"] == {
        "ok": 12,
        "refused:insufficient-stock": 1,
        "skipped": 2,
        "error:TimeoutError": 1,
    }
    # latency of ok operations only: 1..10, 100, 200 ms
    assert s["latency_ms"] == {"p50": 6.0, "p95": 200.0, "p99": 200.0, "max": 200.0}
    assert s["latency_ms_by_operation"]["reserve"] == {
        "p50": 5.0,
        "p95": 10.0,
        "p99": 10.0,
        "max": 10.0,
    }
    assert s["latency_ms_by_operation"]["confirm"]["p50"] == 100.0
    assert set(s["latency_ms_by_operation"]) == {"reserve", "confirm"}
    assert s["invariant_violations"] == ["oversold: P1@W1"]


def test_summary_of_an_empty_run() -> None:
    s = lt.Report().summary()
    assert s["operations"] == 0 and s["achieved_rate"] == 0.0
    assert s["latency_ms"] == {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    assert s["latency_ms_by_operation"] == {} and s["invariant_violations"] == []


def test_timeline_buckets_by_second_of_due_time() -> None:
    samples = [_sample(0.1, "reserve", 10.0), _sample(0.5, "reserve", 30.0)]
    samples += [_sample(0.9, "reserve", 20.0, "refused:insufficient-stock")]
    samples += [_sample(0.95, "confirm", 0.0, "skipped")]
    samples += [_sample(2.0 + i / 100, "adjust", float(i + 1)) for i in range(100)]
    timeline = lt.Report(samples, duration=3.0).timeline()
    assert [t[0] for t in timeline] == [0, 2], "an empty second has no point"
    second, p50, p99, count = timeline[0]
    assert (second, count) == (0, 3), "refused operations count, skipped ones do not"
    assert (p50, p99) == pytest.approx((20.0, 30.0))
    assert timeline[1][1:] == pytest.approx((50.0, 99.0, 100))


# -- invariants -----------------------------------------------------------------------------


def _row(product: str, warehouse: str, available: int, reserved: int, version: int) -> Inventory:
    return Inventory(product, warehouse, available, reserved, 5, version, None)


class FakeStore:
    def __init__(
        self,
        rows: list[Inventory],
        oversold: list[str] | None = None,
        drift: list[ReservedDrift] | None = None,
    ) -> None:
        self.rows = rows
        self.oversold = oversold or []
        self.drift = drift or []

    def oversold_rows(self, limit: int) -> list[str]:
        return self.oversold[:limit]

    def reserved_drift(self, limit: int) -> list[ReservedDrift]:
        return self.drift[:limit]

    def inventory_for_products(self, product_ids: list[str]) -> dict[str, list[Inventory]]:
        out: dict[str, list[Inventory]] = {}
        for r in self.rows:
            if r.product_id in product_ids:
                out.setdefault(r.product_id, []).append(r)
        return out


class FakeCache:
    """Holds what a faithful cache would hold for ``rows``."""

    def __init__(self, rows: list[Inventory]) -> None:
        self.keys = CacheKeys("t")
        self.products: dict[str, ProductStock] = {}
        self.values: dict[str, str] = {}
        by_product: dict[str, list[RowState]] = {}
        for r in rows:
            by_product.setdefault(r.product_id, []).append(RowState.of(r))
        for p, states in by_product.items():
            stock = ProductStock(p, tuple(states))
            self.products[p] = stock
            self.values.update(product_values(self.keys, stock))

    def get_products(self, product_ids: list[str]) -> dict[str, ProductStock | None]:
        return {p: self.products.get(p) for p in product_ids}

    def get_keys(self, keys: list[str]) -> list[str | None]:
        return [self.values.get(k) for k in keys]


ROWS = [_row("P1", "W1", 10, 2, 3), _row("P1", "W2", 5, 0, 1), _row("P2", "W1", 8, 8, 4)]


def test_invariants_hold_on_a_consistent_system() -> None:
    problems = lt.check_invariants(
        FakeStore(ROWS), FakeCache(ROWS), ["P1", "P2"], lambda: True, 0.0
    )
    assert problems == []


def test_invariants_report_oversell_reserved_drift_and_cache_drift() -> None:
    drift = [ReservedDrift("P1", "W1", 10, 7, 2)]
    store = FakeStore(ROWS, oversold=["P2@W1 available 8 reserved 9"], drift=drift)
    cached = [_row("P1", "W1", 10, 2, 2), ROWS[1]]  # P1@W1 one version behind, P2 missing
    problems = lt.check_invariants(store, FakeCache(cached), ["P1", "P2"], lambda: True, 0.0)
    assert problems == [
        "oversold: P2@W1 available 8 reserved 9",
        "reserved 7 != holds 2 at P1@W1",
        "cache stale for P1: W1 at version 2, database 3",
        "cache missing for P2: no cached rows",
    ]


def test_a_wrong_plain_key_is_cache_drift() -> None:
    cache = FakeCache(ROWS)
    cache.values[cache.keys.available("P1")] = "999"
    problems = lt.check_invariants(FakeStore(ROWS), cache, ["P1", "P2"], lambda: True, 0.0)
    assert len(problems) == 1 and problems[0].startswith("cache wrong for P1:")
    assert "'999'" in problems[0]


def test_invariants_wait_for_the_worker_to_drain() -> None:
    polls = itertools.chain([False, False], itertools.repeat(True))
    problems = lt.check_invariants(
        FakeStore(ROWS), FakeCache(ROWS), ["P1"], lambda: next(polls), 5.0
    )
    assert problems == []
    assert next(polls), "it polled until drained, then judged the cache"


def test_an_undrained_worker_is_a_violation_and_the_cache_is_not_judged() -> None:
    drift = [ReservedDrift("P1", "W1", 10, 7, 2)]
    problems = lt.check_invariants(
        FakeStore(ROWS, drift=drift), FakeCache([]), ["P1", "P2"], lambda: False, 0.0
    )
    assert problems == [
        "reserved 7 != holds 2 at P1@W1",
        "the worker did not drain the events within 0 s",
    ]
