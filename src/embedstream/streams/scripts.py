"""Lua scripts that make the runtime's multi-step stream operations atomic.

Each script touches one stream and its groups only (the stream is KEYS[1]).
"""

from __future__ import annotations

# Reclaim entries idle past the visibility timeout and report each one's delivery count.
# ARGV: group, consumer, min_idle_ms, cursor, count
# Returns {next_cursor, {{id, {field, value, ...}, deliveries}, ...}}
CLAIM_IDLE = """
local res = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
                       'COUNT', ARGV[5])
local out = {}
for _, entry in ipairs(res[2]) do
  if entry[2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
    local deliveries = 1
    if p[1] then deliveries = p[1][4] end
    out[#out + 1] = {entry[1], entry[2], deliveries}
  end
end
return {res[1], out}
"""

# Take back this consumer's own pending entries (after a restart under a stable name),
# from ARGV[4] on ('-', or '(id' to continue after the last entry taken).
# ARGV: group, consumer, count, start
CLAIM_OWN = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[4], '+', ARGV[3], ARGV[2])
local out = {}
for _, p in ipairs(pending) do
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, p[1])
  if claimed[1] and claimed[1][2] then
    out[#out + 1] = {claimed[1][1], claimed[1][2], p[4] + 1}
  end
end
return out
"""

# Set the idle time of entries that this consumer still owns; others are left alone.
# Idle 0 renews a lease; idle = visibility - backoff schedules a retry; idle = visibility
# hands an entry back at once. The delivery count is not changed (JUSTID).
# ARGV: group, consumer, idle_ms, id...
SET_IDLE_IF_OWNER = """
local n = 0
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    n = n + 1
  end
end
return n
"""

# Reap consumers idle longer than a threshold: first move their pending entries to the
# caller (marked idle past the visibility timeout, so any replica reclaims them at once,
# delivery counts kept), then delete the consumer.
# ARGV: group, consumer (the caller), idle_threshold_ms, visibility_ms, max_entries
# Returns {{name, moved}, ...}
REAP_CONSUMERS = """
local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
local threshold = tonumber(ARGV[3])
local budget = tonumber(ARGV[5])
local out = {}
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['name'] ~= ARGV[2] and tonumber(info['idle']) > threshold then
    local moved = 0
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', budget, info['name'])
    for _, p in ipairs(pending) do
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, p[1], 'IDLE', ARGV[4], 'JUSTID')
      moved = moved + 1
    end
    budget = budget - moved
    if moved == #pending and #pending < tonumber(ARGV[5]) then
      local left = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, info['name'])
      if #left == 0 then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
        out[#out + 1] = {info['name'], moved}
      end
    end
    if budget <= 0 then break end
  end
end
return out
"""

# Trim what every group has acknowledged: entries below the oldest pending entry of any
# group and at or below every group's last-delivered id. ARGV[1], when given, is a
# retention cutoff id: only entries below it go as well (those older than the retention
# window), and a stream without groups is trimmed to it. Without it, a stream without
# groups is left alone. Returns the number of entries removed.
TRIM_ACKED = """
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
local cutoff = ARGV[1]
if #groups == 0 then
  if cutoff == nil or cutoff == '' then return 0 end
  return redis.call('XTRIM', KEYS[1], 'MINID', cutoff)
end
local function parse(id)
  local dash = string.find(id, '-')
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function less(ams, aseq, bms, bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end
local min_ms, min_seq = nil, nil
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local ms, seq
  local summary = redis.call('XPENDING', KEYS[1], info['name'])
  if summary[1] > 0 then
    ms, seq = parse(summary[2])
  else
    ms, seq = parse(info['last-delivered-id'])
    seq = seq + 1
  end
  if min_ms == nil or less(ms, seq, min_ms, min_seq) then min_ms, min_seq = ms, seq end
end
if cutoff ~= nil and cutoff ~= '' then
  local ms, seq = parse(cutoff)
  if less(ms, seq, min_ms, min_seq) then min_ms, min_seq = ms, seq end
end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', min_ms, min_seq))
"""
