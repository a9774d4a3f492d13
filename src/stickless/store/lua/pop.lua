#!lua flags=allow-oom
-- Take one value out of a session, exactly once across requests (pop_once).
-- KEYS[1]  the session hash   ARGV[1]  digest of the presented token   ARGV[2]  the field
-- Reply: the value, or nil when it is gone (another request took it), the session is gone,
-- or the token is not the session's current one (nothing written then).
local current = redis.pcall('HGET', KEYS[1], 'k:' .. ARGV[1])
if type(current) ~= 'string' then return false end
local value = redis.call('HGET', KEYS[1], ARGV[2])
if value then redis.call('HDEL', KEYS[1], ARGV[2]) end
return value
