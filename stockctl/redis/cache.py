"""The stock cache on Redis: one Lua call per batch de-duplicates, version-guards and writes.

The scripts (``redis_scripts``) implement ``stockctl.core.projection`` (same keys, same guard,
same totals); the embedded cache implements it in Python, and one test suite runs against both.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import redis

from stockctl.core.cache_ports import ApplyResult
from stockctl.core.projection import (
    PROCESSED_TTL_SECONDS,
    CacheKeys,
    ProductStock,
    RowState,
    StockLevel,
    StockUpdate,
)
from stockctl.errors import CacheUnavailable
from stockctl.redis.apply_script import APPLY
from stockctl.redis.nodes import CROSS_SLOT, CROSS_SLOT_READ, NodeRouter, Script
from stockctl.redis.scripts import AGG_FIELD, FILL, GETS


class RedisStockCache:
    """The cache on one Redis, a Sentinel-managed master, or a Redis Cluster. On a cluster,
    keys are hash-tagged by product, and every batch goes to each node in one call."""

    def __init__(
        self,
        client: Any,
        keys: CacheKeys | None = None,
        ttl_seconds: int = 300,
        target: str = "redis",
        dedupe_ttl_seconds: int = PROCESSED_TTL_SECONDS,
        dedupe_markers: str = "unversioned",
    ) -> None:
        self.client = client
        self.router = NodeRouter(client, target)
        keys = keys or CacheKeys()
        if self.router.cluster and not keys.hash_tags:
            keys = CacheKeys(keys.prefix, hash_tags=True)  # a product's keys in one slot
        self.keys = keys
        self.ttl = ttl_seconds
        self.target = target
        self.dedupe_ttl = dedupe_ttl_seconds
        # "all": the guide's catalog:event:processed:{id} marker for every event; otherwise
        # none for stock events, whose version guard already makes a replay a no-op.
        self.markers = dedupe_markers == "all"
        flags = CROSS_SLOT if self.router.cluster else ""
        self._apply = Script(flags + APPLY)
        self._fill = Script(flags + FILL)
        self._gets = Script((CROSS_SLOT_READ if self.router.cluster else "") + GETS)
        self._head = [self.keys.prefix, "1" if self.keys.hash_tags else "0", str(self.ttl)]

    def apply(self, updates: Sequence[StockUpdate]) -> ApplyResult:
        if not updates:
            return ApplyResult(0, 0, 0, ())
        if self.markers and self.router.cluster:
            return self._apply_marked(updates)
        return self._apply_on_nodes(updates, self.dedupe_ttl if self.markers else 0)

    def _apply_marked(self, updates: Sequence[StockUpdate]) -> ApplyResult:
        """The guide's markers on a cluster, where an event's marker lives in another slot
        than its product: markers read, the unmarked events applied, their markers set.
        Two consumers racing on one event both apply it; the version guard keeps that a
        no-op, and a failure before the markers are set leaves the events to be redelivered."""
        seen = self.processed([u.event_id for u in updates])
        fresh: dict[str, StockUpdate] = {}
        for u, done in zip(updates, seen, strict=True):
            if not done:
                fresh.setdefault(u.event_id, u)
        result = self._apply_on_nodes(list(fresh.values()), 0)
        self.claim_events(list(fresh))
        dup = len(updates) - len(fresh)
        return ApplyResult(result.applied, dup, result.stale, result.incomplete)

    def _apply_on_nodes(self, updates: Sequence[StockUpdate], marker_ttl: int) -> ApplyResult:
        if not updates:
            return ApplyResult(0, 0, 0, ())
        head = [*self._head, marker_ttl]

        def work(node: Any, group: list[StockUpdate]) -> Any:
            if not marker_ttl:  # a product's updates side by side, in order: written once
                group = sorted(group, key=_product_of)
            packed = [
                f"{u.product_id}:{r.warehouse_id}:{s if (s := r.on_hand - r.reserved) > 0 else 0}:"
                f"{r.version}:{r.on_hand}:{r.reserved}:{r.threshold}"
                for u in group
                if (r := u.row)
            ]
            if not marker_ttl:
                # A row's state repeated (a threshold event beside its change) is stale on
                # arrival: counted so, without a round through the script.
                unique = list(dict.fromkeys(packed))
                reply = self._apply(node, [*head, "\n".join(unique)])
                return [reply[0], reply[1], int(reply[2]) + len(packed) - len(unique), reply[3]]
            ids = [u.event_id for u in group]
            return self._apply(
                node, head + [x for pair in zip(ids, packed, strict=True) for x in pair]
            )

        applied = dup = stale = 0
        missing: list[str] = []
        for _, (a, d, st, miss) in self._each(updates, _product_of, work):
            applied, dup, stale = applied + int(a), dup + int(d), stale + int(st)
            missing += (_text(p) for p in miss)
        return ApplyResult(applied, dup, stale, tuple(missing))

    def fill(self, products: Mapping[str, Sequence[RowState]]) -> None:
        if not products:
            return

        def work(node: Any, group: list[str]) -> Any:
            args: list[Any] = list(self._head)
            for product_id in group:
                rows = products[product_id]
                args += (product_id, len(rows))
                args += [
                    f"{r.warehouse_id}:{r.version}:{r.on_hand}:{r.reserved}:{r.threshold}"
                    for r in rows
                ]
            return self._fill(node, args)

        self._each(list(products), _same, work)

    def _each(self, items: Sequence[Any], slot_key: Any, work: Any) -> list[tuple[Any, Any]]:
        try:
            return self.router.each(items, slot_key, work)
        except CacheUnavailable:
            raise
        except redis.RedisError as exc:
            raise CacheUnavailable(f"redis refused at {self.target}: {exc}") from None

    def claim_events(self, event_ids: Sequence[str]) -> list[bool]:
        pipe = self.client.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.set(self.keys.processed(event_id), "1", nx=True, ex=self.dedupe_ttl)
        return [bool(x) for x in self._run(pipe.execute)]

    def processed(self, event_ids: Sequence[str]) -> list[bool]:
        if not event_ids:
            return []
        found = self._mget([self.keys.processed(e) for e in event_ids])
        return [x is not None for x in found]

    def heartbeat(self, name: str, payload: str, ttl_seconds: int) -> None:
        self._run(lambda: self.client.set(self._beat(name), payload, ex=ttl_seconds))

    def heartbeats(self, prefix: str) -> dict[str, str]:
        pattern = self._beat(prefix) + "*"
        keys = [_text(k) for k in self._run(lambda: list(self.client.scan_iter(pattern, 500)))]
        values = self._mget(keys) if keys else []
        start = len(self._beat(""))
        return {k[start:]: _text(v) for k, v in zip(keys, values, strict=True) if v is not None}

    def _beat(self, name: str) -> str:
        return f"stockctl:heartbeat:{name}"

    def get_products(self, product_ids: Sequence[str]) -> dict[str, ProductStock | None]:
        def work(node: Any, group: list[str]) -> Any:
            pipe = node.pipeline(transaction=False)
            for product_id in group:
                pipe.hgetall(self.keys.rows(product_id))
            return pipe.execute()

        out: dict[str, ProductStock | None] = {}
        for group, found in self._each(product_ids, _same, work):
            for product_id, flat in zip(group, found, strict=True):
                flat.pop(AGG_FIELD.encode(), None)
                flat.pop(AGG_FIELD, None)
                if not flat:
                    out[product_id] = None
                    continue
                rows = sorted(
                    (RowState.decode(_text(w), _text(v)) for w, v in flat.items()),
                    key=lambda r: r.warehouse_id,
                )
                out[product_id] = ProductStock(product_id, tuple(rows))
        return {p: out.get(p) for p in product_ids}

    def get_levels(self, product_ids: Sequence[str]) -> dict[str, StockLevel | None]:
        if not product_ids:
            return {}
        if not self.router.cluster:
            keys = [self.keys.product(p) for p in product_ids]
            found = self._run(lambda: self.client.mget(keys))
            return {p: _level(p, raw) for p, raw in zip(product_ids, found, strict=True)}

        def work(node: Any, group: list[str]) -> Any:
            return self._gets(node, [self.keys.product(p) for p in group])

        out: dict[str, StockLevel | None] = {}
        for group, found in self._each(product_ids, _same, work):
            out.update((p, _level(p, raw)) for p, raw in zip(group, found, strict=True))
        return {p: out[p] for p in product_ids}

    def count_reads(self, hits: int, misses: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        if hits:
            pipe.incrby(self._meta("reads:hits"), hits)
        if misses:
            pipe.incrby(self._meta("reads:misses"), misses)
        if hits or misses:
            self._run(pipe.execute)

    def get_keys(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        return [None if v is None else _text(v) for v in self._mget(keys)]

    def _mget(self, keys: Sequence[str]) -> list[Any]:
        """Keys of any slots: split by slot on a cluster."""
        if self.router.cluster:
            return list(self._run(lambda: self.client.mget_nonatomic(keys)))
        return list(self._run(lambda: self.client.mget(keys)))

    def inspect(self, keys: Sequence[str]) -> list[tuple[str | None, int | None]]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.type(key)
            pipe.pttl(key)
        meta = self._run(pipe.execute)
        read = self.client.pipeline(transaction=False)
        for key, kind in zip(keys, meta[::2], strict=True):
            (read.hgetall if _text(kind) == "hash" else read.get)(key)
        values = self._run(read.execute)
        out: list[tuple[str | None, int | None]] = []
        for value, ttl_ms in zip(values, meta[1::2], strict=True):
            if isinstance(value, dict):
                value = json.dumps({_text(k): _text(v) for k, v in value.items()}) or None
            shown = None if value is None or value == {} else _text(value)
            out.append((shown, None if ttl_ms < 0 else ttl_ms // 1000))
        return out

    def evict(self, product_ids: Sequence[str], warehouses: Mapping[str, Sequence[str]]) -> int:
        keys = [k for p in product_ids for k in self._product_keys(p, warehouses.get(p, ()))]
        return int(self._run(lambda: self.client.unlink(*keys))) if keys else 0

    def _product_keys(self, product_id: str, warehouses: Sequence[str]) -> list[str]:
        held = self._run(lambda: self.client.hkeys(self.keys.rows(product_id)))
        names = {*warehouses, *(_text(w) for w in held)} - {AGG_FIELD}
        return [
            *self.keys.product_keys(product_id),
            *(self.keys.warehouse(product_id, w) for w in sorted(names)),
        ]

    def clear(self) -> int:
        removed = 0
        for pattern in (f"{self.keys.prefix}:stock:*", f"{self.keys.prefix}:product:*"):
            batch: list[Any] = []
            for key in self.client.scan_iter(pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    removed += int(self._run(lambda b=batch: self.client.unlink(*b)))
                    batch = []
            if batch:
                removed += int(self._run(lambda b=batch: self.client.unlink(*b)))
        return removed

    def stats(self) -> dict[str, object]:
        info = self._info()
        hits, misses = self.get_keys([self._meta("reads:hits"), self._meta("reads:misses")])
        ours_h, ours_m = int(hits or 0), int(misses or 0)
        return {
            "backend": "redis",
            "target": self.target,
            "keys": sum(int(self._run(n.dbsize)) for n in self.router.nodes()),
            "used_memory": info.get("used_memory"),
            "maxmemory": info.get("maxmemory"),
            "evicted_keys": info.get("evicted_keys"),
            "expired_keys": info.get("expired_keys"),
            "redis_keyspace_hits": info.get("keyspace_hits"),
            "redis_keyspace_misses": info.get("keyspace_misses"),
            "stock_reads_hits": ours_h,
            "stock_reads_misses": ours_m,
            "stock_hit_rate": round(ours_h / (ours_h + ours_m), 4) if ours_h + ours_m else None,
        }

    def _info(self) -> dict[str, Any]:
        """INFO of the server, or on a cluster its masters' counters summed."""
        infos = [self._run(n.info) for n in self.router.nodes()]
        if len(infos) == 1:
            return dict(infos[0])
        summed = (
            "used_memory",
            "maxmemory",
            "evicted_keys",
            "expired_keys",
            "keyspace_hits",
            "keyspace_misses",
        )
        return {k: sum(int(i.get(k) or 0) for i in infos) for k in summed}

    def get_meta(self, name: str) -> str | None:
        value = self._run(lambda: self.client.get(self._meta(name)))
        return None if value is None else _text(value)

    def set_meta(self, name: str, value: str) -> None:
        self._run(lambda: self.client.set(self._meta(name), value))

    def _meta(self, name: str) -> str:
        return f"stockctl:{self.keys.prefix}:{name}"

    def ping(self) -> None:
        self._run(self.client.ping)

    def close(self) -> None:
        self.client.close()

    def _run(self, fn: Any) -> Any:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise CacheUnavailable(f"redis unavailable at {self.target}: {exc}") from None
        except (redis.exceptions.ClusterError, redis.exceptions.RedisClusterException) as exc:
            raise CacheUnavailable(f"redis cluster unavailable at {self.target}: {exc}") from None


_product_of = operator.attrgetter("product_id")  # a StockUpdate's slot key and sort key


def _same(product_id: str) -> str:
    return product_id


def _level(product_id: str, raw: bytes | str | None) -> StockLevel | None:
    if raw is None:
        return None
    try:
        return StockLevel.from_detail(product_id, orjson.loads(raw))
    except orjson.JSONDecodeError:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
