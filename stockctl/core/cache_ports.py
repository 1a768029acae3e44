"""Ports of the stock cache. Adapters in ``stockctl.redis.cache`` (Redis) and
``stockctl.store.cache_sql`` (the embedded default's tables) implement them;
``tests/fakes/cache.py`` has an in-memory one for the use-case tests.

Each port is what one kind of use needs: the read path (``CacheReads``), projecting events
(``CacheWriter``), worker liveness (``Heartbeats``), the cache jobs and commands (``CacheAdmin``).
``StockCache`` is everything a cache adapter offers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from stockctl.core.projection import CacheKeys, ProductStock, RowState, StockLevel, StockUpdate


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What a cache did with a batch of stock updates."""

    applied: int
    duplicates: int
    stale: int
    incomplete: tuple[str, ...]  # products with no cached rows: fill them from the database


class CacheWriter(Protocol):
    """What projecting events into the cache needs (``stockctl.core.catalog.project``)."""

    @property
    def keys(self) -> CacheKeys: ...

    def apply(self, updates: Sequence[StockUpdate]) -> ApplyResult:
        """De-duplicate on event id, version-guard and write a batch in one round trip."""
        ...

    def fill(self, products: Mapping[str, Sequence[RowState]]) -> None:
        """Write whole products (every row), version-guarded."""
        ...

    def claim_events(self, event_ids: Sequence[str]) -> list[bool]:
        """Set processed markers; True where the event had not been seen."""
        ...

    def processed(self, event_ids: Sequence[str]) -> list[bool]:
        """Whether each event has a processed marker (read only)."""
        ...


class Heartbeats(Protocol):
    def heartbeat(self, name: str, payload: str, ttl_seconds: int) -> None: ...

    def heartbeats(self, prefix: str) -> dict[str, str]:
        """Live heartbeats whose name starts with ``prefix``."""
        ...


class CacheAdmin(Protocol):
    """Warm, verify, repair and inspect: the cache jobs and commands."""

    def get_products(self, product_ids: Sequence[str]) -> dict[str, ProductStock | None]:
        """Each product's cached rows (with versions); None where it is incomplete."""
        ...

    def inspect(self, keys: Sequence[str]) -> list[tuple[str | None, int | None]]:
        """(value, seconds to live or None for no expiry) per key; hashes read as JSON."""
        ...

    def evict(self, product_ids: Sequence[str], warehouses: Mapping[str, Sequence[str]]) -> int:
        """Drop every key of these products (so a repair can rewrite them whole)."""
        ...

    def clear(self) -> int:
        """Drop every stock and product key under the prefix; returns how many."""
        ...

    def stats(self) -> dict[str, object]: ...

    def get_meta(self, name: str) -> str | None: ...

    def set_meta(self, name: str, value: str) -> None: ...

    def close(self) -> None: ...


class CacheReads(Protocol):
    """What the read path (``get_stock``, ``bulk_sellable``) and readiness use of a cache: a
    ``StockCache``, or ``stockctl.core.guard.GuardedReads`` in front of one."""

    @property
    def keys(self) -> CacheKeys: ...

    def get_levels(self, product_ids: Sequence[str]) -> dict[str, StockLevel | None]: ...

    def get_keys(self, keys: Sequence[str]) -> list[str | None]: ...

    def count_reads(self, hits: int, misses: int) -> None: ...

    def fill(self, products: Mapping[str, Sequence[RowState]]) -> None: ...

    def ping(self) -> None: ...


class StockCache(CacheReads, CacheWriter, Heartbeats, CacheAdmin, Protocol):
    """The catalog's stock cache (``stockctl.core.projection`` defines its keys): everything a
    cache adapter (Redis, or the SQL tables of the embedded default) offers."""
