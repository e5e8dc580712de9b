-- Gives a topic's stream a new epoch when Redis came back with an older copy
-- of it (restored from a snapshot): its seqs would otherwise be assigned a
-- second time under the epoch clients already hold.
--
-- KEYS[1] meta   ARGV[1] the epoch seen   ARGV[2] the last seq seen (lower
-- than what nodes had delivered)   ARGV[3] the new epoch
-- Returns 1 when the epoch was replaced, 0 when the stream moved meanwhile.
if redis.call('HGET', KEYS[1], 'e') == ARGV[1] and redis.call('HGET', KEYS[1], 's') == ARGV[2] then
  redis.call('HSET', KEYS[1], 'e', ARGV[3])
  return 1
end
return 0
