-- The last seq of the events a topic's stream begins with that were stored
-- by a Redis time: after Redis came back from a snapshot, the restored older
-- copy (events stored since it came back are younger).
--
-- KEYS[1] meta   KEYS[2] stream   ARGV[1] the Redis time (ms)
-- Returns the seq before the first younger entry, or the stream's last seq
-- when none is younger.
local by = tonumber(ARGV[1])
local last = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local cursor = '-'
while true do
  local page = redis.call('XRANGE', KEYS[2], cursor, '+', 'COUNT', 64)
  for _, entry in ipairs(page) do
    if tonumber(entry[2][4]) > by then
      return tonumber(string.match(entry[1], '^(%d+)')) - 1
    end
  end
  if #page < 64 then return last end
  cursor = '(' .. page[#page][1]
end
