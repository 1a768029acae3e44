"""Warming the cache: every product (or the ones asked for) streamed from the database, or
paged from the warehouse API, and written through the cache's version-guarded ``fill`` from a
writer thread; a cache that lost its data (no ``WARM_MARKER``) is warmed again by one worker,
the holder of ``WARM_LEASE``."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from stockctl.core.cache import SYNC_CHECKPOINT, check_batch, check_product_ids
from stockctl.core.cache_ports import StockCache
from stockctl.core.model import Inventory
from stockctl.core.ports import Store
from stockctl.core.projection import RowState
from stockctl.errors import CacheUnavailable

# Written by every full warm, in the cache itself: when it is missing, the cache lost its data
# (Redis restarted empty, was flushed or replaced) or was never warmed, and the sync warms it.
WARM_MARKER = "warm:complete"
# A full warm in progress: who, and when it last made progress. Another worker finding a fresh
# one leaves the warm to it; a warm whose cache lost this key meanwhile does not claim success.
WARM_LEASE = "warm:lease"
WARM_LEASE_SECONDS = 60.0


@dataclass
class WarmResult:
    products: int = 0
    rows: int = 0
    seconds: float = 0.0
    not_found: list[str] = field(default_factory=list)  # asked-for ids without inventory rows


def _by_product(rows: Iterator[tuple[str, RowState]]) -> Iterator[tuple[str, list[RowState]]]:
    current: str | None = None
    group: list[RowState] = []
    for product_id, row in rows:
        if product_id != current:
            if current is not None:
                yield current, group
            current, group = product_id, []
        group.append(row)
    if current is not None:
        yield current, group


# A cache write of a warm holds at most this many rows (a product is never split): one Redis
# script call runs ~10 us a row and blocks every other client meanwhile, so a write of a
# thousand 100-warehouse products (100,000 rows) would stall readers for over a second.
WARM_WRITE_ROWS = 2000


def warm(
    store: Store,
    cache: StockCache,
    *,
    product_ids: Sequence[str] | None = None,
    batch: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> WarmResult:
    """Stream inventory ordered by product; write ``batch`` products (at most
    ``WARM_WRITE_ROWS`` rows, unless one product has more) per cache call, in a writer thread,
    so that reading the next rows from the database overlaps the cache's work.

    ``progress(products, rows)`` is called after every batch handed to the writer.
    """
    import time

    check_batch(batch)
    started = time.perf_counter()
    result = WarmResult()
    if product_ids is not None:
        ids = check_product_ids(product_ids, 1_000_000)
        found = store.inventory_for_products(ids)
        groups: Iterator[tuple[str, list[RowState]]] = iter(
            (p, [RowState.of(r) for r in rs]) for p, rs in found.items()
        )
        result.not_found = [p for p in ids if p not in found]
    else:
        groups = _by_product(store.iter_row_states(batch=max(batch * 20, 5000)))
    _write_batches(cache, groups, batch, result, progress)
    result.seconds = time.perf_counter() - started
    summary = json.dumps({"at": time.time(), "products": result.products, "rows": result.rows})
    cache.set_meta("warm:last", summary)
    if product_ids is None:
        cache.set_meta(WARM_MARKER, summary)
    return result


def rewarm_if_lost(store: Store, cache: StockCache, now: datetime, owner: str) -> WarmResult | None:
    """Warm everything if the cache lacks ``WARM_MARKER`` (one read when it has it): the
    cache lost its data, however old its rows, or was never warmed. None if it needed nothing
    or another worker (``owner`` names this one) holds a fresh lease on the warm.

    ``now`` is taken before the warm starts, and becomes the sync checkpoint: rows the warm's
    snapshot missed changed after it, and the next sync (or their events) brings them."""
    import time

    if cache.get_meta(WARM_MARKER) is not None:
        return None
    held = _lease(cache.get_meta(WARM_LEASE))
    if held is not None and held[0] != owner and time.time() - held[1] < WARM_LEASE_SECONDS:
        return None
    token = f"{owner}:{time.time()}"
    last = time.monotonic()

    def renew(products: int, rows: int) -> None:
        nonlocal last
        if time.monotonic() - last >= WARM_LEASE_SECONDS / 4:
            last = time.monotonic()
            cache.set_meta(WARM_LEASE, _lease_value(owner, token))

    cache.set_meta(WARM_LEASE, _lease_value(owner, token))
    result = _warm_all(store, cache, renew)
    held = _lease(cache.get_meta(WARM_LEASE))
    if held is None or held[2] != token:  # the cache lost its data during the warm
        raise CacheUnavailable("the cache lost its data while it was being warmed: warm again")
    summary = json.dumps({"at": time.time(), "products": result.products, "rows": result.rows})
    cache.set_meta("warm:last", summary)
    cache.set_meta(WARM_MARKER, summary)
    cache.set_meta(SYNC_CHECKPOINT, now.isoformat())
    return result


def _warm_all(store: Store, cache: StockCache, progress: Callable[[int, int], None]) -> WarmResult:
    """``warm`` of everything, without its markers: ``rewarm_if_lost`` writes them once it
    knows the cache kept the warm."""
    import time

    started = time.perf_counter()
    result = WarmResult()
    groups = _by_product(store.iter_row_states(batch=20_000))
    _write_batches(cache, groups, 1000, result, progress)
    result.seconds = time.perf_counter() - started
    return result


def _lease_value(owner: str, token: str) -> str:
    import time

    return json.dumps({"owner": owner, "at": time.time(), "token": token})


def _lease(raw: str | None) -> tuple[str, float, str] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        return str(value["owner"]), float(value["at"]), str(value["token"])
    except (ValueError, KeyError, TypeError):
        return None


def _write_batches(
    cache: StockCache,
    groups: Iterable[tuple[str, list[RowState]]],
    batch: int,
    result: WarmResult,
    progress: Callable[[int, int], None] | None,
) -> None:
    pending: dict[str, list[RowState]] = {}
    rows = 0
    with _Writer(cache) as writer:

        def hand_over() -> None:
            nonlocal pending, rows
            writer.put(pending)
            result.products += len(pending)
            result.rows += rows
            pending, rows = {}, 0
            if progress is not None:
                progress(result.products, result.rows)

        for product_id, states in groups:
            if pending and rows + len(states) > WARM_WRITE_ROWS:
                hand_over()
            pending[product_id] = states
            rows += len(states)
            if len(pending) >= batch:
                hand_over()
        if pending:
            hand_over()


class _Writer:
    """Fills the cache from a thread of its own, at most ``depth`` batches behind the caller;
    the first error it meets is raised to the caller (at its next ``put`` or on leaving)."""

    def __init__(self, cache: StockCache, depth: int = 2) -> None:
        self.cache = cache
        self._queue: queue.Queue[dict[str, list[RowState]] | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="stockctl-warm-writer", daemon=True)

    def __enter__(self) -> _Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if exc[0] is None:
            self._raise()

    def put(self, products: dict[str, list[RowState]]) -> None:
        self._raise()
        self._queue.put(products)

    def _run(self) -> None:
        while (products := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.cache.fill(products)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error


def warm_from_pages(
    fetch: Callable[[int], tuple[list[Inventory], bool]],
    cache: StockCache,
    *,
    batch: int = 1000,
    in_flight: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> WarmResult:
    """Warm from a paged source (the warehouse API): ``in_flight`` pages at a time, every row
    gathered first so each product is written whole, then written as ``warm`` writes."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    check_batch(batch)
    started = time.perf_counter()
    by_product: dict[str, dict[str, RowState]] = {}
    page, more = 1, True
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        while more:
            results = list(pool.map(fetch, range(page, page + in_flight)))
            for found, has_more in results:
                for r in found:
                    held = by_product.setdefault(r.product_id, {}).get(r.warehouse_id)
                    if held is None or r.version > held.version:
                        by_product[r.product_id][r.warehouse_id] = RowState.of(r)
                more = more and has_more
            page += in_flight
    result = WarmResult()
    groups = ((p, list(states.values())) for p, states in by_product.items())
    _write_batches(cache, groups, batch, result, progress)
    result.seconds = time.perf_counter() - started
    return result
