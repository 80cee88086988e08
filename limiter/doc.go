// Package limiter enforces "at most N concurrent streams per user" with leases
// kept in Redis.
//
// # Model
//
// Each user has one sorted set, <prefix>:{USER_ID}:streams, whose members are
// the user's stream IDs and whose scores are lease expiry times in Unix
// milliseconds, and one hash, <prefix>:{USER_ID}:keys, from stream ID to the
// stream key handed to the player. The braces are a Redis Cluster hash tag, so
// both keys of a user share a slot. The set is the only record of who is
// watching: there is no counter to drift from it.
//
// A player Acquires a stream when playback starts, Renews its lease while it
// plays (a heartbeat, about every third of the lease), and Releases it on
// close. A player that dies without releasing frees its slot when the lease
// runs out: every operation first removes the leases that ended.
//
// # Atomicity and time
//
// Each operation is one Lua script (package scripts) executed atomically by
// Redis: prune, decide and write happen with no other client in between, so
// any number of service replicas sharing one Redis never admit more than the
// limit. Lease times come from Redis's TIME inside the script, never from the
// application's clock, so replicas on machines whose clocks disagree still
// agree on every lease. Both keys expire with the longest lease left in them,
// so an idle user leaves nothing behind.
//
// # Failure
//
// When Redis cannot be reached in time, operations return an error matching
// ErrUnavailable and admit nothing. A request that timed out may still have
// run in Redis: acquiring the same stream again is safe, because it returns
// the same key and takes no second slot.
//
// Config.FailOpen chooses the viewer over the limit instead: an Acquire or
// Renew that cannot reach Redis returns a degraded Lease that nothing records.
// Config.WaitReplicas makes each Acquire wait for replicas (Redis WAIT) in the
// same round trip, which narrows what an asynchronous failover can lose.
// Config.Observer is told of every call, for metrics.
package limiter
