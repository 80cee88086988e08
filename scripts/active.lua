-- active.lua: lists the user's live streams, after pruning the expired ones.
--
-- KEYS: the user's streams set and keys hash (see common.lua)
-- ARGV: none
-- Reply (common.lua's array): status 'ok'; live holds the streams.

local now = now_ms()
prune(now)
return reply('ok', '', '', 0, now, false)
