#!lua flags=allow-oom
-- Maintain a user's session index (a hint: readers check every entry).
-- KEYS[1]  the user index zset
-- ARGV[1]  member to add or ''   ARGV[2]  its absolute deadline (ms), 0 = now + ARGV[3]
-- ARGV[3]  absolute timeout (ms)  ARGV[4..] members to remove
-- Prunes entries past their deadline and sets the key to expire with its last entry.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 4, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
if ARGV[1] ~= '' then
  local deadline = tonumber(ARGV[2])
  if deadline == 0 then deadline = now + tonumber(ARGV[3]) end
  redis.call('ZADD', KEYS[1], deadline, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last == 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('PEXPIREAT', KEYS[1], last[2])
return redis.call('ZCARD', KEYS[1])
