"""Cache reads that never wait on a lost or stalled cache.

The read path (``stockctl.core.cache.get_stock`` and ``bulk_sellable``) can always answer from
the database, so a cache that does not answer quickly is worse than no cache. ``GuardedReads``
puts a ``ReadBreaker`` in front of the cache's read calls (given a client with a short timeout
of its own, ``cache_read_timeout_ms``): the first read that times out or cannot connect opens
it, and while it is open no read touches the cache — each fails at once with ``CacheBypassed``
and ``get_stock`` goes to the database. After ``cool_down`` seconds exactly one read is let
through as a probe (half-open): if it answers, reads use the cache again; if not, another
cool-down starts. Only the state changes are logged, one line each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from stockctl.core.cache_ports import StockCache
from stockctl.core.projection import CacheKeys, RowState, StockLevel
from stockctl.errors import CacheUnavailable

log = logging.getLogger("stockctl.cache")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
T = TypeVar("T")


class CacheBypassed(CacheUnavailable):
    """A cache read the guard gave up on: it failed and opened the breaker, or was not even
    tried while the breaker is open. The breaker has logged the outage: callers need not."""

    slug = "cache-bypassed"


class ReadBreaker:
    """closed -> (a failed read) -> open -> (``cool_down`` later, one probe) -> half-open ->
    closed if the probe answers, open again if not. Thread-safe; callers never wait on it."""

    def __init__(
        self,
        cool_down: float,
        *,
        name: str = "cache",
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.cool_down = cool_down
        self.name = name
        self.clock = clock
        self.on_change = on_change
        self._lock = threading.Lock()
        self._state = CLOSED
        self._opened_at = 0.0  # when the current open period began (clock)
        self._down_since = 0.0  # when the first failure of this outage happened (clock)
        self._probing = False
        self.last_error: str | None = None
        self.opened = 0  # closed -> open transitions, for tests and stats

    @property
    def state(self) -> str:
        return self._state

    def down_for(self) -> float:
        """Seconds since the cache stopped answering (0 while closed)."""
        return 0.0 if self._state == CLOSED else self.clock() - self._down_since

    def admit(self) -> bool:
        """Let a read through (True: it is the probe), or raise ``CacheBypassed``."""
        with self._lock:
            if self._state == CLOSED:
                return False
            if self._probing or self.clock() - self._opened_at < self.cool_down:
                raise CacheBypassed(
                    f"{self.name} reads bypassed for {self.down_for():.1f} s "
                    f"(breaker {self._state}): {self.last_error}"
                )
            self._probing = True
            old, self._state = self._state, HALF_OPEN
        self._changed(old, HALF_OPEN)
        return True

    def success(self, probe: bool) -> None:
        if not probe:
            return
        with self._lock:
            self._probing = False
            old, self._state = self._state, CLOSED
            down = self.clock() - self._down_since
        log.warning("%s reads: the cache answers again after %.1f s", self.name, down)
        self._changed(old, CLOSED)

    def failure(self, probe: bool, error: Exception) -> None:
        with self._lock:
            if probe:
                self._probing = False
            elif self._state != CLOSED:
                return  # admitted before the breaker opened: this outage is already known
            old, self._state = self._state, OPEN
            self._opened_at = self.clock()
            if old == CLOSED:
                self._down_since = self._opened_at
                self.opened += 1
            self.last_error = str(error)
        if old == CLOSED:
            log.warning(
                "%s reads: %s; reading from the database, probing every %.1f s",
                self.name,
                error,
                self.cool_down,
            )
        self._changed(old, OPEN)

    def _changed(self, old: str, new: str) -> None:
        if self.on_change is not None and old != new:
            self.on_change(old, new)


class GuardedReads:
    """What the read path needs of a cache (``CacheReads``), behind a ``ReadBreaker``; ``ping``
    too, so that a readiness probe neither waits on a stalled cache nor wakes it."""

    def __init__(self, cache: StockCache, breaker: ReadBreaker) -> None:
        self.cache = cache
        self.breaker = breaker

    @property
    def keys(self) -> CacheKeys:
        return self.cache.keys

    def _guarded(self, call: Callable[[], T]) -> T:
        probe = self.breaker.admit()
        try:
            result = call()
        except CacheBypassed:
            raise
        except CacheUnavailable as exc:
            self.breaker.failure(probe, exc)
            raise CacheBypassed(str(exc)) from None
        except BaseException:
            self.breaker.success(probe)  # the cache answered (with an error of another kind)
            raise
        self.breaker.success(probe)
        return result

    def get_levels(self, product_ids: Sequence[str]) -> dict[str, StockLevel | None]:
        return self._guarded(lambda: self.cache.get_levels(product_ids))

    def get_keys(self, keys: Sequence[str]) -> list[str | None]:
        return self._guarded(lambda: self.cache.get_keys(keys))

    def count_reads(self, hits: int, misses: int) -> None:
        self._guarded(lambda: self.cache.count_reads(hits, misses))

    def fill(self, products: Mapping[str, Sequence[RowState]]) -> None:
        self._guarded(lambda: self.cache.fill(products))

    def ping(self) -> None:
        self._guarded(self.cache.ping)
