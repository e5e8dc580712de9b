-- Hands this node the approvals whose last change (request or decision)
-- has been owed to their topics for ARGV[1] ms or more: each is owed from
-- now again, so other nodes leave it alone while this one publishes it.
-- "Now" is Redis's clock, as the scripts that mark them owed use.
--
-- KEYS[1] unannounced (zset, by since)
-- ARGV[1] how long owed (ms)   ARGV[2] most per call
-- Returns the callback ids.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], now, id)
end
return due
