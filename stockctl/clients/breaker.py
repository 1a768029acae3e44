"""A circuit breaker that never serialises its callers.

pybreaker's ``CircuitBreaker.call`` holds one lock for the whole wrapped call, so twenty
concurrent requests through one breaker would run one after another. Here pybreaker keeps the
state (in memory, or shared across processes through ``CircuitRedisStorage``) and notifies its
listeners, but the guarded I/O runs outside any lock: a call asks to be admitted, runs, then
reports its outcome. While open, calls fail fast with ``WarehouseUnavailable``; after the reset
timeout exactly one trial call is admitted (half-open), and its outcome closes or reopens the
circuit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pybreaker

from stockctl.errors import WarehouseUnavailable

log = logging.getLogger("stockctl.breaker")


class _LogChanges(pybreaker.CircuitBreakerListener):
    def __init__(self, on_change: Callable[[str, str], None] | None) -> None:
        self.on_change = on_change

    def state_change(self, cb: Any, old: Any, new: Any) -> None:
        old_name, new_name = getattr(old, "name", "none"), new.name
        log.warning("circuit %s: %s -> %s", cb.name, old_name, new_name)
        if self.on_change is not None:
            self.on_change(old_name, new_name)


class Breaker:
    def __init__(
        self,
        name: str = "warehouse",
        fail_max: int = 5,
        reset_timeout: float = 30.0,
        storage: Any = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.storage = storage or pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        self.cb = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            state_storage=self.storage,
            name=name,
            listeners=[_LogChanges(on_change)],
        )
        self.clock = clock
        self._trial = threading.Lock()  # held only while the half-open trial call is in flight

    @property
    def state(self) -> str:
        return str(self.cb.current_state)

    def admit(self) -> bool:
        """Let a call through, or raise ``WarehouseUnavailable``. True: it is the trial call."""
        state = self.state
        if state == pybreaker.STATE_CLOSED:
            return False
        if state == pybreaker.STATE_OPEN:
            opened = self.storage.opened_at
            wait = timedelta(seconds=self.cb.reset_timeout)
            if opened is not None and self.clock() < opened + wait:
                raise WarehouseUnavailable(f"circuit {self.cb.name} is open: failing fast")
        if not self._trial.acquire(blocking=False):
            raise WarehouseUnavailable(f"circuit {self.cb.name} is half-open: trial in flight")
        self.cb.half_open()
        return True

    def success(self, trial: bool) -> None:
        self.storage.reset_counter()
        if trial:
            self.cb.close()
            self._trial.release()

    def failure(self, trial: bool) -> None:
        if trial:
            self._open()
            self._trial.release()
            return
        self.storage.increment_counter()
        if self.storage.counter >= self.cb.fail_max and self.state == pybreaker.STATE_CLOSED:
            self._open()

    def _open(self) -> None:
        # Not ``cb.open()``: it stamps opened_at with the wall clock, and CircuitRedisStorage keeps
        # the greater of two stamps, so an injected clock behind the wall clock would never reach
        # the reset timeout. Stamp with our clock, then switch state (listeners are notified).
        self.storage.opened_at = self.clock()
        self.storage.state = pybreaker.STATE_OPEN
        self.cb.state = pybreaker.STATE_OPEN
