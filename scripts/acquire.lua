-- acquire.lua: admits a stream under the user's limit, or, when the stream is
-- already live, extends its lease and hands back its existing key, so that a
-- retried request never takes a second slot.
--
-- KEYS: the user's streams set and keys hash (see common.lua)
-- ARGV[1]  stream ID
-- ARGV[2]  stream key to store if the stream is admitted now (a fresh UUID)
-- ARGV[3]  limit: the most live streams the user may hold
-- ARGV[4]  lease length in milliseconds
-- Reply (common.lua's array), status is one of:
--   'admitted'  new lease; stream key = ARGV[2], expiry = now + ARGV[4]
--   'renewed'   the stream was live; stream key = its stored key, expiry =
--               the later of its old expiry and now + ARGV[4]
--   'refused'   the user already holds `limit` other live streams; nothing
--               written; live lists them

local stream_id, new_key = ARGV[1], ARGV[2]
local limit, lease_ms = tonumber(ARGV[3]), tonumber(ARGV[4])

local now = now_ms()
prune(now)

local expiry = now + lease_ms
local current = redis.call('ZSCORE', streams_key, stream_id)
if current then
  expiry = math.max(expiry, tonumber(current))
  redis.call('ZADD', streams_key, expiry, stream_id)
  local key = redis.call('HGET', keys_key, stream_id)
  if not key then
    -- Only a hand-edited hash lacks the key of a live stream: give it one.
    key = new_key
    redis.call('HSET', keys_key, stream_id, key)
  end
  return reply('renewed', stream_id, key, expiry, now, true)
end

if redis.call('ZCARD', streams_key) >= limit then
  return reply('refused', stream_id, '', 0, now, false)
end

redis.call('ZADD', streams_key, expiry, stream_id)
redis.call('HSET', keys_key, stream_id, new_key)
return reply('admitted', stream_id, new_key, expiry, now, true)
