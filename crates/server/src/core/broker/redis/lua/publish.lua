-- Stores events of one topic, in order, and announces each on the topic's
-- channel: the whole of a publish, atomic, so the channel's order is seq order.
--
-- KEYS[1] meta (hash: e = epoch, s = last seq)   KEYS[2] stream (entry id
-- "SEQ-0", fields f = the event frame, t = Redis time in ms, a = audience)   KEYS[3] snapshot
-- (hash: key -> frame)   KEYS[4] snapshot order (zset: key by seq)
-- KEYS[5] the topic's kind's index (zset: topic by its last event's time)
-- KEYS[6] the set of kinds   KEYS[7] the genesis epoch (see read.lua). These
-- three are the only keys outside the topic's hash tag: under Redis Cluster
-- they would move out of the script.
-- ARGV[1] epoch for a new genesis   ARGV[2] history size (exact MAXLEN)
-- ARGV[3] history age (ms)   ARGV[4] TTL of the topic's keys (ms)
-- ARGV[5] TTL of an event id (ms)   ARGV[6] prefix of event id keys
-- ARGV[7] channel   ARGV[8] most snapshot keys   ARGV[9] audience
-- ARGV[10] the topic   ARGV[11] its kind
-- ARGV[12] the publish's deadline in Redis time (ms; 0: none)
-- then five per event: id, fingerprint, key ("" for none), frame head, frame tail
-- (the frame is head .. seq .. tail).
-- Returns {now_ms, epoch, seq1, status1, seq2, status2, ...}: status 0 stored,
-- 1 a retry of the stored event with that id, 2 the id stored with other content
-- (the last outcome: nothing after it is stored);
-- past the deadline (the node has told its producer the publish failed),
-- {now_ms} and nothing stored.
local meta, stream, snapshot, order = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local deadline = tonumber(ARGV[12])
if deadline > 0 and now > deadline then
  return {string.format('%d', now)}
end
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  -- A new stream, under the genesis epoch its readers were given: whatever
  -- was left of an older one goes with it.
  epoch = redis.call('GET', KEYS[7])
  if not epoch then
    epoch = ARGV[1]
    redis.call('SET', KEYS[7], epoch, 'PX', math.floor(tonumber(ARGV[4]) / 2))
  end
  redis.call('DEL', stream, snapshot, order)
  redis.call('HSET', meta, 'e', epoch, 's', 0)
end
local results = {string.format('%d', now), epoch}
local i = 13
while i + 4 <= #ARGV do
  local id, fingerprint, key, head, tail = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  local id_key = ARGV[6] .. id
  local seq, status = nil, 0
  local known = redis.call('GET', id_key)
  if known then
    local known_seq, known_epoch, known_print = string.match(known, '^(%d+) (%S+) (%S+)$')
    if known_epoch == epoch then
      seq = tonumber(known_seq)
      if known_print == fingerprint then status = 1 else status = 2 end
    end
  end
  if not seq then
    seq = redis.call('HINCRBY', meta, 's', 1)
    local seq_text = string.format('%d', seq)
    local frame = head .. seq_text .. tail
    redis.call('XADD', stream, 'MAXLEN', ARGV[2], seq_text .. '-0', 'f', frame, 't', results[1], 'a', ARGV[9])
    redis.call('SET', id_key, seq_text .. ' ' .. epoch .. ' ' .. fingerprint, 'PX', ARGV[5])
    if key ~= '' then
      redis.call('HSET', snapshot, key, frame)
      redis.call('ZADD', order, seq, key)
      if redis.call('ZCARD', order) > tonumber(ARGV[8]) then
        local oldest = redis.call('ZPOPMIN', order)
        redis.call('HDEL', snapshot, oldest[1])
      end
    end
    redis.call('PUBLISH', ARGV[7], epoch .. ' ' .. ARGV[9] .. ' ' .. frame)
  end
  results[#results + 1] = seq
  results[#results + 1] = status
  -- An id stored with other content refuses its event and those after it.
  if status == 2 then break end
end
-- History older than its age goes, a bounded number of entries per call.
local cutoff = now - tonumber(ARGV[3])
local last_old = nil
for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', 64)) do
  if tonumber(entry[2][4]) < cutoff then last_old = entry[1] else break end
end
if last_old then
  local old_seq = tonumber(string.match(last_old, '^(%d+)'))
  redis.call('XTRIM', stream, 'MINID', string.format('%d', old_seq + 1) .. '-0')
end
for k = 1, 4 do
  redis.call('PEXPIRE', KEYS[k], ARGV[4])
end
redis.call('ZADD', KEYS[5], now, ARGV[10])
redis.call('SADD', KEYS[6], ARGV[11])
return results
