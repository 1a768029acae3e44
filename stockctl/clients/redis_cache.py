"""The stock cache on Redis: one Lua call per batch de-duplicates, version-guards and writes.

The scripts implement ``stockctl.core.projection`` (same keys, same guard, same totals); the
embedded cache implements it in Python, and one test suite runs against both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from stockctl.core.ports import ApplyResult
from stockctl.core.projection import (
    PROCESSED_TTL_SECONDS,
    CacheKeys,
    ProductStock,
    RowState,
    StockUpdate,
)
from stockctl.errors import CacheUnavailable

# Shared by both scripts: recompute every derived key of the products in `dirty`.
_RECOMPUTE = r"""
local function base(p)
  if tags then return prefix .. ':stock:{' .. p .. '}' end
  return prefix .. ':stock:' .. p
end
local function product_key(p)
  if tags then return prefix .. ':product:{' .. p .. '}' end
  return prefix .. ':product:' .. p
end
local function put(key, value)
  if ttl > 0 then redis.call('SET', key, value, 'EX', ttl) else redis.call('SET', key, value) end
end
-- Every key of the product is rewritten, with a fresh TTL: a product's keys live and expire
-- together (a quiet warehouse's plain key must not expire while its rows hash is renewed).
local function recompute(p)
  local b = base(p)
  local flat = redis.call('HGETALL', b .. ':rows')
  local total, avail, maxthr = 0, 0, 0
  local per = {}
  for j = 1, #flat, 2 do
    local _, a, r, t = string.match(flat[j + 1], '^(%d+):(%d+):(%d+):(%d+)$')
    a, r, t = tonumber(a), tonumber(r), tonumber(t)
    local s = a - r
    if s < 0 then s = 0 end
    total = total + a
    avail = avail + s
    if t > maxthr then maxthr = t end
    per[flat[j]] = s
  end
  for w, v in pairs(per) do put(b .. ':warehouse:' .. w, v) end
  local status = 'in_stock'
  if avail <= 0 then status = 'out_of_stock' elseif avail <= maxthr then status = 'low_stock' end
  put(b .. ':total', total)
  put(b .. ':available', avail)
  put(b .. ':status', status)
  put(b .. ':low_stock', status == 'low_stock' and '1' or '0')
  local detail = cjson.encode({product_id = p, total = total, available = avail,
                               status = status, warehouses = per})
  put(product_key(p), detail)
  if ttl > 0 then redis.call('EXPIRE', b .. ':rows', ttl) end
end
local function guard(p, w, enc, ver, dirty, order)
  local cur = redis.call('HGET', base(p) .. ':rows', w)
  if cur and tonumber(string.match(cur, '^(%d+)')) >= ver then return false end
  redis.call('HSET', base(p) .. ':rows', w, enc)
  if not dirty[p] then dirty[p] = {}; order[#order + 1] = p end
  dirty[p][w] = true
  return true
end
"""

# ARGV: prefix, tags, ttl, processed_ttl, then 7 per update:
#   event_id, product, warehouse, version, available, reserved, threshold
_APPLY = (
    r"""
local prefix, tags, ttl, pttl = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4])
"""
    + _RECOMPUTE
    + r"""
local dirty, order, missing, seen = {}, {}, {}, {}
local applied, dup, stale = 0, 0, 0
for i = 5, #ARGV, 7 do
  local p, w, ver = ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  if not redis.call('SET', prefix .. ':event:processed:' .. ARGV[i], '1', 'NX', 'EX', pttl) then
    dup = dup + 1
  elseif redis.call('EXISTS', base(p) .. ':rows') == 0 and not dirty[p] then
    if not seen[p] then seen[p] = true; missing[#missing + 1] = p end
  else
    local enc = ARGV[i + 3] .. ':' .. ARGV[i + 4] .. ':' .. ARGV[i + 5] .. ':' .. ARGV[i + 6]
    if guard(p, w, enc, ver, dirty, order) then applied = applied + 1 else stale = stale + 1 end
  end
end
for _, p in ipairs(order) do recompute(p) end
return {applied, dup, stale, missing}
"""
)

# ARGV: prefix, tags, ttl, then per product: product, n, and n x "warehouse:v:a:r:t"
# (one argument per row: packing arguments is most of redis-py's cost when warming)
_FILL = (
    r"""
local prefix, tags, ttl = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3])
"""
    + _RECOMPUTE
    + r"""
local dirty, order = {}, {}
local i = 4
while i <= #ARGV do
  local p, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  for _ = 1, n do
    local w, enc = string.match(ARGV[i], '^([^:]+):(.*)$')
    guard(p, w, enc, tonumber(string.match(enc, '^(%d+)')), dirty, order)
    i = i + 1
  end
  if not dirty[p] then dirty[p] = {}; order[#order + 1] = p end
end
for _, p in ipairs(order) do recompute(p) end
return #order
"""
)


class RedisStockCache:
    def __init__(
        self,
        client: redis.Redis,
        keys: CacheKeys | None = None,
        ttl_seconds: int = 300,
        target: str = "redis",
    ) -> None:
        self.client = client
        self.keys = keys or CacheKeys()
        self.ttl = ttl_seconds
        self.target = target
        self._apply = client.register_script(_APPLY)
        self._fill = client.register_script(_FILL)
        self._head = [self.keys.prefix, "1" if self.keys.hash_tags else "0", str(self.ttl)]

    def apply(self, updates: Sequence[StockUpdate]) -> ApplyResult:
        if not updates:
            return ApplyResult(0, 0, 0, ())
        args: list[Any] = [*self._head, PROCESSED_TTL_SECONDS]
        for u in updates:
            r = u.row
            args += (
                u.event_id,
                u.product_id,
                r.warehouse_id,
                r.version,
                r.available,
                r.reserved,
                r.threshold,
            )
        applied, dup, stale, missing = self._call(self._apply, args)
        return ApplyResult(int(applied), int(dup), int(stale), tuple(_text(p) for p in missing))

    def fill(self, products: Mapping[str, Sequence[RowState]]) -> None:
        if not products:
            return
        args: list[Any] = list(self._head)
        for product_id, rows in products.items():
            args += (product_id, len(rows))
            args += [
                f"{r.warehouse_id}:{r.version}:{r.available}:{r.reserved}:{r.threshold}"
                for r in rows
            ]
        self._call(self._fill, args)

    def claim_events(self, event_ids: Sequence[str]) -> list[bool]:
        pipe = self.client.pipeline(transaction=False)
        for event_id in event_ids:
            pipe.set(self.keys.processed(event_id), "1", nx=True, ex=PROCESSED_TTL_SECONDS)
        return [bool(x) for x in self._run(pipe.execute)]

    def processed(self, event_ids: Sequence[str]) -> list[bool]:
        if not event_ids:
            return []
        found = self._run(lambda: self.client.mget([self.keys.processed(e) for e in event_ids]))
        return [x is not None for x in found]

    def heartbeat(self, name: str, payload: str, ttl_seconds: int) -> None:
        self._run(lambda: self.client.set(self._beat(name), payload, ex=ttl_seconds))

    def heartbeats(self, prefix: str) -> dict[str, str]:
        pattern = self._beat(prefix) + "*"
        keys = [_text(k) for k in self._run(lambda: list(self.client.scan_iter(pattern, 500)))]
        values = self._run(lambda: self.client.mget(keys)) if keys else []
        start = len(self._beat(""))
        return {k[start:]: _text(v) for k, v in zip(keys, values, strict=True) if v is not None}

    def _beat(self, name: str) -> str:
        return f"stockctl:heartbeat:{name}"

    def get_products(self, product_ids: Sequence[str]) -> dict[str, ProductStock | None]:
        pipe = self.client.pipeline(transaction=False)
        for product_id in product_ids:
            pipe.hgetall(self.keys.rows(product_id))
        found = self._run(pipe.execute)
        out: dict[str, ProductStock | None] = {}
        for product_id, flat in zip(product_ids, found, strict=True):
            if not flat:
                out[product_id] = None
                continue
            rows = sorted(
                (RowState.decode(_text(w), _text(v)) for w, v in flat.items()),
                key=lambda r: r.warehouse_id,
            )
            out[product_id] = ProductStock(product_id, tuple(rows))
        return out

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
        return [None if v is None else _text(v) for v in self._run(lambda: self.client.mget(keys))]

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
        names = {*warehouses, *(_text(w) for w in held)}
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
        info = self._run(self.client.info)
        hits, misses = self.get_keys([self._meta("reads:hits"), self._meta("reads:misses")])
        ours_h, ours_m = int(hits or 0), int(misses or 0)
        return {
            "backend": "redis",
            "target": self.target,
            "keys": int(self._run(self.client.dbsize)),
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

    def _call(self, script: Any, args: list[Any]) -> Any:
        return self._run(lambda: script(keys=[], args=args))

    def _run(self, fn: Any) -> Any:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise CacheUnavailable(f"redis unavailable at {self.target}: {exc}") from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
