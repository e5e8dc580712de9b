-- Marks an approval's change published: its request (ARGV[2] "pending"),
-- while the approval is still pending, or its decision. A decision stored
-- after the request was published stays owed until it is published too.
--
-- KEYS[1] unannounced (zset)   KEYS[2] the approval
-- ARGV[1] callback id   ARGV[2] "pending" or "decided"
-- Returns 1 if it was owed and no longer is.
local status = redis.call('HGET', KEYS[2], 'status')
if status and (status == 'pending') ~= (ARGV[2] == 'pending') then
  return 0
end
return redis.call('ZREM', KEYS[1], ARGV[1])
