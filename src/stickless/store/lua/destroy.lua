#!lua flags=allow-oom
-- Destroy a session now and leave a tombstone.
-- KEYS[1]  the session hash   KEYS[2]  its forward   KEYS[3]  its tombstone
-- ARGV[1]  digest of the presented token, or '' to destroy by session id (operators)
-- ARGV[2]  tombstone TTL (ms)   ARGV[3]  expected user id, or '' for any
-- ARGV[4]  digest of a token whose session is spared when it is the current one, or ''
--          (log out everywhere but this browser: a stale or forged token spares nothing)
-- ARGV[5]  '1': evict a login in flight (max_sessions_per_user): with ARGV[3], also a
--          session bound to no user yet, and a session not written yet gets its tombstone,
--          so that login's save finds it destroyed
-- A token destroys its session when it is the current one, or the previous one a plain
-- renew left a forward for (a logout already in flight); after an identity change the old
-- token destroys nothing.
-- Reply: {1, user id or ''} when a live session was destroyed, {0} otherwise (also when it
-- belongs to another user than the expected one: the user index is only a hint).
-- the current token's digest is the name of the hash's k:<digest> field
local meta = redis.pcall('HMGET', KEYS[1], 'm:c', 'm:u', 'k:' .. ARGV[1], 'k:' .. ARGV[4])
local evict = ARGV[5] == '1'
if meta.err then return {0} end
if not meta[1] then
  if evict then redis.call('SET', KEYS[3], '1', 'PX', ARGV[2]) end
  return {0}
end
if ARGV[1] ~= '' and not meta[3] and redis.pcall('GET', KEYS[2]) ~= ARGV[1] then
  return {0}
end
if ARGV[4] ~= '' and meta[4] then return {0} end
local user = meta[2] or ''
if ARGV[3] ~= '' and user ~= ARGV[3] and not (evict and user == '') then return {0} end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
return {1, user}
