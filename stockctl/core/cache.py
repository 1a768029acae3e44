"""Cache use cases: read-through, warming, incremental sync, verify and repair.

All of them write through the cache's version-guarded ``fill``: a warmed or synced value never
overwrites a newer one written by the event processor.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from stockctl.core.cache_ports import CacheReads, StockCache
from stockctl.core.guard import CacheBypassed
from stockctl.core.model import Inventory, check_id
from stockctl.core.ports import Store
from stockctl.core.projection import (
    CacheKeys,
    ProductStock,
    RowState,
    StockLevel,
    product_values,
)
from stockctl.core.values import check_timestamp, check_whole
from stockctl.errors import CacheUnavailable, InvalidInput

MAX_BATCH = 10_000
MAX_PAGE = 1000
SYNC_CHECKPOINT = "sync:checkpoint"

log = logging.getLogger("stockctl.cache")


def check_batch(batch: int) -> int:
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_BATCH:
        raise InvalidInput(f"batch must be between 1 and {MAX_BATCH}")
    return batch


def check_product_ids(product_ids: Sequence[str], limit: int) -> list[str]:
    if len(product_ids) > limit:
        raise InvalidInput(f"at most {limit} product ids per call, got {len(product_ids)}")
    return [check_id(p, "product") for p in dict.fromkeys(product_ids)]


@dataclass
class ReadCounters:
    """Hits and misses of this process (the cache also keeps shared totals)."""

    hits: int = 0
    misses: int = 0
    listener: Callable[[int, int], None] | None = None  # e.g. Prometheus counters
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, hits: int, misses: int) -> None:
        with self._lock:
            self.hits += hits
            self.misses += misses
        if self.listener is not None:
            self.listener(hits, misses)


def _stock(product_id: str, rows: Iterable[Inventory]) -> ProductStock:
    return ProductStock(product_id, tuple(RowState.of(r) for r in rows))


def get_stock(
    store: Store,
    cache: CacheReads,
    product_ids: Sequence[str],
    counters: ReadCounters | None = None,
    limit: int = 1000,
) -> dict[str, StockLevel | None]:
    """Stock of many products as the catalog shows it (totals, status, sellable per
    warehouse): the cached product details in one read, then one database query for the
    misses, which fill the cache. Products unknown to the database map to None.

    An unreachable cache is not an error: every read goes to the database and counts as a miss
    (in ``counters``; the shared counts and the fill are skipped until the cache is back). With
    ``GuardedReads`` as the cache, a cache that stalls costs one short timeout, then reads skip
    it (``CacheBypassed``, not logged per read) until a probe finds it back."""
    ids = check_product_ids(product_ids, limit)
    cache_up = True
    try:
        found = cache.get_levels(ids)
    except CacheUnavailable as exc:
        if not isinstance(exc, CacheBypassed):
            log.warning("stock read from the database: %s", exc)
        found, cache_up = {}, False
    misses = [p for p in ids if found.get(p) is None]
    if counters is not None:
        counters.add(len(ids) - len(misses), len(misses))
    if cache_up:
        cache_up = _tolerate(lambda: cache.count_reads(len(ids) - len(misses), len(misses)))
    if misses:
        rows = store.inventory_for_products(misses)
        if cache_up:
            _tolerate(
                lambda: cache.fill({p: [RowState.of(r) for r in rs] for p, rs in rows.items()})
            )
        for p in misses:
            found[p] = _stock(p, rows[p]).level() if p in rows else None
    return {p: found.get(p) for p in ids}


def _tolerate(write: Callable[[], None]) -> bool:
    """Run a cache write of the read path; False (logged) if the cache is unreachable."""
    try:
        write()
    except CacheUnavailable as exc:
        if not isinstance(exc, CacheBypassed):
            log.warning("stock cache write skipped: %s", exc)
        return False
    return True


def bulk_sellable(
    store: Store,
    cache: CacheReads,
    product_ids: Sequence[str],
    warehouse_id: str | None = None,
    counters: ReadCounters | None = None,
    limit: int = 1000,
) -> tuple[dict[str, int], list[str]]:
    """Sellable units of many products, summed over warehouses or in one: (stocks, unknown ids).

    The guide's plain keys (``...:available`` / ``...:warehouse:{w}``) answer in one read (MGET
    on Redis); only the products they lack go through ``get_stock`` (product details, then
    the database).
    """
    ids = check_product_ids(product_ids, limit)
    if warehouse_id is not None:
        check_id(warehouse_id, "warehouse")
    stocks, rest = _plain_sellable(cache, ids, warehouse_id)
    if stocks:
        if counters is not None:
            counters.add(len(stocks), 0)
        _tolerate(lambda: cache.count_reads(len(stocks), 0))
    missing: list[str] = []
    if rest:  # get_stock counts these itself
        for p, s in get_stock(store, cache, rest, counters, limit).items():
            if s is None:
                missing.append(p)
            elif warehouse_id is None:
                stocks[p] = s.sellable
            else:
                stocks[p] = s.warehouses.get(warehouse_id, 0)
    return {p: stocks[p] for p in ids if p in stocks}, missing


def _plain_sellable(
    cache: CacheReads, ids: Sequence[str], warehouse_id: str | None
) -> tuple[dict[str, int], list[str]]:
    """(sellable by product, products without a plain key): one MGET on Redis."""
    k = cache.keys
    wanted = [k.available(p) if warehouse_id is None else k.warehouse(p, warehouse_id) for p in ids]
    try:
        values = cache.get_keys(wanted)
    except CacheUnavailable:  # get_stock reads them all from the database (and logs it)
        return {}, list(ids)
    stocks: dict[str, int] = {}
    rest: list[str] = []
    for p, value in zip(ids, values, strict=True):
        if value is not None and value.lstrip("-").isdigit():
            stocks[p] = max(int(value), 0)
        else:
            rest.append(p)
    return stocks, rest


@dataclass(frozen=True)
class Page:
    rows: list[Inventory]
    page: int
    limit: int
    has_more: bool


def recently_updated(
    store: Store,
    since: datetime,
    warehouse_id: str | None = None,
    page: int = 1,
    limit: int = MAX_PAGE,
) -> Page:
    """Rows changed at or after ``since``, ordered by (last_movement_at, product, warehouse)."""
    since = check_timestamp(since, "since")
    if warehouse_id is not None:
        check_id(warehouse_id, "warehouse")
    check_whole(limit, "limit", 1, MAX_PAGE)
    check_whole(page, "page", 1, 1_000_000)
    rows = store.recently_updated(since, warehouse_id, (page - 1) * limit, limit + 1)
    return Page(rows[:limit], page, limit, has_more=len(rows) > limit)


@dataclass
class SyncResult:
    since: datetime | None
    until: datetime | None
    rows: int
    products: int


def sync(
    store: Store,
    cache: StockCache,
    now: datetime,
    *,
    overlap: timedelta = timedelta(seconds=5),
    first_window: timedelta = timedelta(hours=1),
) -> SyncResult:
    """Refresh every product changed since the stored checkpoint (the repair path for anything
    events missed). ``overlap`` re-reads a few seconds before the checkpoint: a row's
    ``last_movement_at`` is taken before its transaction commits, so a late commit can carry an
    older time than rows already seen."""
    raw = cache.get_meta(SYNC_CHECKPOINT)
    since = datetime.fromisoformat(raw) - overlap if raw else now - first_window
    changed: dict[str, None] = {}
    newest: datetime | None = None
    seen_rows = 0
    for row in store.changed_since(since):
        seen_rows += 1
        changed[row.product_id] = None
        if row.last_movement_at is not None and (newest is None or row.last_movement_at > newest):
            newest = row.last_movement_at
    products = list(changed)
    for start in range(0, len(products), 1000):
        chunk = products[start : start + 1000]
        rows = store.inventory_for_products(chunk)
        cache.fill({p: [RowState.of(r) for r in rs] for p, rs in rows.items()})
    checkpoint = newest or (datetime.fromisoformat(raw) if raw else since)
    cache.set_meta(SYNC_CHECKPOINT, checkpoint.isoformat())
    return SyncResult(since, newest, seen_rows, len(products))


@dataclass(frozen=True)
class Drift:
    product_id: str
    kind: str  # missing | stale | wrong
    detail: str


def verify(
    store: Store,
    cache: StockCache,
    keys: CacheKeys,
    product_ids: Sequence[str],
    *,
    repair: bool = False,
) -> list[Drift]:
    """Compare cache and database for the given products; with ``repair`` rewrite the drifted
    products whole (their keys are dropped first, so corrupted values cannot survive the guard).
    """
    db = store.inventory_for_products(product_ids)
    drifts: list[Drift] = []
    for chunk_start in range(0, len(product_ids), 500):
        chunk = list(product_ids[chunk_start : chunk_start + 500])
        held = cache.get_products(chunk)
        expected = {p: product_values(keys, _stock(p, db[p])) for p in chunk if p in db}
        plain = cache.get_keys([k for p in chunk for k in expected.get(p, {})])
        values = iter(plain)
        for p in chunk:
            if p not in db:
                continue
            drift = _compare(
                p, held.get(p), _stock(p, db[p]), expected[p], [next(values) for _ in expected[p]]
            )
            if drift is not None:
                drifts.append(drift)
    if repair and drifts:
        broken = [d.product_id for d in drifts]
        cache.evict(broken, {p: [r.warehouse_id for r in db[p]] for p in broken})
        cache.fill({p: [RowState.of(r) for r in db[p]] for p in broken})
    return drifts


def _compare(
    product_id: str,
    held: ProductStock | None,
    truth: ProductStock,
    expected: dict[str, str],
    actual: list[str | None],
) -> Drift | None:
    if held is None:
        return Drift(product_id, "missing", "no cached rows")
    held_rows = {r.warehouse_id: r for r in held.rows}
    for row in truth.rows:
        mine = held_rows.get(row.warehouse_id)
        if mine is None:
            return Drift(product_id, "missing", f"warehouse {row.warehouse_id} not cached")
        if mine.version < row.version:
            return Drift(
                product_id,
                "stale",
                f"{row.warehouse_id} at version {mine.version}, database {row.version}",
            )
        if mine != row:
            return Drift(product_id, "wrong", f"{row.warehouse_id} v{row.version} differs")
    for (key, want), got in zip(expected.items(), actual, strict=True):
        if got is None:
            return Drift(product_id, "missing", f"{key} absent")
        if not _same(want, got):
            return Drift(product_id, "wrong", f"{key} = {got!r}, expected {want!r}")
    return None


def _same(want: str, got: str) -> bool:
    if want.startswith("{"):
        try:
            return bool(json.loads(want) == json.loads(got))
        except ValueError:
            return False
    return want == got
