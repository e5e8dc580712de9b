-- Adds a node's deliveries of an approval's request to its count; an
-- approval that no longer exists is left alone (no stray hash).
--
-- KEYS[1] the approval's hash
-- ARGV[1] connections reached on this node
-- Returns the count, or -1 when there is no such approval.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
return redis.call('HINCRBY', KEYS[1], 'delivered_to', ARGV[1])
