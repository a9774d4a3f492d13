-- Apply a session's change log atomically (a delta, never the whole blob).
-- KEYS[1]  the session hash of the presented token
-- ARGV[1]  mode: 'new' (must not exist yet) or 'old' (must still exist; follows renew forwards)
-- ARGV[2]  key prefix          ARGV[3]  hash tag '{family}:'     ARGV[4]  presented digest
-- ARGV[5]  idle timeout (ms)   ARGV[6]  absolute timeout (ms)    ARGV[7]  forward TTL (ms)
-- ARGV[8]  new digest to renew to, or ''
-- ARGV[9]  user: '' keep, '-' unbind, '=<id>' bind
-- ARGV[10] n sets, then n field/value pairs; then n deletes, n fields; then n incrs, pairs
-- Reply: {status, now, created, deadline, incr results...}
--   status 1 saved | 2 saved through a renew forward (data only: the renew and user change
--   of a stale token are refused) | 0 gone (expired) | -1 destroyed (tombstone)
--   | -2 exists (new token taken) | -3 the field at reply[2] is not an integer or would
--   overflow (nothing written) | -4 the key is not a session hash (nothing written)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix, tag, digest = ARGV[2], ARGV[3], ARGV[4]
local key = KEYS[1]
local forwarded = false

local function tombstoned(d)
  return redis.call('EXISTS', prefix .. ':t:' .. tag .. d) == 1
end

if ARGV[1] == 'new' then
  if redis.call('EXISTS', key) == 1 or tombstoned(digest) then return {-2} end
else
  -- follow renew forwards (a request still carrying an old token saves into the live session)
  local hops = 0
  while redis.call('EXISTS', key) == 0 do
    if tombstoned(digest) then return {-1} end
    local nxt = redis.call('GET', prefix .. ':f:' .. tag .. digest)
    hops = hops + 1
    if not nxt or hops > 8 then return {0} end
    digest = nxt
    key = prefix .. ':s:' .. tag .. digest
    forwarded = true
  end
  if redis.call('TYPE', key).ok ~= 'hash' then return {-4} end
end

-- parse the delta
local i = 10
local sets, dels, incrs = {}, {}, {}
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do sets[#sets + 1] = ARGV[i]; sets[#sets + 1] = ARGV[i + 1]; i = i + 2 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do dels[#dels + 1] = ARGV[i]; i = i + 1 end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do incrs[#incrs + 1] = {ARGV[i], ARGV[i + 1]}; i = i + 2 end

local stamp = string.format('%d', now)
local created, deadline
if ARGV[1] == 'new' then
  created, deadline = now, now + tonumber(ARGV[6])
else
  local meta = redis.call('HMGET', key, 'm:c', 'm:x')
  created, deadline = tonumber(meta[1]) or now, tonumber(meta[2]) or now
end
if deadline <= now then
  redis.call('DEL', key)
  return {0}
end

-- increments first, each checked: a Lua error would not roll back earlier writes, so a
-- failing one (not an integer, or overflow) undoes the others and nothing is written
local reply = {forwarded and 2 or 1, now, created, deadline}
for j, inc in ipairs(incrs) do
  local v = redis.call('HGET', key, inc[1])
  local result = nil
  if not v or string.match(v, '^%-?%d+$') then
    result = redis.pcall('HINCRBY', key, inc[1], inc[2])
  end
  if type(result) ~= 'number' then
    for k = 1, j - 1 do redis.call('HINCRBY', key, incrs[k][1], -tonumber(incrs[k][2])) end
    if ARGV[1] == 'new' then redis.call('DEL', key) end
    return {-3, inc[1]}
  end
  reply[#reply + 1] = result
end

if ARGV[1] == 'new' then
  redis.call('HSET', key, 'm:c', stamp, 'm:x', string.format('%d', deadline))
end
if #dels > 0 then redis.call('HDEL', key, unpack(dels)) end
sets[#sets + 1] = 'm:a'
sets[#sets + 1] = stamp
local user = ARGV[9]
if not forwarded then
  if string.sub(user, 1, 1) == '=' then
    sets[#sets + 1] = 'm:u'
    sets[#sets + 1] = string.sub(user, 2)
  elseif user == '-' then
    redis.call('HDEL', key, 'm:u')
  end
end
redis.call('HSET', key, unpack(sets))

if ARGV[8] ~= '' and not forwarded then
  local renewed = prefix .. ':s:' .. tag .. ARGV[8]
  redis.call('RENAME', key, renewed)
  redis.call('SET', prefix .. ':f:' .. tag .. digest, ARGV[8], 'PX', ARGV[7])
  key = renewed
end
redis.call('PEXPIRE', key, math.min(tonumber(ARGV[5]), deadline - now))
return reply
