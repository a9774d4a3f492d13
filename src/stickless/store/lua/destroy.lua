-- Destroy a session now (following renew forwards) and leave a tombstone.
-- KEYS[1]  the session hash of the presented token
-- ARGV[1]  key prefix   ARGV[2]  hash tag '{family}:'   ARGV[3]  presented digest
-- ARGV[4]  tombstone TTL (ms)   ARGV[5]  expected user id, or '' for any
-- Reply: {1, user id or ''} when a live session was destroyed, {0} otherwise (also when it
-- belongs to another user than the expected one: the user index is only a hint).
local prefix, tag, digest = ARGV[1], ARGV[2], ARGV[3]
local key = KEYS[1]
local hops = 0
while redis.call('EXISTS', key) == 0 do
  local fwd = prefix .. ':f:' .. tag .. digest
  local nxt = redis.call('GET', fwd)
  redis.call('SET', prefix .. ':t:' .. tag .. digest, '1', 'PX', ARGV[4])
  redis.call('DEL', fwd)
  hops = hops + 1
  if not nxt or hops > 8 then return {0} end
  digest = nxt
  key = prefix .. ':s:' .. tag .. digest
end
local user = redis.call('HGET', key, 'm:u') or ''
if ARGV[5] ~= '' and user ~= ARGV[5] then return {0} end
redis.call('DEL', key, prefix .. ':f:' .. tag .. digest)
redis.call('SET', prefix .. ':t:' .. tag .. digest, '1', 'PX', ARGV[4])
return {1, user}
