-- Drops from the topic indexes the topics whose keys expired (no event for
-- the topic TTL), and from the set of kinds the kinds left without a topic:
-- in one step, so a publish cannot add a topic to a kind between the count
-- and its removal.
--
-- KEYS[1] the set of kinds   ARGV[1] prefix of a kind's index
-- ARGV[2] the oldest last-event time (ms) a topic may have and stay
-- Returns the number of topics indexed.
local topics = 0
for _, kind in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local index = ARGV[1] .. kind
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. ARGV[2])
  local count = redis.call('ZCARD', index)
  if count == 0 then
    redis.call('SREM', KEYS[1], kind)
  end
  topics = topics + count
end
return topics
