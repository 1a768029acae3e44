"""The stock cache on Redis: one Lua call per batch de-duplicates, version-guards and writes.

The scripts implement ``stockctl.core.projection`` (same keys, same guard, same totals); the
embedded cache implements it in Python, and one test suite runs against both.
"""

from __future__ import annotations

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
local function recompute(p, changed)
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
  for w, _ in pairs(changed) do put(b .. ':warehouse:' .. w, per[w]) end
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
for _, p in ipairs(order) do recompute(p, dirty[p]) end
return {applied, dup, stale, missing}
"""
)

# ARGV: prefix, tags, ttl, then per product: product, n, and n x (warehouse, v, a, r, t)
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
    local enc = ARGV[i + 1] .. ':' .. ARGV[i + 2] .. ':' .. ARGV[i + 3] .. ':' .. ARGV[i + 4]
    guard(p, ARGV[i], enc, tonumber(ARGV[i + 1]), dirty, order)
    i = i + 5
  end
  if not dirty[p] then dirty[p] = {}; order[#order + 1] = p end
end
for _, p in ipairs(order) do recompute(p, dirty[p]) end
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
            for r in rows:
                args += (r.warehouse_id, r.version, r.available, r.reserved, r.threshold)
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
