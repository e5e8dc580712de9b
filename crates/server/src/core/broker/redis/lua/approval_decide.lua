-- Decides a pending approval: a compare-and-set, so exactly one decision of
-- any number made at once, on any nodes, wins. The decision is owed to the
-- approval's topics until the node says it published it.
--
-- KEYS[1] the approval   KEYS[2] pending   KEYS[3] claimed   KEYS[4] decided
-- (zset, by decision time)   KEYS[5] created   KEYS[6] unannounced
-- ARGV[1] callback id   ARGV[2] status   ARGV[3] proceed ("1" or "0")
-- ARGV[4] feedback ("" for none, else "=" .. text)   ARGV[5] decided by (same)
-- ARGV[6] decided at (ms)   ARGV[7] answering user ("" for none)
-- ARGV[8] most decided kept   ARGV[9] channel   ARGV[10] prefix of approval keys
-- ARGV[11] prefix of the tasks' sets
-- Returns {"decided", field, value, ...}, {"resolved", status}, {"forbidden"}
-- or {"missing"}.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
-- Another user is refused before anything is said of the outcome.
if ARGV[7] ~= '' and redis.call('HGET', KEYS[1], 'user') ~= ARGV[7] then
  return {'forbidden'}
end
if status ~= 'pending' then return {'resolved', status} end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'proceed', ARGV[3], 'feedback', ARGV[4],
  'decided_by', ARGV[5], 'decided_at', ARGV[6])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[6], ARGV[1])
local time = redis.call('TIME')
redis.call('ZADD', KEYS[6], tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000), ARGV[1])
while redis.call('ZCARD', KEYS[4]) > tonumber(ARGV[8]) do
  local oldest = redis.call('ZPOPMIN', KEYS[4])
  local task = redis.call('HGET', ARGV[10] .. oldest[1], 'task')
  if task then redis.call('SREM', ARGV[11] .. task, oldest[1]) end
  redis.call('DEL', ARGV[10] .. oldest[1])
  redis.call('ZREM', KEYS[5], oldest[1])
  redis.call('ZREM', KEYS[6], oldest[1])
end
redis.call('PUBLISH', ARGV[9], ARGV[1])
local result = {'decided'}
for _, value in ipairs(redis.call('HGETALL', KEYS[1])) do result[#result + 1] = value end
return result
