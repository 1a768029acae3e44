"""The stock cache on Redis: one Lua call per batch de-duplicates, version-guards and writes.

The scripts implement ``stockctl.core.projection`` (same keys, same guard, same totals); the
embedded cache implements it in Python, and one test suite runs against both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import redis

from stockctl.clients.redis_nodes import CROSS_SLOT, CROSS_SLOT_READ, NodeRouter, Script
from stockctl.core.ports import ApplyResult
from stockctl.core.projection import (
    PROCESSED_TTL_SECONDS,
    CacheKeys,
    ProductStock,
    RowState,
    StockLevel,
    StockUpdate,
)
from stockctl.errors import CacheUnavailable

# The rows hash's field holding "total:available:max_threshold:deadline_ms" of the product
# (deadline 0: no expiry). Warehouse ids start with a letter or digit: no clash.
AGG_FIELD = "#agg"

# Shared by both scripts: key names, row parsing, and the full recompute of a product.
_RECOMPUTE = r"""
local AGG = '#agg'
local function base(p)
  if tags then return prefix .. ':stock:{' .. p .. '}' end
  return prefix .. ':stock:' .. p
end
local function product_key(p)
  if tags then return prefix .. ':product:{' .. p .. '}' end
  return prefix .. ':product:' .. p
end
-- at: the product's deadline (unix ms) shared by all its keys; 0 for no expiry
local function put(key, value, at)
  if at > 0 then redis.call('SET', key, value, 'PXAT', at) else redis.call('SET', key, value) end
end
-- A change that keeps the product's deadline: the key already holds it, so it is kept
-- (KEEPTTL costs about half of PXAT, which updates the expires dict); a key that went
-- missing on its own (evicted) is written with the deadline.
local function keep(key, value, at)
  if at == 0 then
    redis.call('SET', key, value)
  elseif not redis.call('SET', key, value, 'XX', 'KEEPTTL') then
    redis.call('SET', key, value, 'PXAT', at)
  end
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function parse_row(enc)
  local v, a, r, t = string.match(enc, '^(%d+):(%d+):(%d+):(%d+)$')
  return tonumber(v), tonumber(a), tonumber(r), tonumber(t)
end
local function sellable(a, r)
  if a > r then return a - r end
  return 0
end
local function status_of(avail, maxthr)
  if avail <= 0 then return 'out_of_stock' elseif avail <= maxthr then return 'low_stock' end
  return 'in_stock'
end
-- The product detail, written as JSON by hand (ids are [A-Za-z0-9_.-], nothing to escape) so
-- that a change can patch its warehouse's number in place: cjson costs ~9 us per product.
local function detail_head(p, total, avail, status)
  return '{"product_id":"' .. p .. '","total":' .. total .. ',"available":' .. avail ..
         ',"status":"' .. status .. '","warehouses":{'
end
-- raw detail with new totals and the changed warehouses' numbers (changed: w -> {new = n});
-- nil if raw is not our shape or lacks one of them
local function patch_detail(raw, p, total, avail, status, changed)
  local k = string.find(raw, ',"warehouses":{', 1, true)
  if not k then return nil end
  local map = string.sub(raw, k + 15)
  for w, c in pairs(changed) do
    local _, e = string.find(map, '"' .. w .. '":', 1, true)
    if not e then return nil end
    local _, d = string.find(map, '^%d+', e + 1)
    if not d then return nil end
    map = string.sub(map, 1, e) .. c.new .. string.sub(map, d + 1)
  end
  return detail_head(p, total, avail, status) .. map
end
local function agg_of(total, avail, maxthr, at)
  return total .. ':' .. avail .. ':' .. maxthr .. ':' .. at
end
-- From every row of the product: every key rewritten, the rows hash given the deadline.
local function recompute(p, at)
  local b = base(p)
  local flat = redis.call('HGETALL', b .. ':rows')
  local total, avail, maxthr, names, per = 0, 0, 0, {}, {}
  for j = 1, #flat, 2 do
    local w = flat[j]
    if w ~= AGG then
      local _, a, r, t = parse_row(flat[j + 1])
      local s = sellable(a, r)
      total = total + a
      avail = avail + s
      if t > maxthr then maxthr = t end
      names[#names + 1] = w
      per[w] = s
      put(b .. ':warehouse:' .. w, s, at)
    end
  end
  table.sort(names)
  local body = {}
  for n, w in ipairs(names) do body[n] = '"' .. w .. '":' .. per[w] end
  local status = status_of(avail, maxthr)
  put(b .. ':total', total, at)
  put(b .. ':available', avail, at)
  put(b .. ':status', status, at)
  put(b .. ':low_stock', status == 'low_stock' and '1' or '0', at)
  put(product_key(p), detail_head(p, total, avail, status) .. table.concat(body, ',') .. '}}', at)
  redis.call('HSET', b .. ':rows', AGG, agg_of(total, avail, maxthr, at))
  if at > 0 then
    redis.call('PEXPIREAT', b .. ':rows', at)
  else
    redis.call('PERSIST', b .. ':rows')
  end
end
"""

# ARGV: prefix, tags, ttl, processed_ttl (0: no markers), then per update its row packed in one
# argument, "product:warehouse:version:available:reserved:threshold" (ids never hold ':'),
# after its event id when there are markers. One packed argument instead of seven costs less
# to send and to receive, and the row is stored as it came, with no number formatting.
# Incremental: an applied row moves its product's totals (#agg) by its difference from the row
# it replaces; only the keys whose values change are written, all with the product's deadline.
# A product is recomputed from all its rows (every key rewritten) only when needed: no #agg,
# the highest threshold lowered, no readable detail, or its deadline to renew.
_APPLY = (
    r"""
local prefix, tags, ttl, pttl = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4])
"""
    + _RECOMPUTE
    + r"""
local state, order, missing = {}, {}, {}
local applied, dup, stale = 0, 0, 0
local stride = pttl > 0 and 2 or 1
for i = 5, #ARGV, stride do
  local p, w, vs, rest = string.match(ARGV[i + stride - 1], '^([^:]+):([^:]+):(%d+):(.*)$')
  local ver = tonumber(vs)
  if pttl > 0 and not redis.call('SET', prefix .. ':event:processed:' .. ARGV[i], '1', 'NX',
                                 'EX', pttl) then
    dup = dup + 1
  else
    local st = state[p]
    if st == nil then
      local rows = base(p) .. ':rows'
      local got = redis.call('HMGET', rows, w, AGG)
      st = {full = false, rows = {[w] = got[1]}, w = {}}
      local t, a, m, at
      if got[2] then t, a, m, at = string.match(got[2], '^(%d+):(%d+):(%d+):(%d+)$') end
      if t then
        st.total, st.avail, st.maxthr, st.at = tonumber(t), tonumber(a), tonumber(m), tonumber(at)
        st.total0, st.avail0, st.status0 = st.total, st.avail, status_of(st.avail, st.maxthr)
      elseif redis.call('EXISTS', rows) == 1 then
        st.full = true
      else
        st = false
        missing[#missing + 1] = p
      end
      state[p] = st
      if st then order[#order + 1] = p end
    elseif st and st.rows[w] == nil then
      st.rows[w] = redis.call('HGET', base(p) .. ':rows', w)
    end
    if st then
      local cur = st.rows[w]
      local ov, oa, orr, ot = 0, 0, 0, 0
      if cur then ov, oa, orr, ot = parse_row(cur) end
      if cur and ov >= ver then
        stale = stale + 1
      else
        local sa, sr, stt = string.match(rest, '^(%d+):(%d+):(%d+)$')
        local na, nr, nt = tonumber(sa), tonumber(sr), tonumber(stt)
        st.rows[w] = vs .. ':' .. rest
        applied = applied + 1
        local s, os = sellable(na, nr), sellable(oa, orr)
        if st.w[w] == nil then st.w[w] = {old = cur and os or -1} end
        st.w[w].new = s
        if not st.full then
          st.total = st.total + na - oa
          st.avail = st.avail + s - os
          if nt >= st.maxthr then st.maxthr = nt
          elseif cur and ot >= st.maxthr and nt < ot then st.full = true end
        end
      end
    end
  end
end
local now = nil
local function clock()
  if not now then now = now_ms() end
  return now
end
for _, p in ipairs(order) do
  local st, b = state[p], base(p)
  -- A changing product gets a fresh deadline once less than half its TTL is left (or it has
  -- none): hot products stay cached, and renewing costs one recompute per half TTL.
  local renew = ttl > 0 and not st.full and next(st.w) ~= nil
                and (st.at == 0 or st.at - clock() < ttl * 500)
  if renew then st.full = true end
  local detail, status = nil, nil
  if not st.full and next(st.w) ~= nil then
    status = status_of(st.avail, st.maxthr)
    local raw = redis.call('GET', product_key(p))
    if raw then detail = patch_detail(raw, p, st.total, st.avail, status, st.w) end
    if not detail then st.full = true end  -- missing, not ours, or a new warehouse
  end
  if next(st.w) ~= nil then  -- the applied rows, and the moved totals unless recomputed below
    local hset = {'HSET', b .. ':rows'}
    for w, _ in pairs(st.w) do hset[#hset + 1] = w; hset[#hset + 1] = st.rows[w] end
    if detail then
      hset[#hset + 1] = AGG
      hset[#hset + 1] = agg_of(st.total, st.avail, st.maxthr, st.at)
    end
    redis.call(unpack(hset))
  end
  if st.full then
    local at = 0
    local left = redis.call('PTTL', b .. ':rows')
    if renew or (left <= 0 and ttl > 0) then at = clock() + ttl * 1000
    elseif left > 0 then at = clock() + left end
    recompute(p, at)
  elseif detail then
    local at = st.at
    for w, c in pairs(st.w) do
      if c.new ~= c.old then keep(b .. ':warehouse:' .. w, c.new, at) end
    end
    if st.total ~= st.total0 then keep(b .. ':total', st.total, at) end
    if st.avail ~= st.avail0 then keep(b .. ':available', st.avail, at) end
    if status ~= st.status0 then
      keep(b .. ':status', status, at)
      keep(b .. ':low_stock', status == 'low_stock' and '1' or '0', at)
    end
    keep(product_key(p), detail, at)
  end
end
return {applied, dup, stale, missing}
"""
)

# ARGV: prefix, tags, ttl, then per product: product, n, and n x "warehouse:v:a:r:t"
# (one argument per row: packing arguments is most of redis-py's cost when warming).
# Rows pass the version guard; every key of a filled product gets a fresh deadline.
_FILL = (
    r"""
local prefix, tags, ttl = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3])
"""
    + _RECOMPUTE
    + r"""
local at = 0
if ttl > 0 then at = now_ms() + ttl * 1000 end
local i, n_products = 4, 0
while i <= #ARGV do
  local p, n = ARGV[i], tonumber(ARGV[i + 1])
  local rows = base(p) .. ':rows'
  i = i + 2
  for _ = 1, n do
    local w, enc = string.match(ARGV[i], '^([^:]+):(.*)$')
    local cur = redis.call('HGET', rows, w)
    if not cur or tonumber(string.match(cur, '^(%d+)')) < tonumber(string.match(enc, '^(%d+)')) then
      redis.call('HSET', rows, w, enc)
    end
    i = i + 1
  end
  recompute(p, at)
  n_products = n_products + 1
end
return n_products
"""
)


# ARGV: product keys to read (on a cluster: the keys of one node, many slots)
_GETS = r"""
local out = {}
for i = 1, #ARGV do out[i] = redis.call('GET', ARGV[i]) end
return out
"""


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
        # "all": the seed's catalog:event:processed:{id} marker for every event; otherwise
        # none for stock events, whose version guard already makes a replay a no-op.
        self.markers = dedupe_markers == "all"
        flags = CROSS_SLOT if self.router.cluster else ""
        self._apply = Script(flags + _APPLY)
        self._fill = Script(flags + _FILL)
        self._gets = Script((CROSS_SLOT_READ if self.router.cluster else "") + _GETS)
        self._head = [self.keys.prefix, "1" if self.keys.hash_tags else "0", str(self.ttl)]

    def apply(self, updates: Sequence[StockUpdate]) -> ApplyResult:
        if not updates:
            return ApplyResult(0, 0, 0, ())
        if self.markers and self.router.cluster:
            return self._apply_marked(updates)
        return self._apply_on_nodes(updates, self.dedupe_ttl if self.markers else 0)

    def _apply_marked(self, updates: Sequence[StockUpdate]) -> ApplyResult:
        """The seed's markers on a cluster, where an event's marker lives in another slot
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
            packed = [
                f"{u.product_id}:{r.warehouse_id}:{r.version}:{r.available}:{r.reserved}:"
                f"{r.threshold}"
                for u in group
                if (r := u.row)
            ]
            if not marker_ttl:
                return self._apply(node, head + packed)
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
                    f"{r.warehouse_id}:{r.version}:{r.available}:{r.reserved}:{r.threshold}"
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


def _product_of(u: StockUpdate) -> str:
    return u.product_id


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
