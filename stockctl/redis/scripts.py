"""The cache's Lua scripts: the projection of ``stockctl.core.projection`` run inside Redis.

``APPLY`` (in ``apply_script``) de-duplicates (when markers are on), version-guards and writes a
batch of stock updates; ``FILL`` writes whole products (warm, read-through, sync); ``GETS`` reads
keys of many slots on one cluster node. They implement the same keys, guard and totals as the
embedded cache does in Python, and one test suite runs against both.
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
