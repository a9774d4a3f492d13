#!lua
-- Apply a session's change log atomically (a delta, never the whole blob).
-- KEYS[1]  the session hash   KEYS[2]  its forward   KEYS[3]  its tombstone (one family)
-- ARGV[1]  mode: 'new' (must not exist yet) or 'old' (must exist, and the presented token
--          must be its current one (the hash has its field k:<digest>), or the previous one
--          a plain renew left a forward for)
-- ARGV[2]  presented digest    ARGV[3]  this session's idle timeout (ms)
-- ARGV[4]  absolute timeout of a new session (ms)
-- ARGV[5]  forward TTL (ms)    ARGV[6]  new digest to renew to, or ''
-- ARGV[7]  renew kind: 'rotate' (the old token may still save data for the forward TTL)
--          or 'identity' (the old token keeps no power at all)
-- ARGV[8]  user: '' keep, '-' unbind, '=<id>' bind
-- ARGV[9]  '1' when the change log touches an identity key (never through a forward)
-- ARGV[10] idle timeout (ms) to store as the session's own (set_lifetime), or ''
-- ARGV[11] absolute timeout (ms) to apply from the session's creation (set_lifetime), or ''
--          (a lifetime change through a forward is ignored: data only)
-- ARGV[12] n sets, then n field/value pairs; then n deletes, n fields; then n incrs, pairs;
--          then n defaults (setdefault: written only where the field is absent), pairs
-- Reply: {status, now, created, deadline, each incr's result (a string past 2**53)...,
--         then each default's stored value (this request's, or the first writer's)}
--   status 1 saved | 2 saved through a renew forward (data only: a renew of the old token
--   is ignored) | 0 gone (expired, or a token that lost its power: nothing written)
--   | -1 destroyed (tombstone; for a new session: evicted by a newer login in flight)
--   | -2 exists (new token taken)
--   | -3 the field at reply[2] is not an integer or would overflow (nothing written)
--   A key that is not a hash: HMGET's WRONGTYPE error (nothing written).
-- Everything that can refuse is checked before the first write; writes go in chunks of at
-- most 1000 arguments (unpack takes at most 8000 values), and the hash gets its TTL in the
-- same script.
local data, fwd, tomb = KEYS[1], KEYS[2], KEYS[3]
local mode, digest = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local forwarded = false
local created, deadline
local own_idle, own_absolute = ARGV[10], ARGV[11]
if mode == 'new' then
  if redis.call('EXISTS', data) == 1 then return {-2} end
  -- a tombstone before the session was ever written: a newer login of its user evicted
  -- this one while it was in flight (max_sessions_per_user)
  if redis.call('EXISTS', tomb) == 1 then return {-1} end
  created, deadline = now, now + tonumber(own_absolute ~= '' and own_absolute or ARGV[4])
else
  -- a key that is not a hash: WRONGTYPE, the script's error (nothing written)
  local meta = redis.call('HMGET', data, 'm:c', 'm:x', 'k:' .. digest)
  if not meta[1] then
    if redis.call('EXISTS', tomb) == 1 then return {-1} end
    return {0}
  end
  if not meta[3] then
    if redis.pcall('GET', fwd) ~= digest then return {0} end
    -- a request still carrying the previous token of a plain renew: data only
    if ARGV[9] == '1' or ARGV[8] ~= '' then return {0} end
    forwarded = true
    own_idle, own_absolute = '', ''
  end
  created, deadline = tonumber(meta[1]) or now, tonumber(meta[2]) or now
  if own_absolute ~= '' then deadline = created + tonumber(own_absolute) end
  if deadline <= now then
    redis.call('DEL', data)
    return {0}
  end
end

-- where each part of the delta starts in ARGV
local nsets = tonumber(ARGV[12])
local sets_at = 13
local ndels = tonumber(ARGV[sets_at + 2 * nsets])
local dels_at = sets_at + 2 * nsets + 1
local nincrs = tonumber(ARGV[dels_at + ndels])
local incrs_at = dels_at + ndels + 1
local ndefaults = tonumber(ARGV[incrs_at + 2 * nincrs])
local defaults_at = incrs_at + 2 * nincrs + 1

-- increments first, each checked by HINCRBY itself (it refuses a non-integer or an overflow
-- without writing). With several, their exact previous strings are read first (one HMGET per
-- 1000), so that a refused one can restore the earlier ones exactly; a single increment needs
-- no undo.
local before = {}
if nincrs > 1 then
  for a = 1, nincrs, 1000 do
    local names = {}
    for j = a, math.min(a + 999, nincrs) do names[#names + 1] = ARGV[incrs_at + 2 * (j - 1)] end
    local values = redis.call('HMGET', data, unpack(names))
    for k = 1, #names do before[a + k - 1] = values[k] end
  end
end
local reply = {forwarded and 2 or 1, now, created, deadline}
for j = 1, nincrs do
  local name = ARGV[incrs_at + 2 * (j - 1)]
  local result = redis.pcall('HINCRBY', data, name, ARGV[incrs_at + 2 * j - 1])
  if type(result) ~= 'number' then
    -- refused for another reason than the value (NOREPLICAS, READONLY, OOM...: the server
    -- refuses a script's first write, so nothing was written): that error is the reply
    local refused = type(result) == 'table' and result.err
      and not string.find(result.err, 'not an integer', 1, true)
      and not string.find(result.err, 'overflow', 1, true)
    if mode == 'new' then
      redis.call('DEL', data)
    else
      for k = j - 1, 1, -1 do
        local undo = ARGV[incrs_at + 2 * (k - 1)]
        if before[k] then
          redis.call('HSET', data, undo, before[k])
        else
          redis.call('HDEL', data, undo)
        end
      end
    end
    if refused then return result end
    return {-3, name}
  end
  if result >= 9007199254740992 or result <= -9007199254740992 then
    result = redis.call('HGET', data, name)  -- past 2**53 a Lua number is inexact: the string
  end
  reply[#reply + 1] = result
end

local function each_chunk(first, last, command, head)
  for a = first, last, 1000 do
    local args = {unpack(head)}
    for b = a, math.min(a + 999, last) do args[#args + 1] = ARGV[b] end
    redis.call(command, data, unpack(args))
  end
end

-- first writer wins: a default is stored only where no other request stored one
for j = 0, ndefaults - 1 do
  local name = ARGV[defaults_at + 2 * j]
  redis.call('HSETNX', data, name, ARGV[defaults_at + 2 * j + 1])
  reply[#reply + 1] = redis.call('HGET', data, name)
end

if ndels > 0 then each_chunk(dels_at, dels_at + ndels - 1, 'HDEL', {}) end
local stamp = string.format('%d', now)
local head = {'m:a', stamp}
if mode == 'new' then
  head = {'m:a', stamp, 'm:c', stamp, 'm:x', string.format('%d', deadline), 'k:' .. digest, '1'}
end
if own_idle ~= '' then
  head[#head + 1] = 'm:i'
  head[#head + 1] = own_idle
end
if own_absolute ~= '' and mode ~= 'new' then
  head[#head + 1] = 'm:x'
  head[#head + 1] = string.format('%d', deadline)
end
local renew_to = ARGV[6]
if forwarded then renew_to = '' end
if renew_to ~= '' then  -- the presented token is the current one here: its field goes
  redis.call('HDEL', data, 'k:' .. digest)
  head[#head + 1] = 'k:' .. renew_to
  head[#head + 1] = '1'
end
local user = ARGV[8]
if string.sub(user, 1, 1) == '=' then
  head[#head + 1] = 'm:u'
  head[#head + 1] = string.sub(user, 2)
elseif user == '-' then
  redis.call('HDEL', data, 'm:u')
end
if #head == 2 and nsets < 500 then  -- the usual save: one HSET, no table built
  redis.call('HSET', data, head[1], head[2], unpack(ARGV, sets_at, sets_at + 2 * nsets - 1))
elseif nsets > 0 then
  each_chunk(sets_at, sets_at + 2 * nsets - 1, 'HSET', head)
else
  redis.call('HSET', data, unpack(head))
end
if renew_to ~= '' then
  redis.call('SET', fwd, ARGV[7] == 'rotate' and digest or '', 'PX', ARGV[5])
end
redis.call('PEXPIRE', data, math.min(tonumber(ARGV[3]), deadline - now))
return reply
