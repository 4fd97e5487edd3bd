"""The Lua source of RedisStore's two scripts (batch, spend) and their prelude.

Only redis_store.py loads these. They are the Redis twin of MemoryStore in store.py: the
same windows, leases, tombs and budget periods, and the behavioural suite runs both.
`BATCH_LUA` settles and admits any number of requests in one call (RedisStore sends what
one event-loop iteration queued), each item exactly as a call of its own would, in order:
settlements first, then admissions. Every key of a call is passed in KEYS, six per virtual
key; the store sends keys of one Redis Cluster slot per call, so the scripts are
Cluster-safe.
"""

from llmgate_sidecar.policy.store import LIFETIME_RETRY_MS, SETTLED_MS, TOMB_MS, WINDOW_S

# Shared prelude. Numbers are written back with %d: Redis formats bare Lua numbers with
# exponents once they are large (ms timestamps, micro-dollar budgets).
_PRELUDE = """
local WINDOW, TOMB_MS, SETTLED_MS, IN_FLIGHT = @WINDOW@, @TOMB_MS@, @SETTLED_MS@, 1000
-- The six keys of the virtual key being worked on (KEY_SUFFIXES order): KEYS itself for a
-- call about one key, a slice of KEYS per item in a batch.
local K = KEYS
local function s(n) return string.format('%d', n) end
local function now_ms()
  local n = tonumber(ARGV[1])
  if n >= 0 then return n end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function keep(key, ms)
  local t = redis.call('PTTL', key)
  if t ~= -2 and t < ms then redis.call('PEXPIRE', key, s(ms)) end
end
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end
local function month_bounds(now)
  local z = math.floor(now / 86400000) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  local ny, nm = y, m + 1
  if nm == 13 then ny, nm = y + 1, 1 end
  return days_from_civil(y, m, 1) * 86400000, days_from_civil(ny, nm, 1) * 86400000
end
local LENGTHS = {['1h'] = 3600000, ['1d'] = 86400000, ['7d'] = 604800000,
                 ['30d'] = 2592000000}
local function bounds(period, now)
  local len = LENGTHS[period]
  if len then
    local off = period == '7d' and 345600000 or 0
    local start = now - ((now - off) % len)
    return start, start + len
  elseif period == 'calendar-month' then
    return month_bounds(now)
  end
  return 0, -1
end
local function parse(rec)
  local st, res, bk, est = string.match(rec, '^(%a)|(%-?%d+)|(%-?%d+)|(%-?%d+)$')
  return st, tonumber(res), tonumber(bk), tonumber(est)
end
local function release(res)
  if res > 0 and redis.call('EXISTS', K[6]) == 1 then
    if redis.call('HINCRBY', K[6], 'reserved', -res) < 0 then
      redis.call('HSET', K[6], 'reserved', 0)
    end
  end
end
local function purge(now)
  local dead = redis.call('ZRANGEBYSCORE', K[3], '-inf', s(now), 'LIMIT', 0, 64)
  for _, tid in ipairs(dead) do
    local rec = redis.call('HGET', K[4], tid)
    if rec then
      local st, res, bk, est = parse(rec)
      release(res)
      redis.call('HSET', K[4], tid, string.format('X|0|%d|%d', bk, est))
      redis.call('ZADD', K[5], s(now + TOMB_MS), tid)
      keep(K[5], TOMB_MS + 1000)
      keep(K[4], TOMB_MS + 1000)
    end
    redis.call('ZREM', K[3], tid)
  end
  local gone = redis.call('ZRANGEBYSCORE', K[5], '-inf', s(now), 'LIMIT', 0, 64)
  if #gone > 0 then
    redis.call('HDEL', K[4], unpack(gone))
    redis.call('ZREM', K[5], unpack(gone))
  end
end
-- This period's counters; a new period starts at 0 spent, reservations carry over.
local function budget_state(period, now)
  local start, stop = bounds(period, now)
  local b = redis.call('HMGET', K[6], 'period', 'start', 'spent', 'reserved')
  local spent = 0
  if b[1] == period and tonumber(b[2]) == start then spent = tonumber(b[3]) or 0 end
  return start, stop, spent, tonumber(b[4]) or 0
end
local function budget_write(period, now, start, stop, spent, reserved)
  redis.call('HSET', K[6], 'period', period, 'start', s(start), 'spent', s(spent),
             'reserved', s(reserved))
  local ttl = 400 * 86400000
  if stop >= 0 then ttl = stop - now + 86400000 end
  keep(K[6], ttl)
end
local function window(key, now, limit, cost)
  local cur = math.floor(now / 1000)
  local raw = redis.call('HGETALL', key)
  local live, stale, used = {}, {}, 0
  for i = 1, #raw, 2 do
    local b, v = tonumber(raw[i]), tonumber(raw[i + 1])
    if b > cur - WINDOW then
      used = used + v
      live[#live + 1] = {b, v}
    else
      stale[#stale + 1] = raw[i]
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  if cost > limit then return used, -1 end
  if used + cost <= limit then return used, 0 end
  table.sort(live, function(x, y) return x[1] < y[1] end)
  local freed = 0
  for _, e in ipairs(live) do
    freed = freed + e[2]
    if used - freed + cost <= limit then return used, (e[1] + WINDOW) * 1000 - now end
  end
  return used, WINDOW * 1000
end

-- Check every limit and, only if all pass, consume them all for ticket `id`: {1,
-- rem_requests, rem_tokens, rem_budget} (-1 = no such limit, or unknown) or {0, kind,
-- retry_ms, detail}. Idempotent: a call that is sent again after its answer was lost (the
-- Cluster client retries on a dropped connection) finds `id` admitted and consumes nothing.
local function admit(now, id, rpm, tpm, est, maxpar, budget, period, reserve, lease)
  if redis.call('HEXISTS', K[4], id) == 1 then
    local rb = -1
    if budget >= 0 then
      local _, _, spent, reserved = budget_state(period, now)
      rb = budget - spent - reserved
    end
    return {1, -1, -1, rb}
  end
  local kind, retry, detail = nil, -1, nil
  local function refuse(k, r, d) if r > retry then kind, retry, detail = k, r, d end end
  if maxpar >= 0 and redis.call('ZCOUNT', K[3], '(' .. s(now), '+inf') >= maxpar then
    refuse('parallel', IN_FLIGHT, 'in-flight')
  end
  local used_r, used_t = 0, 0
  if rpm >= 0 then
    local r
    used_r, r = window(K[1], now, rpm, 1)
    if r < 0 then refuse('requests', WINDOW * 1000, 'too-large') elseif r > 0 then
      refuse('requests', r, 'rate') end
  end
  if tpm >= 0 then
    local r
    used_t, r = window(K[2], now, tpm, est)
    if r < 0 then refuse('tokens', WINDOW * 1000, 'too-large') elseif r > 0 then
      refuse('tokens', r, 'rate') end
  end
  local start, stop, spent, reserved = 0, -1, 0, 0
  if budget >= 0 then
    start, stop, spent, reserved = budget_state(period, now)
    if spent >= budget or spent + reserved + reserve > budget then
      if spent < budget and spent + reserve <= budget then
        refuse('budget', IN_FLIGHT, 'in-flight')
      else
        local d = (spent < budget and reserve > budget) and 'too-large' or 'exhausted'
        if stop < 0 then refuse('budget', @LIFETIME@, d) else refuse('budget', stop - now, d) end
      end
    end
  end
  if kind then return {0, kind, retry, detail} end
  local bucket = math.floor(now / 1000)
  local counted = -1
  if rpm >= 0 then
    redis.call('HINCRBY', K[1], s(bucket), 1)
    redis.call('PEXPIRE', K[1], (WINDOW + 1) * 1000)
  end
  if tpm >= 0 then
    counted = est
    redis.call('HINCRBY', K[2], s(bucket), s(est))
    redis.call('PEXPIRE', K[2], (WINDOW + 1) * 1000)
  end
  if budget < 0 then reserve = 0 else
    reserved = reserved + reserve
    budget_write(period, now, start, stop, spent, reserved)
  end
  redis.call('ZADD', K[3], s(now + lease), id)
  redis.call('HSET', K[4], id, string.format('L|%d|%d|%d', reserve, bucket, counted))
  keep(K[3], lease + 1000)
  keep(K[4], lease + TOMB_MS + 1000)
  local rr, rt, rb = -1, -1, -1
  if rpm >= 0 then rr = rpm - used_r - 1 end
  if tpm >= 0 then rt = tpm - used_t - est end
  if budget >= 0 then rb = budget - spent - reserved end
  return {1, rr, rt, rb}
end
-- Book `cost` (and correct the tokens estimate) for ticket `id` once: 1 if booked, 2 if
-- booked for a ticket this Redis did not know (its state was lost: a restart without
-- persistence, a failover), 0 if `id` was already settled. `cost_only`: `id` names a
-- booking of spend made elsewhere (no ticket here); it gets the same settled mark, so a
-- replay of it books nothing twice.
local function settle(now, id, tokens, cost, period, budgeted, cost_only)
  local res, bk, est, known = 0, 0, -1, 1
  local rec = redis.call('HGET', K[4], id)
  if rec then
    local st
    st, res, bk, est = parse(rec)
    if st == 'S' then return 0 end
    redis.call('ZREM', K[3], id)
    if st == 'L' then release(res) end
  elseif not cost_only then
    known = 2
  end
  redis.call('HSET', K[4], id, 'S|0|0|-1')
  redis.call('ZADD', K[5], s(now + SETTLED_MS), id)
  keep(K[4], SETTLED_MS + 1000)
  keep(K[5], SETTLED_MS + 1000)
  if budgeted then
    local start, stop, spent, reserved = budget_state(period, now)
    budget_write(period, now, start, stop, spent + cost, reserved)
  end
  if est >= 0 then
    local delta, cur = tokens - est, math.floor(now / 1000)
    local b = nil
    if bk > cur - WINDOW then b = bk elseif delta > 0 then b = cur end
    if b and redis.call('HINCRBY', K[2], s(b), s(delta)) < 0 then
      redis.call('HSET', K[2], s(b), 0)
    end
    if b then keep(K[2], (WINDOW + 1) * 1000) end
  end
  return known
end
""".replace("@WINDOW@", str(WINDOW_S)).replace("@TOMB_MS@", str(TOMB_MS)).replace(
    "@SETTLED_MS@", str(SETTLED_MS)).replace("@LIFETIME@", str(LIFETIME_RETRY_MS))

# ARGV: now|-1, the number of settlements S, then one argument per item, its fields
# separated by single spaces (one argument each, not one per field: the client encodes
# far fewer arguments): S settlements "key-index id tokens cost period budgeted(1/0)
# cost-only(1/0)", then admissions "key-index id rpm tpm tokens max-parallel budget period
# reserve lease-ms" (-1 = no such limit). Key index i selects KEYS[6i+1 .. 6i+6].
# Returns {now, settle result..., admit result...}: a settle result as `settle` above; an
# admit result {1, rem_requests, rem_tokens, rem_budget} (-1 = no such limit) or
# {0, kind, retry_ms, detail}.
BATCH_LUA = _PRELUDE + """
local now = now_ms()
local out, purged = {now}, {}
local function item(n)
  local f = {}
  for field in string.gmatch(ARGV[n], '[^ ]+') do f[#f + 1] = field end
  local base = tonumber(f[1]) * 6
  K = {KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], KEYS[base + 4], KEYS[base + 5],
       KEYS[base + 6]}
  if not purged[base] then
    purged[base] = true
    purge(now)
  end
  return f
end
local settles = tonumber(ARGV[2])
for n = 3, 2 + settles do
  local f = item(n)
  out[#out + 1] = settle(now, f[2], tonumber(f[3]), tonumber(f[4]), f[5], f[6] == '1',
                         f[7] == '1')
end
for n = 3 + settles, #ARGV do
  local f = item(n)
  out[#out + 1] = admit(now, f[2], tonumber(f[3]), tonumber(f[4]), tonumber(f[5]),
                        tonumber(f[6]), tonumber(f[7]), f[8], tonumber(f[9]), tonumber(f[10]))
end
return out
"""

# ARGV: now|-1, period. KEYS: the six keys of one virtual key.
# Returns {spent, reserved, start, end|-1}.
SPEND_LUA = _PRELUDE + """
local now, period = now_ms(), ARGV[2]
purge(now)
local start, stop, spent, reserved = budget_state(period, now)
return {spent, reserved, start, stop}
"""
