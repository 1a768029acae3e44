"""The cache's Lua scripts: the projection of ``stockctl.core.projection`` run inside Redis.

``APPLY`` de-duplicates (when markers are on), version-guards and writes a batch of stock
updates; ``FILL`` writes whole products (warm, read-through, sync); ``GETS`` reads keys of many
slots on one cluster node. They implement the same keys, guard and totals as the embedded
cache does in Python, and one test suite runs against both.
"""

from __future__ import annotations

# The rows hash's field holding "total:available:max_threshold:deadline_ms" of the product
# (deadline 0: no expiry). Warehouse ids start with a letter or digit: no clash.
AGG_FIELD = "#agg"

# Shared by both scripts: key names, row parsing, and the full recompute of a product.
RECOMPUTE = r"""
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
-- missing on its own (evicted) is written with the deadline (at, and as text: ats).
local function keep(key, value, at, ats)
  if at == 0 then
    redis.call('SET', key, value)
  elseif not redis.call('SET', key, value, 'XX', 'KEEPTTL') then
    redis.call('SET', key, value, 'PXAT', ats)
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

# ARGV: prefix, tags, ttl, processed_ttl (0: no markers), then the updates, each a row packed as
# "product:warehouse:sellable:version:available:reserved:threshold" (ids never hold ':';
# sellable = max(available - reserved, 0), formatted by the caller): with markers, one argument
# each after its event id; without, all in one argument, a line each, sorted by product (one
# argument costs redis-py and Redis less than a thousand). The row's
# "version:available:reserved:threshold" is stored as it came.
# Incremental: an applied row moves its product's totals (#agg) by its difference from the row
# it replaces; only the keys whose values change are written, all with the product's deadline.
# A product is recomputed from all its rows (every key rewritten) only when needed: no #agg,
# the highest threshold lowered, no readable detail, or its deadline to renew.
# Cost (Redis 7.0, 2 cores): a redis.call is 2.5-4 us, and formatting a Lua number as text
# (tostring, a number argument to redis.call, '..' with a number) is ~0.4 us of printf: the
# script passes the strings it was given or read (versions, sellable, threshold, deadline)
# and formats only a product's changed totals, once each.
APPLY = (
    r"""
local prefix, tags, ttl, pttl = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3]), tonumber(ARGV[4])
"""
    + RECOMPUTE
    + r"""
-- raw with the new head and the changed warehouses' numbers; nil if raw is not our shape or
-- lacks one of them (a new warehouse)
local function patch(raw, head, st)
  local k = string.find(raw, ',"warehouses":{', 1, true)
  if not k then return nil end
  local pos = k + 15
  if #st.list == 1 then  -- the usual case: one string built, from two slices of raw
    local w = st.list[1]
    local _, e = string.find(raw, '"' .. w .. '":', pos, true)
    if not e then return nil end
    local _, d = string.find(raw, '^%d+', e + 1)
    if not d then return nil end
    return head .. string.sub(raw, pos, e) .. st.w[w].ns .. string.sub(raw, d + 1)
  end
  local map = string.sub(raw, pos)
  for _, w in ipairs(st.list) do
    local _, e = string.find(map, '"' .. w .. '":', 1, true)
    if not e then return nil end
    local _, d = string.find(map, '^%d+', e + 1)
    if not d then return nil end
    map = string.sub(map, 1, e) .. st.w[w].ns .. string.sub(map, d + 1)
  end
  return head .. map
end
local ROW = '^([^:]+):([^:]+):(%d+):((%d+):(%d+):%d+:(%d+))$'
local ROWS = '([^:\n]+):([^:]+):(%d+):((%d+):(%d+):%d+:(%d+))'
local AGG_RE = '^(%d+):(%d+):(%d+):(%d+)$'
local OLD = '^(%d+):(%d+):(%d+):(%d+)$'
local missing = {}
local applied, dup, stale = 0, 0, 0
local now = nil
local function clock()
  if not now then now = now_ms() end
  return now
end
-- Updates of any products, in order: absorb() reads each product's state into a table once
-- and moves it by each row; flush() writes every product's keys once.
local function absorb(state, order, p, w, ss, row, vs, sa, stt)
  local st = state[p]
  if st == nil then
    local b = base(p)
    local got = redis.call('HMGET', b .. ':rows', w, AGG)
    local t, a, m, at
    if got[2] then t, a, m, at = string.match(got[2], AGG_RE) end
    if t then  -- one constructor: a table that grows field by field is rehashed 4 times
      local nt, na, nm = tonumber(t), tonumber(a), tonumber(m)
      st = {b = b, full = false, rows = {[w] = got[1]}, w = {}, list = {}, ts = t, as = a,
            ms = m, ats = at, total = nt, avail = na, maxthr = nm, at = tonumber(at),
            total0 = nt, avail0 = na, status0 = status_of(na, nm)}
    elseif redis.call('EXISTS', b .. ':rows') == 1 then
      st = {b = b, full = true, rows = {[w] = got[1]}, w = {}, list = {}}
    else
      st = false
      missing[#missing + 1] = p
    end
    state[p] = st
    if st then order[#order + 1] = p end
  elseif st and st.rows[w] == nil then
    st.rows[w] = redis.call('HGET', st.b .. ':rows', w)
  end
  if st then
    local cur = st.rows[w]
    local ov, oa, orr, ot
    if cur then ov, oa, orr, ot = string.match(cur, OLD) end
    if cur and tonumber(ov) >= tonumber(vs) then
      stale = stale + 1
    else
      st.rows[w] = row
      applied = applied + 1
      local s, os = tonumber(ss), 0
      if cur then
        oa, orr, ot = tonumber(oa), tonumber(orr), tonumber(ot)
        if oa > orr then os = oa - orr end
      else
        oa, ot = 0, 0
      end
      local c = st.w[w]
      if c == nil then
        st.w[w] = {old = cur and os or -1, new = s, ns = ss}
        st.list[#st.list + 1] = w
      else
        c.new, c.ns = s, ss
      end
      if not st.full then
        local nt = tonumber(stt)
        st.total = st.total + tonumber(sa) - oa
        st.avail = st.avail + s - os
        if nt > st.maxthr then st.maxthr, st.ms = nt, stt
        elseif nt < ot and ot >= st.maxthr then st.full = true end
      end
    end
  end
end
local function flush(state, order)
  for _, p in ipairs(order) do
    local st = state[p]
    local b, changed = st.b, #st.list > 0
    -- A changing product gets a fresh deadline once less than half its TTL is left (or it has
    -- none): hot products stay cached, and renewing costs one recompute per half TTL.
    local renew = ttl > 0 and not st.full and changed and
                  (st.at == 0 or st.at - clock() < ttl * 500)
    if renew then st.full = true end
    local detail, status, ts, as = nil, nil, st.ts, st.as
    if not st.full and changed then
      if st.total ~= st.total0 then ts = tostring(st.total) end
      if st.avail ~= st.avail0 then as = tostring(st.avail) end
      status = status_of(st.avail, st.maxthr)
      local raw = redis.call('GET', product_key(p))
      if raw then detail = patch(raw, detail_head(p, ts, as, status), st) end
      if not detail then st.full = true end  -- missing, not ours, or a new warehouse
    end
    if changed then  -- the applied rows, and the moved totals unless recomputed below
      local w1 = st.list[1]
      if detail and #st.list == 1 then  -- the usual case, without a table to unpack
        redis.call('HSET', b .. ':rows', w1, st.rows[w1], AGG,
                   ts .. ':' .. as .. ':' .. st.ms .. ':' .. st.ats)
      else
        local hset = {'HSET', b .. ':rows'}
        for n, w in ipairs(st.list) do hset[2 * n + 1] = w; hset[2 * n + 2] = st.rows[w] end
        if detail then
          hset[#hset + 1] = AGG
          hset[#hset + 1] = ts .. ':' .. as .. ':' .. st.ms .. ':' .. st.ats
        end
        redis.call(unpack(hset))
      end
    end
    if st.full then
      local at = 0
      local left = redis.call('PTTL', b .. ':rows')
      if renew or (left <= 0 and ttl > 0) then at = clock() + ttl * 1000
      elseif left > 0 then at = clock() + left end
      recompute(p, at)
    elseif detail then
      local at, ats = st.at, st.ats
      for _, w in ipairs(st.list) do
        local c = st.w[w]
        if c.new ~= c.old then keep(b .. ':warehouse:' .. w, c.ns, at, ats) end
      end
      if ts ~= st.ts then keep(b .. ':total', ts, at, ats) end
      if as ~= st.as then keep(b .. ':available', as, at, ats) end
      if status ~= st.status0 then
        keep(b .. ':status', status, at, ats)
        keep(b .. ':low_stock', status == 'low_stock' and '1' or '0', at, ats)
      end
      keep(product_key(p), detail, at, ats)
    end
  end
end
-- The usual case, one update of a product not next to another of it (no markers): the same
-- guard and writes as absorb() and flush(), in locals (a product's state table costs more
-- than its keys' reads). False, having written nothing, where the state table is needed: no
-- #agg, the highest threshold lowered, the deadline to renew, a detail it cannot patch.
local function one(p, w, ss, row, vs, sa, stt)
  local b = base(p)
  local rk = b .. ':rows'
  local got = redis.call('HMGET', rk, w, AGG)
  local cur, ts, as, ms, ats = got[1], nil, nil, nil, nil
  if got[2] then ts, as, ms, ats = string.match(got[2], AGG_RE) end
  if not ts then return false end
  local total, avail, maxthr = tonumber(ts), tonumber(as), tonumber(ms)
  local na, nt, s = tonumber(sa), tonumber(stt), tonumber(ss)
  local os, ot, ntotal, navail = -1, 0, total + na, avail + s
  if cur then
    local ov, oa, orr, ot_ = string.match(cur, OLD)
    if tonumber(ov) >= tonumber(vs) then
      stale = stale + 1
      return true
    end
    oa, orr, ot = tonumber(oa), tonumber(orr), tonumber(ot_)
    if oa > orr then os = oa - orr else os = 0 end
    ntotal, navail = ntotal - oa, navail - os
  end
  local nms = ms
  if nt > maxthr then nms = stt elseif nt < ot and ot >= maxthr then return false end
  local at = tonumber(ats)
  if ttl > 0 and (at == 0 or at - clock() < ttl * 500) then return false end
  local nts, nas = ts, as
  if ntotal ~= total then nts = tostring(ntotal) end
  if navail ~= avail then nas = tostring(navail) end
  local status = status_of(navail, tonumber(nms))
  local pk = product_key(p)
  local raw = redis.call('GET', pk)
  if not raw then return false end
  local k = string.find(raw, ',"warehouses":{', 1, true)
  if not k then return false end
  local _, e = string.find(raw, '"' .. w .. '":', k + 15, true)
  if not e then return false end
  local _, d = string.find(raw, '^%d+', e + 1)
  if not d then return false end
  applied = applied + 1
  redis.call('HSET', rk, w, row, AGG, nts .. ':' .. nas .. ':' .. nms .. ':' .. ats)
  if s ~= os then keep(b .. ':warehouse:' .. w, ss, at, ats) end
  if nts ~= ts then keep(b .. ':total', nts, at, ats) end
  if nas ~= as then keep(b .. ':available', nas, at, ats) end
  if status ~= status_of(avail, maxthr) then
    keep(b .. ':status', status, at, ats)
    keep(b .. ':low_stock', status == 'low_stock' and '1' or '0', at, ats)
  end
  keep(pk, detail_head(p, nts, nas, status) .. string.sub(raw, k + 15, e) .. ss ..
       string.sub(raw, d + 1), at, ats)
  return true
end
local function single(p, w, ss, row, vs, sa, stt)
  local state, order = {}, {}
  absorb(state, order, p, w, ss, row, vs, sa, stt)
  flush(state, order)
end
if pttl > 0 then
  local state, order = {}, {}
  for i = 5, #ARGV, 2 do
    if redis.call('SET', prefix .. ':event:processed:' .. ARGV[i], '1', 'NX', 'EX', ARGV[4]) then
      absorb(state, order, string.match(ARGV[i + 1], ROW))
    else
      dup = dup + 1
    end
  end
  flush(state, order)
else
  -- A run of one product's rows (the caller sorts by product) is absorbed and flushed once;
  -- a lone row goes to one(). A row is held (p1...) until the next shows which it is.
  local p1, w1, ss1, row1, vs1, sa1, stt1
  local run, state, order = nil, nil, nil
  for p, w, ss, row, vs, sa, stt in string.gmatch(ARGV[5] or '', ROWS) do
    if run == p then
      absorb(state, order, p, w, ss, row, vs, sa, stt)
    else
      if run then
        flush(state, order)
        run = nil
      elseif p1 == p then
        run, state, order = p, {}, {}
        absorb(state, order, p1, w1, ss1, row1, vs1, sa1, stt1)
        absorb(state, order, p, w, ss, row, vs, sa, stt)
      elseif p1 and not one(p1, w1, ss1, row1, vs1, sa1, stt1) then
        single(p1, w1, ss1, row1, vs1, sa1, stt1)
      end
      if run then p1 = nil else p1, w1, ss1, row1, vs1, sa1, stt1 = p, w, ss, row, vs, sa, stt end
    end
  end
  if run then
    flush(state, order)
  elseif p1 and not one(p1, w1, ss1, row1, vs1, sa1, stt1) then
    single(p1, w1, ss1, row1, vs1, sa1, stt1)
  end
end
return {applied, dup, stale, missing}
"""
)

# ARGV: prefix, tags, ttl, then per product: product, n, and n x "warehouse:v:a:r:t"
# (one argument per row: packing arguments is most of redis-py's cost when warming).
# Rows pass the version guard; every key of a filled product gets a fresh deadline.
FILL = (
    r"""
local prefix, tags, ttl = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3])
"""
    + RECOMPUTE
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
GETS = r"""
local out = {}
for i = 1, #ARGV do out[i] = redis.call('GET', ARGV[i]) end
return out
"""
