"""Merging concurrent requests for one key (a hot row) into one call, in arrival order.

A request for a key nobody is working on runs at once, alone: a lone request never waits.
Requests arriving while a call for their key is in flight queue up behind it; when it ends, the
first of them leads the next merge: it waits until ``window`` seconds after its own arrival
(so that a burst lands in one merge; no wait if that moment has passed, none either once
``max_merge`` are queued), then takes up to ``max_merge`` queued requests, in arrival order,
runs them as one call and hands every request its own outcome. Then the next queued request
leads, and so on; the last one leaves the key idle.

Nothing here knows what a request is: ``run(key, items)`` returns one outcome per item, each a
value or an exception to raise in that request's caller; if ``run`` itself raises, every
request of the merge raises it. Threads only, no framework; the clock and the sleep are
injectable for tests.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741  (an item)
O = TypeVar("O")  # noqa: E741  (an outcome)

# (merge size, seconds each request of it waited between arrival and the merge's start)
Listener = Callable[[int, Sequence[float]], None]


@dataclass
class _Waiter(Generic[I, O]):
    item: I
    arrived: float
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    outcome: O | None = None
    error: BaseException | None = None

    def result(self) -> O:
        if self.error is not None:
            raise self.error
        return self.outcome  # type: ignore[return-value]


@dataclass
class _Key(Generic[I, O]):
    queue: deque[_Waiter[I, O]] = field(default_factory=deque)


@dataclass
class MergeStats:
    merges: int = 0
    requests: int = 0
    largest: int = 0
    waited: float = 0.0  # summed over requests, seconds


class HotRows(Generic[I, O]):
    def __init__(
        self,
        run: Callable[[Hashable, list[I]], Sequence[O | BaseException]],
        *,
        window: float,
        max_merge: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if window < 0 or max_merge < 1:
            raise ValueError("window must be >= 0 and max_merge >= 1")
        self.run = run
        self.window = window
        self.max_merge = max_merge
        self.clock = clock
        self.sleep = sleep
        self.listener: Listener | None = None
        self.stats = MergeStats()
        self._lock = threading.Lock()
        self._busy: dict[Hashable, _Key[I, O]] = {}  # keys with a call in flight

    def submit(self, key: Hashable, item: I) -> O:
        """Run ``item`` (merged with whatever else queues for ``key``); its outcome."""
        me: _Waiter[I, O] = _Waiter(item, self.clock())
        with self._lock:
            busy = self._busy.get(key)
            if busy is None:
                self._busy[key] = _Key()
            else:
                busy.queue.append(me)
        if busy is None:
            self._execute(key, [me])
            return me.result()
        me.done.wait()
        if me.lead:
            self._execute(key, self._gather(key, busy, me))
        return me.result()

    def queued(self, key: Hashable) -> int | None:
        """How many requests wait behind the call in flight for ``key``; None: none in flight."""
        with self._lock:
            state = self._busy.get(key)
            return None if state is None else len(state.queue)

    def _gather(
        self, key: Hashable, state: _Key[I, O], leader: _Waiter[I, O]
    ) -> list[_Waiter[I, O]]:
        """The leader's merge: wait out its window (unless full), then take the queue's head."""
        pause = leader.arrived + self.window - self.clock()
        if pause > 0 and len(state.queue) < self.max_merge:
            self.sleep(pause)
        with self._lock:
            take = min(len(state.queue), self.max_merge)
            return [state.queue.popleft() for _ in range(take)]

    def _execute(self, key: Hashable, batch: list[_Waiter[I, O]]) -> None:
        started = self.clock()
        try:
            outcomes = self.run(key, [w.item for w in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"merge of {len(batch)} gave {len(outcomes)} outcomes")
            for w, out in zip(batch, outcomes, strict=True):
                if isinstance(out, BaseException):
                    w.error = out
                else:
                    w.outcome = out
        except BaseException as exc:  # the whole merge failed: every request raises it
            for w in batch:
                w.error = exc
        finally:
            self._hand_over(key, batch, started)

    def _hand_over(self, key: Hashable, batch: list[_Waiter[I, O]], started: float) -> None:
        waits = [max(started - w.arrived, 0.0) for w in batch]
        with self._lock:
            state = self._busy[key]
            if state.queue:
                state.queue[0].lead = True
                state.queue[0].done.set()
            else:
                del self._busy[key]
            s = self.stats
            s.merges += 1
            s.requests += len(batch)
            s.largest = max(s.largest, len(batch))
            s.waited += sum(waits)
        for w in batch:
            w.done.set()
        if self.listener is not None:
            self.listener(len(batch), waits)
