"""The cache's event script, ``APPLY``: a batch of stock updates de-duplicated (when markers are
on), version-guarded and written, with the keys, guard and totals of ``stockctl.redis.scripts``
(whose ``RECOMPUTE`` it shares)."""

from __future__ import annotations

from stockctl.redis.scripts import RECOMPUTE

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
# Cost (Redis 7.0, 2 cores): a redis.call is 1.5-3 us, and formatting a Lua number as text
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
local ROWS = '([^:\n]+):([^:\n]+):(%d+):((%d+):(%d+):%d+:(%d+))'
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
