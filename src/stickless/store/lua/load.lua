-- Load a session and, at most once per touch interval, refresh its idle TTL.
-- KEYS[1]  the session hash
-- ARGV[1]  touch interval (ms)      ARGV[2]  idle timeout (ms)
-- Returns the hash as a flat {field, value, ...} list, or an empty list when the
-- session does not exist, has passed its absolute deadline, or lacks its metadata;
-- {-1} when the key holds something else than a hash (written by another program).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'none' then return {} end
if kind ~= 'hash' then return {-1} end
local fields = redis.call('HGETALL', KEYS[1])
local access_at, deadline
for i = 1, #fields, 2 do
  if fields[i] == 'm:a' then access_at = i + 1
  elseif fields[i] == 'm:x' then deadline = tonumber(fields[i + 1]) end
end
if not access_at or not deadline then return {} end
if deadline <= now then
  redis.call('DEL', KEYS[1])
  return {}
end
local last = tonumber(fields[access_at]) or 0
if now - last >= tonumber(ARGV[1]) then
  local stamp = string.format('%d', now)
  redis.call('HSET', KEYS[1], 'm:a', stamp)
  redis.call('PEXPIRE', KEYS[1], math.min(tonumber(ARGV[2]), deadline - now))
  fields[access_at] = stamp
end
return fields
