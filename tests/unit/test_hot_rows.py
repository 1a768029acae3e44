"""The merging coordinator (stockctl.core.hot_rows) with a fake clock and sleep."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Sequence
from typing import Any

import pytest

from stockctl.core.hot_rows import HotRows


class Recorder:
    """A ``run`` that records its merges; the first call can be held open."""

    def __init__(self, hold_first: bool = False, fail: bool = False) -> None:
        self.calls: list[tuple[Hashable, list[Any]]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.hold_first = hold_first
        self.fail = fail

    def __call__(self, key: Hashable, items: list[Any]) -> Sequence[Any]:
        self.calls.append((key, list(items)))
        self.entered.set()
        if self.hold_first and len(self.calls) == 1:
            assert self.release.wait(10)
        if self.fail and len(self.calls) > 1:
            raise RuntimeError("statement failed")
        return [ValueError(f"no {i}") if i == "bad" else f"done {i}" for i in items]


def queued(hr: HotRows[Any, Any], key: Hashable, n: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = hr.queued(key)
        if waiting is not None and waiting >= n:
            return
        time.sleep(0.001)
    raise AssertionError(f"{n} requests never queued")


def submit_all(hr: HotRows[Any, Any], key: Hashable, items: list[Any]) -> dict[Any, Any]:
    """Submit ``items`` one thread each, in this order (each queued before the next)."""
    out: dict[Any, Any] = {}
    threads = []
    for n, item in enumerate(items, start=1):

        def go(item: Any = item) -> None:
            try:
                out[item] = hr.submit(key, item)
            except Exception as exc:
                out[item] = exc

        t = threading.Thread(target=go)
        t.start()
        threads.append(t)
        queued(hr, key, n)
    return {"threads": threads, "out": out}


def test_a_lone_request_runs_at_once_and_never_sleeps() -> None:
    run, sleeps = Recorder(), []
    hr = HotRows(run, window=0.002, max_merge=10, sleep=sleeps.append)
    assert hr.submit("row", "a") == "done a"
    assert run.calls == [("row", ["a"])] and sleeps == []
    assert hr.queued("row") is None  # the key is idle again


def test_requests_queued_behind_one_in_flight_run_as_one_merge_in_arrival_order() -> None:
    run = Recorder(hold_first=True)
    now = [100.0]
    sleeps: list[float] = []
    hr = HotRows(run, window=0.002, max_merge=10, clock=lambda: now[0], sleep=sleeps.append)
    first = threading.Thread(target=hr.submit, args=("row", "a"))
    first.start()
    assert run.entered.wait(10)
    waiting = submit_all(hr, "row", ["b", "c", "d"])
    run.release.set()
    for t in [first, *waiting["threads"]]:
        t.join(10)
    assert run.calls == [("row", ["a"]), ("row", ["b", "c", "d"])]
    assert waiting["out"] == {"b": "done b", "c": "done c", "d": "done d"}
    assert sleeps == [pytest.approx(0.002)]  # the leader waited out its window (clock stood)
    assert hr.stats.merges == 2 and hr.stats.requests == 4 and hr.stats.largest == 3


def test_no_window_wait_once_it_has_passed_or_the_merge_is_full() -> None:
    run = Recorder(hold_first=True)
    now = [100.0]
    sleeps: list[float] = []
    hr = HotRows(run, window=0.002, max_merge=2, clock=lambda: now[0], sleep=sleeps.append)
    first = threading.Thread(target=hr.submit, args=("row", "a"))
    first.start()
    assert run.entered.wait(10)
    waiting = submit_all(hr, "row", ["b", "c", "d"])
    now[0] += 0.001  # b's window has 1 ms left, but b's merge is already full (b, c)
    run.release.set()
    for t in [first, *waiting["threads"]]:
        t.join(10)
    assert run.calls == [("row", ["a"]), ("row", ["b", "c"]), ("row", ["d"])]
    assert sleeps == [pytest.approx(0.001)]  # only d, alone in its merge, waited what was left


def test_each_request_gets_its_own_outcome_and_a_failed_merge_fails_all_of_it() -> None:
    run = Recorder(hold_first=True, fail=True)
    hr = HotRows(run, window=0, max_merge=10)
    first: dict[str, Any] = {}

    def lone() -> None:
        try:
            first["a"] = hr.submit("row", "bad")
        except ValueError as exc:
            first["error"] = str(exc)

    t0 = threading.Thread(target=lone)
    t0.start()
    assert run.entered.wait(10)
    waiting = submit_all(hr, "row", ["b", "c"])
    run.release.set()
    for t in [t0, *waiting["threads"]]:
        t.join(10)
    assert first == {"error": "no bad"}  # its own outcome, an exception, raised in its thread
    assert [str(e) for e in waiting["out"].values()] == ["statement failed"] * 2
    assert hr.queued("row") is None


def test_keys_do_not_wait_for_each_other() -> None:
    run = Recorder(hold_first=True)
    hr = HotRows(run, window=0, max_merge=10)
    first = threading.Thread(target=hr.submit, args=("row-1", "a"))
    first.start()
    assert run.entered.wait(10)
    assert hr.submit("row-2", "b") == "done b"  # row-1's merge is still in flight
    run.release.set()
    first.join(10)


def test_listener_sees_merge_sizes_and_waits() -> None:
    seen: list[tuple[int, list[float]]] = []
    hr = HotRows(Recorder(), window=0, max_merge=10, clock=lambda: 5.0)
    hr.listener = lambda size, waits: seen.append((size, list(waits)))
    hr.submit("row", "a")
    assert seen == [(1, [0.0])]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        HotRows(Recorder(), window=-1, max_merge=10)
    with pytest.raises(ValueError):
        HotRows(Recorder(), window=0, max_merge=0)
