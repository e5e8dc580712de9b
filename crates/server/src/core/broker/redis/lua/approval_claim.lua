-- Claims the pending approvals past their deadline for this node to time
-- out: each is handed to one node only. A claim lasts ARGV[1] ms; one whose
-- node did not decide it by then (it died, or never got this reply) is
-- handed out again. "Now" is Redis's clock, so a node whose clock runs
-- ahead does not time out the others' approvals early.
--
-- KEYS[1] pending   KEYS[2] claimed
-- ARGV[1] claim duration (ms)   ARGV[2] most per call
-- Returns {next deadline or claim's end ("" for none), now, callback id, ...}
-- (times in Redis's clock, ms).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local until_ms = now + tonumber(ARGV[1])
local claimed = {'', tostring(now)}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[2])) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], until_ms, id)
  claimed[#claimed + 1] = id
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, ARGV[2])) do
  redis.call('ZADD', KEYS[2], until_ms, id)
  claimed[#claimed + 1] = id
end
-- The next deadline, or the end of the first claim still running (one
-- whose reply may have been lost comes back then).
for _, set in ipairs({KEYS[1], KEYS[2]}) do
  local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if #first > 0 and (claimed[1] == '' or tonumber(first[2]) < tonumber(claimed[1])) then
    claimed[1] = first[2]
  end
end
return claimed
