"""The Lua scripts that make cluster-wide decisions atomic: Redis runs each one alone, so N instances admit,
claim, release and end tasks exactly as one would (design: specs/README.md, "Scale-out state").

Keys (prefix `lo:`): `t:{task}` hash (request, pool, priority, state queued|running|done, owner, replica, cancel),
`t:{task}:ev` the task's event stream, `p:{pool}:q:interactive` / `p:{pool}:q:batch` the pool's queue lanes,
`p:{pool}:run` in-flight count per replica, `running` hash task → owning instance, `i:{instance}` its lease.
A replica list argument is JSON `[[replica_id, max_inflight, ready 0|1, engine not queueing 0|1], ...]`, the
calling instance's view (a replica whose engine already queues requests takes no new task, as in one process).
"""

from __future__ import annotations

__all__ = ["ADMIT", "APPEND", "CLAIM", "FINISH", "OPEN", "ORPHAN", "RELEASE", "REQUEUE"]

# Appends the terminal entry once: numbered after the last entry, the task marked done, both keys set to expire.
_TERMINAL = """
local function terminal(task, stream, body, ttl_ms, maxlen)
  local state = redis.call('HGET', task, 'state')
  if not state or state == 'done' then return 0 end
  local first = 0
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  if last then
    local fields = last[2]
    for i = 1, #fields, 2 do if fields[i] == 'n' then first = tonumber(fields[i + 1]) end end
  end
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, first .. '-1', 'f', first, 'n', first + 1, 'b', body, 'end', '1')
  redis.call('HSET', task, 'state', 'done')
  redis.call('PEXPIRE', task, ttl_ms)
  redis.call('PEXPIRE', stream, ttl_ms)
  return 1
end
"""

# The next queued task `instance` may run now: interactive before batch, oldest first; a task bound to its replica
# (kv reuse) waits for it while later ones may go. Lanes, counts and running are keys; replicas decoded JSON. The
# claimer's lease (`i:{instance}`) is set with the claim.
# -> nil | {'expired', task} | {'run', task, replica, request, admitted_ms, queue_position, cancel}
_CLAIM = """
local function claim(lanes, counts, running, lease, instance, replicas, now_ms, prefix, lease_ms)
  local function count(id) return tonumber(redis.call('HGET', counts, id) or '0') end
  local function room(r) return r[3] == 1 and r[4] ~= 0 and count(r[1]) < r[2] end
  local any = false
  for _, r in ipairs(replicas) do if room(r) then any = true end end
  if not any then return nil end
  for _, lane in ipairs(lanes) do
    for _, id in ipairs(redis.call('LRANGE', lane, 0, 63)) do
      local key = prefix .. id
      local t = redis.call('HMGET', key, 'dl', 'aff', 'strict', 'tried', 'state')
      if t[5] ~= 'queued' then
        redis.call('LREM', lane, 1, id)
      elseif tonumber(t[1] or '0') > 0 and now_ms >= tonumber(t[1]) then
        redis.call('LREM', lane, 1, id)
        return {'expired', id}
      else
        local tried = cjson.decode(t[4] or '[]')
        local best, best_load, sticky, sticky_ready = nil, nil, nil, false
        for _, r in ipairs(replicas) do
          local skip = false
          for _, x in ipairs(tried) do if x == r[1] then skip = true end end
          if r[1] == t[2] and r[3] == 1 then sticky_ready = true end
          if not skip and room(r) then
            local load = count(r[1]) / r[2]
            if r[1] == t[2] then sticky = r[1] end
            if best == nil or load < best_load then best, best_load = r[1], load end
          end
        end
        if sticky then best = sticky elseif t[3] == '1' and sticky_ready then best = nil end
        if best then
          redis.call('LREM', lane, 1, id)
          redis.call('HINCRBY', counts, best, 1)
          redis.call('HSET', key, 'state', 'running', 'owner', instance, 'replica', best)
          redis.call('HSET', running, id, instance)
          -- alive now: a lease Redis lost (restarted empty) must not make this task look orphaned before renewal
          redis.call('SET', lease, '1', 'PX', lease_ms)
          local f = redis.call('HMGET', key, 'req', 'at', 'qpos', 'cancel')
          return {'run', id, best, f[1], f[2], f[3], f[4] or ''}
        end
      end
    end
  end
  return nil
end
"""

# KEYS: interactive lane, batch lane, run counts, running, the instance's lease. ARGV: instance, replicas, now
# (epoch ms), task key prefix, lease ms. -> what `claim` returns.
CLAIM = (
    _CLAIM
    + """
return claim(
  {KEYS[1], KEYS[2]}, KEYS[3], KEYS[4], KEYS[5], ARGV[1], cjson.decode(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5])
"""
)

# KEYS: task, interactive lane, batch lane, run counts, running, the instance's lease. ARGV: task id, priority,
# capacity, policy, replicas, lifetime ms, instance, now (epoch ms), task key prefix, lease ms, then the task's hash
# fields. The admitting instance claims at once what can run now (so with room, the task runs where it was
# submitted).
# -> {'dup'} | {'reject', depth} | {'queued', ahead, victim or '', what `claim` returns...}
ADMIT = (
    _CLAIM
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return {'dup'} end
local depth = redis.call('LLEN', KEYS[2]) + redis.call('LLEN', KEYS[3])
local room = false
if depth == 0 then
  for _, r in ipairs(cjson.decode(ARGV[5])) do
    if r[3] == 1 and r[4] ~= 0 and tonumber(redis.call('HGET', KEYS[4], r[1]) or '0') < r[2] then room = true end
  end
end
local victim = ''
if depth >= tonumber(ARGV[3]) and not room then
  if ARGV[4] ~= 'drop-lru' then return {'reject', depth} end
  victim = redis.call('LPOP', KEYS[3])
  if not victim and ARGV[2] == 'interactive' then victim = redis.call('LPOP', KEYS[2]) end
  if not victim then return {'reject', depth} end
end
local ahead = redis.call('LLEN', KEYS[2])
if ARGV[2] == 'batch' then ahead = ahead + redis.call('LLEN', KEYS[3]) end
redis.call('HSET', KEYS[1], 'state', 'queued', 'qpos', ahead, unpack(ARGV, 11))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('RPUSH', ARGV[2] == 'interactive' and KEYS[2] or KEYS[3], ARGV[1])
local claimed = claim(
  {KEYS[2], KEYS[3]}, KEYS[4], KEYS[5], KEYS[6], ARGV[7], cjson.decode(ARGV[5]), tonumber(ARGV[8]), ARGV[9], ARGV[10])
local answer = {'queued', ahead, victim}
for _, v in ipairs(claimed or {}) do table.insert(answer, v) end
return answer
"""
)

# KEYS: running, run counts. ARGV: task, replica. Frees the task's slot once (1), or nothing when it was freed.
RELEASE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) < 0 then redis.call('HSET', KEYS[2], ARGV[2], 0) end
return 1
"""

# KEYS: task, lane. ARGV: task, tried replicas (JSON list). A task the engine never started goes back first.
REQUEUE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'tried', ARGV[2])
redis.call('LPUSH', KEYS[2], ARGV[1])
return 1
"""

# KEYS: task, stream. ARGV: first, next, body, maxlen. An entry of a running task (0: the task ended meanwhile,
# or Redis lost it: its owner stops).
APPEND = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], ARGV[1] .. '-1', 'f', ARGV[1], 'n', ARGV[2], 'b', ARGV[3])
return 1
"""

# KEYS: task, stream. ARGV: body, ttl ms, maxlen. -> 1 when this call wrote the terminal entry.
FINISH = (
    _TERMINAL
    + """
return terminal(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
"""
)

# KEYS: running, task, stream, run counts of the task's pool (or any key when unknown). ARGV: task, dead instance,
# body, ttl ms, maxlen. A task whose owner's lease expired: its slot freed and its terminal entry written, once.
ORPHAN = (
    _TERMINAL
    + """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local replica = redis.call('HGET', KEYS[2], 'replica')
if replica and redis.call('HINCRBY', KEYS[4], replica, -1) < 0 then redis.call('HSET', KEYS[4], replica, 0) end
return terminal(KEYS[2], KEYS[3], ARGV[3], ARGV[4], ARGV[5])
"""
)

# KEYS: task, reader presence, stream. ARGV: seen (-1: from the first event), hold ms, 1 to return the entries
# already written. A reader opens the task's stream in one round trip: nil for an unknown task (nothing is created
# for it), else {where to read from (just before the entry holding event seen + 1), the first event number still
# kept (-1: none yet), the entries from there (when asked)}.
OPEN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
redis.call('HSET', KEYS[1], 'read', '1')
local function first(entry)
  local fields = entry[2]
  for i = 1, #fields, 2 do if fields[i] == 'f' then return tonumber(fields[i + 1]) end end
end
local seen = tonumber(ARGV[1])
local start = '0-0'
if seen >= 0 then
  local entry = redis.call('XREVRANGE', KEYS[3], (seen + 1) .. '-1', '-', 'COUNT', 1)[1]
  if entry then start = first(entry) .. '-0' end
end
local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
local entries = {}
if ARGV[3] == '1' then entries = redis.call('XRANGE', KEYS[3], start, '+') end
return {start, oldest and first(oldest) or -1, entries}
"""
