package limiter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/scripts"
)

// Defaults for the zero fields of Config.
const (
	DefaultLimit     = 3
	DefaultLeaseTTL  = 90 * time.Second
	DefaultKeyPrefix = "limiter"
)

// MaxIDLength is the longest user or stream ID accepted, in bytes.
const MaxIDLength = 128

// Redis is what the Limiter needs of a Redis client: running scripts, and a
// ping for readiness. *redis.Client and *redis.ClusterClient satisfy it.
type Redis interface {
	redis.Scripter
	Ping(ctx context.Context) *redis.StatusCmd
}

// Config sets the rules a Limiter enforces. Zero fields take the defaults.
type Config struct {
	// Limit is the most live streams one user may hold.
	Limit int
	// LeaseTTL is how long a lease lasts after an acquire or a heartbeat,
	// counted on Redis's clock. It is used to the millisecond.
	LeaseTTL time.Duration
	// Timeout bounds each call to Redis, on top of the caller's context;
	// zero leaves only the caller's context.
	Timeout time.Duration
	// KeyPrefix starts every Redis key, as in "limiter:{USER_ID}:streams".
	KeyPrefix string
	// FailOpen chooses the viewer over the limit when Redis fails: an Acquire
	// or Renew that cannot reach Redis returns a Lease whose DegradedBy holds
	// the failure, instead of an error matching ErrUnavailable. Such a lease
	// is recorded nowhere, so the limit is not enforced for it. Release and
	// Active fail as usual either way.
	FailOpen bool
	// Observer, if set, is told of every script call and decision (metrics).
	Observer Observer
	// WaitReplicas, when above zero, makes every Acquire wait until that
	// many replicas hold its write (Redis WAIT, sent in the same round trip
	// as the script), for at most a third of Timeout (250ms without one). If
	// fewer confirm (Redis ends a WAIT at its next hz tick, so up to 100ms
	// late by default), the Acquire fails with ErrUnavailable and its lease
	// stands on the master alone; the player's retry gets the same lease. This
	// narrows, but does not close, what an asynchronous failover can lose.
	// The client must be able to pipeline: *redis.Client, *redis.ClusterClient
	// and redis.UniversalClient can.
	WaitReplicas int
}

// Observer receives what a Limiter does, for metrics. Its methods are called
// synchronously on the request path and must be cheap and concurrency-safe.
type Observer interface {
	// ScriptDone reports one script call: the operation ("acquire", "renew",
	// "release", "active"), its outcome (the script's status, such as
	// "admitted", or "unavailable" or "error" when Redis did not decide) and
	// how long the call took.
	ScriptDone(op, outcome string, took time.Duration)
	// RedisError reports a failed call by kind (KindTimeout, ...).
	RedisError(kind string)
	// Decision reports what a call decided for a user: one of the Decision
	// constants.
	Decision(decision string)
}

// Decisions, as Observer.Decision reports them.
const (
	DecisionAdmitted           = "admitted"             // a new lease
	DecisionRenewed            = "renewed"              // a live lease extended, by acquire or heartbeat
	DecisionRefused            = "refused"              // the user was at the limit
	DecisionReleased           = "released"             // a live lease ended
	DecisionNotLive            = "not_live"             // a release of a stream without a live lease
	DecisionExpiredOnHeartbeat = "expired_on_heartbeat" // a heartbeat came after its lease ended
	DecisionKeyMismatch        = "key_mismatch"         // a heartbeat or release with another key
	DecisionDegradedAdmission  = "degraded_admission"   // fail-open: admitted without Redis
	DecisionDegradedRenewal    = "degraded_renewal"     // fail-open: renewed without Redis
)

// Limiter grants, renews and releases stream leases. It holds no state of its
// own: any number of Limiters sharing one Redis enforce one limit. It is safe
// for concurrent use.
type Limiter struct {
	rdb      Redis
	cfg      Config
	observer Observer // cfg.Observer, or one that ignores everything
}

// Lease is a live stream as its player sees it.
type Lease struct {
	UserID    string
	StreamID  string
	StreamKey string        // the secret the player heartbeats and releases with
	ExpiresAt time.Time     // when the lease ends unless renewed, on Redis's clock
	TTL       time.Duration // ExpiresAt less Redis's time when the call ran
	Active    int           // the user's live streams after the call
	Renewed   bool          // the stream was already live: same key, later expiry
	// DegradedBy is the Redis failure this lease was granted despite, under
	// Config.FailOpen; nil when Redis decided. A degraded lease is recorded
	// nowhere: Active is 0 and ExpiresAt is on this process's clock.
	DegradedBy error
}

// Stream is a live stream as an operator sees it: no key.
type Stream struct {
	ID        string
	ExpiresAt time.Time
}

// Release tells what a release did.
type Release struct {
	StreamID string // the stream released, or asked for ("" if the user had none)
	Released bool   // false when there was no live lease to release
	Active   int    // the user's live streams after the call
}

// New returns a Limiter that keeps its state in rdb. It reports an error
// when cfg holds a negative or otherwise impossible value.
func New(rdb Redis, cfg Config) (*Limiter, error) {
	if cfg.Limit == 0 {
		cfg.Limit = DefaultLimit
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = DefaultKeyPrefix
	}
	switch {
	case rdb == nil:
		return nil, errors.New("limiter: no Redis client")
	case cfg.Limit < 0:
		return nil, fmt.Errorf("limiter: limit %d is negative", cfg.Limit)
	case cfg.LeaseTTL < time.Millisecond:
		return nil, fmt.Errorf("limiter: lease TTL %v is under a millisecond", cfg.LeaseTTL)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("limiter: timeout %v is negative", cfg.Timeout)
	case strings.ContainsAny(cfg.KeyPrefix, "{}"):
		// A brace would move the hash tag off the user ID and split a
		// user's two keys across Cluster slots.
		return nil, fmt.Errorf("limiter: key prefix %q holds a brace", cfg.KeyPrefix)
	case cfg.WaitReplicas < 0:
		return nil, fmt.Errorf("limiter: wait replicas %d is negative", cfg.WaitReplicas)
	}
	if _, ok := rdb.(pipeliner); cfg.WaitReplicas > 0 && !ok {
		return nil, errors.New("limiter: WaitReplicas needs a client that can pipeline")
	}
	l := &Limiter{rdb: rdb, cfg: cfg, observer: cfg.Observer}
	if l.observer == nil {
		l.observer = ignoreAll{}
	}
	return l, nil
}

// Limit returns the most live streams one user may hold.
func (l *Limiter) Limit() int { return l.cfg.Limit }

// Acquire gives the user a lease on the stream. If the stream is already live
// it is the same lease, with the same key, extended (never shortened): a
// retried request takes no second slot. If the user already holds Limit other
// live streams, Acquire writes nothing and returns a *LimitError.
//
// When the call fails with ErrUnavailable the stream may or may not have been
// admitted; acquiring it again tells, at no extra cost to the user's limit.
func (l *Limiter) Acquire(ctx context.Context, userID, streamID string) (Lease, error) {
	if err := checkIDs(userID, streamID); err != nil {
		return Lease{}, err
	}
	key := uuid.NewString()
	st, err := l.run(ctx, "acquire", scripts.Acquire, userID,
		streamID, key, l.cfg.Limit, l.cfg.LeaseTTL.Milliseconds())
	if err != nil {
		return l.degraded(userID, streamID, key, DecisionDegradedAdmission, err)
	}
	switch st.status {
	case "admitted", "renewed":
		return st.lease(userID, st.status == "renewed"), nil
	case "refused":
		return Lease{}, &LimitError{Limit: l.cfg.Limit, Active: st.live}
	}
	return Lease{}, replyError("acquire", st.status)
}

// Renew extends the lease of a live stream whose key is streamKey: the
// heartbeat. It never brings back a stream that is not live: that is
// ErrLeaseInactive, whatever the key. A live stream with another key is
// ErrKeyMismatch and keeps its lease unchanged.
//
// Under Config.FailOpen, an Acquire or Renew that cannot reach Redis returns
// a degraded Lease (see Lease.DegradedBy) and no error.
func (l *Limiter) Renew(ctx context.Context, userID, streamID, streamKey string) (Lease, error) {
	if err := checkIDs(userID, streamID); err != nil {
		return Lease{}, err
	}
	st, err := l.run(ctx, "renew", scripts.Renew, userID,
		streamID, streamKey, l.cfg.LeaseTTL.Milliseconds())
	if err != nil {
		return l.degraded(userID, streamID, streamKey, DecisionDegradedRenewal, err)
	}
	switch st.status {
	case "renewed":
		return st.lease(userID, true), nil
	case "inactive":
		return Lease{}, ErrLeaseInactive
	case "mismatch":
		return Lease{}, ErrKeyMismatch
	}
	return Lease{}, replyError("renew", st.status)
}

// Release ends the stream's lease. With a non-empty streamKey it releases only
// if that is the stream's key, and otherwise returns ErrKeyMismatch having
// freed nothing, so a late release from an old session cannot end a newer
// one. Releasing a stream that is not live is no error: Released is false.
func (l *Limiter) Release(ctx context.Context, userID, streamID, streamKey string) (Release, error) {
	if err := checkIDs(userID, streamID); err != nil {
		return Release{}, err
	}
	return l.release(ctx, userID, streamID, streamKey)
}

// ReleaseSoonest ends the user's lease that expires first, whichever stream it
// is: the "decrement by one" of the service limiterd replaced, for players
// that do not say which stream they close.
func (l *Limiter) ReleaseSoonest(ctx context.Context, userID string) (Release, error) {
	if !validID(userID) {
		return Release{}, ErrInvalidUserID
	}
	return l.release(ctx, userID, "", "")
}

func (l *Limiter) release(ctx context.Context, userID, streamID, streamKey string) (Release, error) {
	st, err := l.run(ctx, "release", scripts.Release, userID, streamID, streamKey)
	if err != nil {
		return Release{}, err
	}
	switch st.status {
	case "released", "inactive":
		return Release{StreamID: st.streamID, Released: st.status == "released", Active: len(st.live)}, nil
	case "mismatch":
		return Release{}, ErrKeyMismatch
	}
	return Release{}, replyError("release", st.status)
}

// Active returns the user's live streams, soonest expiry first.
func (l *Limiter) Active(ctx context.Context, userID string) ([]Stream, error) {
	if !validID(userID) {
		return nil, ErrInvalidUserID
	}
	st, err := l.run(ctx, "active", scripts.Active, userID)
	if err != nil {
		return nil, err
	}
	if st.status != "ok" {
		return nil, replyError("active", st.status)
	}
	return st.live, nil
}

// Ping reports whether Redis answers within the Limiter's timeout; its
// error matches ErrUnavailable.
func (l *Limiter) Ping(ctx context.Context) error {
	ctx, cancel := l.withTimeout(ctx)
	defer cancel()
	if err := l.rdb.Ping(ctx).Err(); err != nil {
		l.observer.RedisError(errorKind(err))
		return classify("ping", err)
	}
	return nil
}

// Keys returns the Redis keys that hold a user's state: the sorted set of
// stream leases and the hash of stream keys.
func (l *Limiter) Keys(userID string) (streams, keys string) {
	base := l.cfg.KeyPrefix + ":{" + userID + "}:"
	return base + "streams", base + "keys"
}

// degraded answers an Acquire or Renew whose call to Redis failed with err:
// the error itself, or under FailOpen a lease that nothing records.
func (l *Limiter) degraded(userID, streamID, streamKey, decision string, err error) (Lease, error) {
	if !l.cfg.FailOpen || !errors.Is(err, ErrUnavailable) {
		return Lease{}, err
	}
	l.observer.Decision(decision)
	return Lease{
		UserID:     userID,
		StreamID:   streamID,
		StreamKey:  streamKey,
		ExpiresAt:  time.Now().Add(l.cfg.LeaseTTL).UTC().Truncate(time.Millisecond),
		TTL:        l.cfg.LeaseTTL,
		DegradedBy: err,
	}, nil
}

func (l *Limiter) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if l.cfg.Timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, l.cfg.Timeout)
}

// run executes one script on the user's keys and parses the reply that all
// scripts share (see scripts/common.lua).
func (l *Limiter) run(ctx context.Context, op string, script *redis.Script, userID string, args ...any) (state, error) {
	ctx, cancel := l.withTimeout(ctx)
	defer cancel()
	streams, keys := l.Keys(userID)
	start := time.Now()
	var reply any
	var err error
	if l.cfg.WaitReplicas > 0 && op == "acquire" {
		reply, err = l.runAndWait(ctx, script, []string{streams, keys}, args...)
	} else {
		reply, err = script.Run(ctx, l.rdb, []string{streams, keys}, args...).Result()
	}
	took := time.Since(start)
	if err != nil {
		kind := errorKind(err)
		l.observer.RedisError(kind)
		outcome := "unavailable"
		if kind == KindScript {
			outcome = "error"
		}
		l.observer.ScriptDone(op, outcome, took)
		return state{}, classify(op, err)
	}
	st, ok := parseState(reply)
	if !ok {
		l.observer.ScriptDone(op, "error", took)
		return state{}, replyError(op, reply)
	}
	l.observer.ScriptDone(op, st.status, took)
	if d, ok := decisions[op+" "+st.status]; ok {
		l.observer.Decision(d)
	}
	return st, nil
}

// pipeliner is a client that can send several commands in one round trip.
type pipeliner interface {
	Pipeline() redis.Pipeliner
}

// runAndWait runs script followed by WAIT in one round trip, on the node
// that holds keys (for a cluster, the master of their slot: WAIT has no key
// to route by). A pipeline has no EVAL fallback, so a NOSCRIPT answer (a
// restarted or flushed Redis) is followed by one more round trip with EVAL.
func (l *Limiter) runAndWait(ctx context.Context, script *redis.Script, keys []string, args ...any) (any, error) {
	var node pipeliner = l.rdb.(pipeliner)
	if cluster, ok := l.rdb.(interface {
		MasterForKey(ctx context.Context, key string) (*redis.Client, error)
	}); ok {
		master, err := cluster.MasterForKey(ctx, keys[0])
		if err != nil {
			return nil, err
		}
		node = master
	}
	waitFor := 250 * time.Millisecond
	if l.cfg.Timeout > 0 {
		// A third: a NOSCRIPT answer costs a second WAIT within the budget.
		waitFor = max(l.cfg.Timeout/3, time.Millisecond)
	}
	exec := func(run func(redis.Pipeliner) *redis.Cmd) (*redis.Cmd, *redis.IntCmd) {
		pipe := node.Pipeline()
		reply := run(pipe)
		acked := redis.NewIntCmd(ctx, "wait", l.cfg.WaitReplicas, waitFor.Milliseconds())
		pipe.Process(ctx, acked)
		pipe.Exec(ctx) // errors are read from each command
		return reply, acked
	}
	reply, acked := exec(func(p redis.Pipeliner) *redis.Cmd { return script.EvalSha(ctx, p, keys, args...) })
	if redis.HasErrorPrefix(reply.Err(), "NOSCRIPT") {
		reply, acked = exec(func(p redis.Pipeliner) *redis.Cmd { return script.Eval(ctx, p, keys, args...) })
	}
	if err := reply.Err(); err != nil {
		return nil, err
	}
	if err := acked.Err(); err != nil {
		return nil, err
	}
	if n := acked.Val(); n < int64(l.cfg.WaitReplicas) {
		return nil, &replicationError{acked: n, want: l.cfg.WaitReplicas}
	}
	return reply.Val(), nil
}

// decisions maps "op status" to what it decided for the user.
var decisions = map[string]string{
	"acquire admitted": DecisionAdmitted,
	"acquire renewed":  DecisionRenewed,
	"acquire refused":  DecisionRefused,
	"renew renewed":    DecisionRenewed,
	"renew inactive":   DecisionExpiredOnHeartbeat,
	"renew mismatch":   DecisionKeyMismatch,
	"release released": DecisionReleased,
	"release inactive": DecisionNotLive,
	"release mismatch": DecisionKeyMismatch,
}

type ignoreAll struct{}

func (ignoreAll) ScriptDone(string, string, time.Duration) {}
func (ignoreAll) RedisError(string)                        {}
func (ignoreAll) Decision(string)                          {}

// state is the reply every script gives, parsed.
type state struct {
	status    string
	streamID  string
	streamKey string
	expiry    int64 // Unix ms
	now       int64 // Unix ms, Redis's clock
	live      []Stream
}

func (st state) lease(userID string, renewed bool) Lease {
	return Lease{
		UserID:    userID,
		StreamID:  st.streamID,
		StreamKey: st.streamKey,
		ExpiresAt: time.UnixMilli(st.expiry).UTC(),
		TTL:       time.Duration(st.expiry-st.now) * time.Millisecond,
		Active:    len(st.live),
		Renewed:   renewed,
	}
}

// maxScore is the largest lease expiry accepted back from Redis: 2^53 ms,
// the last integer a float64 score holds exactly (far past any lease).
const maxScore = 1 << 53

func parseState(reply any) (state, bool) {
	fields, ok := reply.([]any)
	if !ok || len(fields) != 6 {
		return state{}, false
	}
	var st state
	var ok1, ok2, ok3, ok4, ok5 bool
	st.status, ok1 = fields[0].(string)
	st.streamID, ok2 = fields[1].(string)
	st.streamKey, ok3 = fields[2].(string)
	st.expiry, ok4 = fields[3].(int64)
	st.now, ok5 = fields[4].(int64)
	live, ok6 := fields[5].([]any)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || len(live)%2 != 0 {
		return state{}, false
	}
	st.live = make([]Stream, 0, len(live)/2)
	for i := 0; i < len(live); i += 2 {
		id, ok := live[i].(string)
		score, ok2 := live[i+1].(string)
		if !ok || !ok2 {
			return state{}, false
		}
		ms, err := strconv.ParseFloat(score, 64)
		// A score is a Unix time in ms; anything else (inf, nan, or a
		// number past exact float64 integers) was not written by a script.
		if err != nil || !(ms >= 0 && ms <= maxScore) {
			return state{}, false
		}
		st.live = append(st.live, Stream{ID: id, ExpiresAt: time.UnixMilli(int64(ms)).UTC()})
	}
	return st, true
}

func checkIDs(userID, streamID string) error {
	if !validID(userID) {
		return ErrInvalidUserID
	}
	if !validID(streamID) {
		return ErrInvalidStreamID
	}
	return nil
}

// validID reports whether s may name a user or a stream: 1 to MaxIDLength
// letters, digits and "-_.:@~". That keeps IDs safe inside Redis keys (no
// braces to break the hash tag) and inside URL paths; "." and ".." are
// refused too, since URL normalisers rewrite them as path steps.
func validID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLength || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '_', c == '.', c == ':', c == '@', c == '~':
		default:
			return false
		}
	}
	return true
}
