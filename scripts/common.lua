-- common.lua: prepended by the scripts package to every operation script below,
-- so all of them prune, stamp time and reply the same way.
--
-- One user's state, always passed as the same two KEYS in this order (both carry
-- the same {USER_ID} hash tag, so they live in one Redis Cluster slot):
--   KEYS[1]  <prefix>:{USER_ID}:streams  sorted set: member = stream ID,
--            score = lease expiry in Unix milliseconds on Redis's clock
--   KEYS[2]  <prefix>:{USER_ID}:keys     hash: stream ID -> stream key
-- The set is the only truth about who is watching: there is no counter.
--
-- Every script replies with the same array (see reply below):
--   1 status      string, one of the words the script documents
--   2 stream ID   string, the stream the call was about ('' when none)
--   3 stream key  string, set only where the script says so ('' otherwise)
--   4 expiry      integer, that stream's lease expiry in Unix ms (0 when none)
--   5 now         integer, Redis's clock in Unix ms when the script ran
--   6 live        array of the user's live streams after the call, soonest
--                 expiry first, flattened: {id1, expiry1, id2, expiry2, ...}
--                 (expiries as strings, in Unix ms)

local streams_key, keys_key = KEYS[1], KEYS[2]

-- Redis's own clock, so that every replica of the service shares one time.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Removes the leases that ended at or before now, with their stream keys, so
-- the slot of a player that died without releasing is free again.
local function prune(now)
  local expired = redis.call('ZRANGEBYSCORE', streams_key, '-inf', now)
  if #expired == 0 then
    return
  end
  redis.call('ZREMRANGEBYSCORE', streams_key, '-inf', now)
  -- unpack is bounded by the Lua stack, so delete in batches.
  for i = 1, #expired, 1000 do
    redis.call('HDEL', keys_key, unpack(expired, i, math.min(i + 999, #expired)))
  end
end

-- Builds the common reply. After a write it also makes both keys expire with
-- the longest lease left in them: leases never shrink, so neither does that
-- TTL, whatever LEASE_TTL the replica that wrote runs with, and a user who
-- goes idle leaves nothing behind.
local function reply(status, stream_id, stream_key, expiry, now, wrote)
  local live = redis.call('ZRANGE', streams_key, 0, -1, 'WITHSCORES')
  if wrote then
    if #live == 0 then
      redis.call('DEL', keys_key)
    else
      redis.call('PEXPIREAT', streams_key, live[#live])
      redis.call('PEXPIREAT', keys_key, live[#live])
    end
  end
  return {status, stream_id, stream_key, expiry, now, live}
end

