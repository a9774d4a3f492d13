-- Load a session and, at most once per touch interval, refresh its idle TTL.
-- KEYS[1]  the session hash (named by the token's family)
-- ARGV[1]  digest of the presented token   ARGV[2]  touch interval (ms)
-- ARGV[3]  idle timeout (ms)
-- Returns the hash as a flat {field, value, ...} list; an empty list when there is no such
-- session, it has passed its absolute deadline, lacks its metadata, or the presented token
-- is not its current one (after a renew the old token loads nothing); {-1} when the key
-- holds something else than a hash (written by another program).
local fields = redis.pcall('HGETALL', KEYS[1])
if fields.err then return {-1} end
local access_at, deadline, digest
for i = 1, #fields, 2 do
  local name = fields[i]
  if name == 'm:a' then access_at = i + 1
  elseif name == 'm:x' then deadline = tonumber(fields[i + 1])
  elseif name == 'm:k' then digest = fields[i + 1] end
end
if digest ~= ARGV[1] or not access_at or not deadline then return {} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if deadline <= now then
  redis.call('DEL', KEYS[1])
  return {}
end
local last = tonumber(fields[access_at]) or 0
if now - last >= tonumber(ARGV[2]) then
  local stamp = string.format('%d', now)
  redis.call('HSET', KEYS[1], 'm:a', stamp)
  redis.call('PEXPIRE', KEYS[1], math.min(tonumber(ARGV[3]), deadline - now))
  fields[access_at] = stamp
end
return fields
