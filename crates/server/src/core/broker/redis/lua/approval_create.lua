-- Registers a pending approval and announces it to every node. Its request
-- is owed to its topics until the node says it published it: a node that
-- stops first (or a reply Redis sent too late) leaves it to another node.
--
-- KEYS[1] the approval (hash)   KEYS[2] pending (zset, by deadline)
-- KEYS[3] claimed (zset, by claim expiry)   KEYS[4] created (zset, by creation)
-- KEYS[5] the task's approvals (set)   KEYS[6] unannounced (zset, by since)
-- ARGV[1] callback id   ARGV[2] the request (JSON)   ARGV[3] user   ARGV[4] task
-- ARGV[5] created at (ms)   ARGV[6] deadline (ms)   ARGV[7] most pending
-- ARGV[8] channel   ARGV[9] the request's deadline in Redis time (ms; 0: none)
-- Returns 1; 0 when too many approvals are pending; -1, storing nothing, past
-- the deadline (a Redis that stalled: the node has told its producer the
-- request failed).
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local deadline = tonumber(ARGV[9])
if deadline > 0 and now > deadline then
  return -1
end
if redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[7]) then
  return 0
end
redis.call('HSET', KEYS[1], 'req', ARGV[2], 'user', ARGV[3], 'task', ARGV[4],
  'status', 'pending', 'created_at', ARGV[5], 'delivered_to', 0)
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
redis.call('ZADD', KEYS[6], now, ARGV[1])
redis.call('PUBLISH', ARGV[8], ARGV[1])
return 1
