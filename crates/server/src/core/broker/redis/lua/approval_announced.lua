-- Marks an approval's change published: its request (ARGV[2] "pending"),
-- while the approval is still pending, or its decision. A decision stored
-- after the request was published stays owed until it is published too.
--
-- KEYS[1] unannounced (zset)   KEYS[2] the approval
-- ARGV[1] callback id   ARGV[2] "pending" or "decided"
-- Returns -1 if the approval has changed since (nothing is cleared), else
-- 1 if it was owed and no longer is, 0 if it was not owed.
local status = redis.call('HGET', KEYS[2], 'status')
if status and (status == 'pending') ~= (ARGV[2] == 'pending') then
  return -1
end
return redis.call('ZREM', KEYS[1], ARGV[1])
