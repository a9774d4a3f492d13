#!lua
-- Refresh a session's idle TTL and last access: sent by a load that found the last refresh
-- older than the touch interval (loads themselves are a plain HGETALL + PTTL, no script).
-- KEYS[1]  the session hash   ARGV[1]  digest of the presented token   ARGV[2]  idle (ms)
-- Reply: the new last access (ms since the epoch), or 0 when the session is gone meanwhile,
-- past its deadline, or the token is not its current one (nothing written then).
local meta = redis.pcall('HMGET', KEYS[1], 'k:' .. ARGV[1], 'm:x')
if meta.err or not meta[1] then return 0 end
local deadline = tonumber(meta[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not deadline or deadline <= now then return 0 end
redis.call('HSET', KEYS[1], 'm:a', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], math.min(tonumber(ARGV[2]), deadline - now))
return now
