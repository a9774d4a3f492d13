#!lua
-- A login's place among its user's sessions (SessionConfig.max_sessions_per_user).
-- KEYS[1]  the user index zset   KEYS[2]  the user's logins zset (both in the user's slot)
-- ARGV[1]  session id (family) reserving its login now, or '' (only forget)
-- ARGV[2]  window (ms): a login reserved this recently may still be in flight
-- ARGV[3]  the reserving session's absolute deadline (ms), 0 = now + ARGV[4]
-- ARGV[4]  absolute timeout (ms)   ARGV[5..] session ids to forget from the logins
-- The logins zset: member <family>, score = when it reserved its login (server ms, strictly
-- increasing, so scores order the logins as this script ran them). A login neither in the
-- index nor recent is dropped; so are index entries past their deadline. The key is never
-- left without a TTL: as long as the index, the reserving session or the window, whichever
-- is longest (never shortened).
-- Reply with ARGV[1]: {now, family, login ms or '', ...}: every *other* member of the index
-- and of the logins, in order (the index's first); without: {now}.
local index, logins = KEYS[1], KEYS[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local me, window = ARGV[1], tonumber(ARGV[2])
for i = 5, #ARGV do redis.call('ZREM', logins, ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
if me ~= '' then
  local score = now
  local top = redis.call('ZRANGE', logins, -1, -1, 'WITHSCORES')
  if #top == 2 and tonumber(top[2]) >= score then score = tonumber(top[2]) + 1 end
  redis.call('ZADD', logins, string.format('%d', score), me)
end

local recent = now - window
local entries = redis.call('ZRANGE', logins, 0, -1, 'WITHSCORES')
local at = {}
for i = 1, #entries, 2 do
  local member = entries[i]
  if tonumber(entries[i + 1]) <= recent and not redis.call('ZSCORE', index, member) then
    redis.call('ZREM', logins, member)
  else
    at[member] = entries[i + 1]
  end
end

if redis.call('EXISTS', logins) == 1 then
  local keep = math.max(window, redis.call('PTTL', index), redis.call('PTTL', logins))
  if me ~= '' then
    local deadline = tonumber(ARGV[3])
    if deadline == 0 then deadline = now + tonumber(ARGV[4]) end
    keep = math.max(keep, deadline - now)
  end
  redis.call('PEXPIRE', logins, string.format('%d', keep))
end

if me == '' then return {now} end
local reply = {now}
local seen = {[me] = true}
for _, member in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  if not seen[member] then
    seen[member] = true
    reply[#reply + 1] = member
    reply[#reply + 1] = at[member] or ''
  end
end
for i = 1, #entries, 2 do
  local member = entries[i]
  if not seen[member] and at[member] then
    seen[member] = true
    reply[#reply + 1] = member
    reply[#reply + 1] = at[member]
  end
end
return reply
