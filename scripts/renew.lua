-- renew.lua: the heartbeat. Extends the lease of a live stream whose key
-- matches; never brings back a stream that has expired or been released.
--
-- KEYS: the user's streams set and keys hash (see common.lua)
-- ARGV[1]  stream ID
-- ARGV[2]  stream key the player holds
-- ARGV[3]  lease length in milliseconds
-- Reply (common.lua's array), status is one of:
--   'renewed'   expiry = the later of the old expiry and now + ARGV[3];
--               stream key = ARGV[2]
--   'inactive'  the stream holds no live lease (whatever key was sent)
--   'mismatch'  the stream is live but ARGV[2] is not its key; nothing written

local stream_id, stream_key = ARGV[1], ARGV[2]
local lease_ms = tonumber(ARGV[3])

local now = now_ms()
prune(now)

local current = redis.call('ZSCORE', streams_key, stream_id)
if not current then
  return reply('inactive', stream_id, '', 0, now, false)
end
if redis.call('HGET', keys_key, stream_id) ~= stream_key then
  return reply('mismatch', stream_id, '', tonumber(current), now, false)
end

local expiry = math.max(now + lease_ms, tonumber(current))
redis.call('ZADD', streams_key, expiry, stream_id)
return reply('renewed', stream_id, stream_key, expiry, now, true)
