-- Reads a topic at one position: its epoch and last seq, the oldest seq
-- still retained, its snapshot, and the retained events after a seq.
--
-- KEYS[1..4] as publish.lua   KEYS[5] the genesis epoch (a string).
-- ARGV[1] epoch for a new genesis   ARGV[2] TTL of the topic's keys (ms)
-- ARGV[3] history age (ms)   ARGV[4] "1" for the snapshot
-- ARGV[5] events after this seq ("-1": none)   ARGV[6] only those stored at or
-- after this Redis time (ms)
-- Returns {epoch, last seq, first retained seq, snapshot count, snapshot
-- frames (oldest update first)..., then per event (seq order) its audience
-- and frame}.
local meta, stream, snapshot, order = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  -- A topic with no keys (no event yet, or its keys expired) is read under
  -- the genesis epoch, which its first event starts, and reading it stores
  -- nothing: subscribing to topics nobody publishes to keeps nothing. The
  -- genesis lives half a topic TTL and is never renewed, so a topic whose
  -- keys expired starts again under another epoch than its old one.
  epoch = redis.call('GET', KEYS[5])
  if not epoch then
    epoch = ARGV[1]
    redis.call('SET', KEYS[5], epoch, 'PX', math.floor(tonumber(ARGV[2]) / 2))
  end
  return {epoch, '0', '1', 0}
end
local last = tonumber(redis.call('HGET', meta, 's'))
-- The oldest entry younger than the history age; older ones go now.
local cutoff = now - tonumber(ARGV[3])
local first = last + 1
local last_old = nil
local cursor = '-'
while true do
  local page = redis.call('XRANGE', stream, cursor, '+', 'COUNT', 64)
  if #page == 0 then break end
  local found = false
  for _, entry in ipairs(page) do
    if tonumber(entry[2][4]) < cutoff then
      last_old = entry[1]
    else
      first = tonumber(string.match(entry[1], '^(%d+)'))
      found = true
      break
    end
  end
  if found or #page < 64 then break end
  cursor = '(' .. page[#page][1]
end
if last_old then
  local old_seq = tonumber(string.match(last_old, '^(%d+)'))
  redis.call('XTRIM', stream, 'MINID', string.format('%d', old_seq + 1) .. '-0')
end
local result = {epoch, string.format('%d', last), string.format('%d', first), 0}
if ARGV[4] == '1' then
  local keys = redis.call('ZRANGE', order, 0, -1)
  -- In slices: Lua unpacks at most a few thousand values at once.
  for start = 1, #keys, 500 do
    local slice = {}
    for k = start, math.min(start + 499, #keys) do slice[#slice + 1] = keys[k] end
    for _, frame in ipairs(redis.call('HMGET', snapshot, unpack(slice))) do
      if frame then
        result[#result + 1] = frame
        result[4] = result[4] + 1
      end
    end
  end
end
local after = tonumber(ARGV[5])
if after >= 0 then
  local from = math.max(after, first - 1) + 1
  local min_time = tonumber(ARGV[6])
  for _, entry in ipairs(redis.call('XRANGE', stream, string.format('%d', from) .. '-0', '+')) do
    if tonumber(entry[2][4]) >= min_time then
      result[#result + 1] = entry[2][6]
      result[#result + 1] = entry[2][2]
    end
  end
end
return result
