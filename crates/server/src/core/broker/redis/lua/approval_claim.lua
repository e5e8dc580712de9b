-- Claims the pending approvals past their deadline for this node to time
-- out: each is handed to one node only. A claim lasts ARGV[2] ms; one whose
-- node did not decide it by then (it died) is handed out again.
--
-- KEYS[1] pending   KEYS[2] claimed
-- ARGV[1] now (ms)   ARGV[2] claim duration (ms)   ARGV[3] most per call
-- Returns {next deadline ("" for none), callback id, ...}.
local now = tonumber(ARGV[1])
local until_ms = now + tonumber(ARGV[2])
local claimed = {''}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[3])) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], until_ms, id)
  claimed[#claimed + 1] = id
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, ARGV[3])) do
  redis.call('ZADD', KEYS[2], until_ms, id)
  claimed[#claimed + 1] = id
end
local next = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #next > 0 then claimed[1] = next[2] end
return claimed
