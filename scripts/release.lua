-- release.lua: ends a lease when the player closes the stream.
--
-- KEYS: the user's streams set and keys hash (see common.lua)
-- ARGV[1]  stream ID, or '' for the user's lease that expires soonest (the
--          legacy "decrement by one")
-- ARGV[2]  stream key to check, or '' to release without checking; a wrong
--          key frees nothing, so a late release from an old session cannot
--          end a newer one
-- Reply (common.lua's array), stream ID = the stream meant ('' if none), status:
--   'released'  the lease was live and is gone, with its key
--   'inactive'  no live lease to release; nothing written
--   'mismatch'  the lease is live but ARGV[2] is not its key; nothing written

local stream_id, stream_key = ARGV[1], ARGV[2]

local now = now_ms()
prune(now)

local expiry
if stream_id == '' then
  local soonest = redis.call('ZRANGE', streams_key, 0, 0, 'WITHSCORES')
  if #soonest == 0 then
    return reply('inactive', '', '', 0, now, false)
  end
  stream_id, expiry = soonest[1], tonumber(soonest[2])
else
  expiry = tonumber(redis.call('ZSCORE', streams_key, stream_id))
  if not expiry then
    return reply('inactive', stream_id, '', 0, now, false)
  end
end

if stream_key ~= '' and redis.call('HGET', keys_key, stream_id) ~= stream_key then
  return reply('mismatch', stream_id, '', expiry, now, false)
end

redis.call('ZREM', streams_key, stream_id)
redis.call('HDEL', keys_key, stream_id)
return reply('released', stream_id, '', expiry, now, true)
