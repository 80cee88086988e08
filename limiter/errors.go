package limiter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// Errors returned by the Limiter, to be tested with errors.Is.
var (
	// ErrInvalidUserID means a user ID is empty, longer than MaxIDLength, or
	// holds a character outside letters, digits and "-_.:@~".
	ErrInvalidUserID = errors.New("limiter: invalid user ID")
	// ErrInvalidStreamID is ErrInvalidUserID's twin for stream IDs.
	ErrInvalidStreamID = errors.New("limiter: invalid stream ID")
	// ErrLimitReached means the user already holds the limit of live streams
	// and the one asked for is not among them. The error is a *LimitError.
	ErrLimitReached = errors.New("limiter: stream limit reached")
	// ErrLeaseInactive means the stream holds no live lease: it expired, was
	// released, or never was acquired.
	ErrLeaseInactive = errors.New("limiter: lease not active")
	// ErrKeyMismatch means the stream is live but the key given is not its key.
	ErrKeyMismatch = errors.New("limiter: stream key mismatch")
	// ErrUnavailable means Redis could not be reached, did not answer in
	// time, or refused to work (loading, busy, failing over). Nothing was
	// admitted by the call that returns it, as far as the caller can rely on.
	ErrUnavailable = errors.New("limiter: redis unavailable")
)

// LimitError is returned by Acquire when the user is at the limit.
type LimitError struct {
	Limit  int      // the limit in force for this call
	Active []Stream // the user's live streams, soonest expiry first
}

// Error says how many streams are live out of how many are allowed.
func (e *LimitError) Error() string {
	return fmt.Sprintf("limiter: stream limit reached (%d of %d)", len(e.Active), e.Limit)
}

// Is makes errors.Is(err, ErrLimitReached) true for a *LimitError.
func (e *LimitError) Is(target error) bool { return target == ErrLimitReached }

// Kinds of Redis failure, as Observer.RedisError reports them.
const (
	KindTimeout     = "timeout"     // no answer in time, or no free connection in time
	KindConnection  = "connection"  // refused, reset, closed, too many clients
	KindLoading     = "loading"     // Redis is loading its data set
	KindBusy        = "busy"        // another script is running too long
	KindReadOnly    = "readonly"    // a replica, or a master without its replicas
	KindCluster     = "cluster"     // slot moved, cluster down, cross-slot
	KindAuth        = "auth"        // missing or refused credentials or permissions
	KindOOM         = "oom"         // maxmemory reached under noeviction
	KindReplication = "replication" // fewer replicas confirmed a write than Config.WaitReplicas
	KindScript      = "script"      // the script itself failed: a bug, never transient
	KindUnavailable = "unavailable" // any other failure to reach Redis
)

// transientReplies map the prefixes of Redis error replies that say Redis
// cannot serve right now to their kind. Any other error reply is KindScript.
var transientReplies = []struct{ prefix, kind string }{
	{"LOADING", KindLoading},
	{"BUSY", KindBusy},
	{"READONLY", KindReadOnly},
	{"MASTERDOWN", KindReadOnly},
	{"NOREPLICAS", KindReadOnly},
	{"MOVED", KindCluster},
	{"ASK", KindCluster},
	{"CROSSSLOT", KindCluster},
	{"CLUSTERDOWN", KindCluster},
	{"TRYAGAIN", KindCluster},
	{"OOM", KindOOM},
	{"NOAUTH", KindAuth},
	{"WRONGPASS", KindAuth},
	{"NOPERM", KindAuth},
	{"ERR The user executing the script can't run this command", KindAuth}, // an ACL refusal inside a script
	{"ERR max number of clients", KindConnection},
}

// replicationError is a write that fewer replicas confirmed than asked.
type replicationError struct {
	acked int64
	want  int
}

func (e *replicationError) Error() string {
	return fmt.Sprintf("%d of %d replicas confirmed the write in time", e.acked, e.want)
}

// errorKind names what went wrong in a call to Redis.
func errorKind(err error) string {
	var replication *replicationError
	if errors.As(err, &replication) {
		return KindReplication
	}
	var reply redis.Error
	if errors.As(err, &reply) {
		msg := reply.Error()
		for _, t := range transientReplies {
			if strings.HasPrefix(msg, t.prefix) {
				return t.kind
			}
		}
		return KindScript
	}
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, redis.ErrPoolTimeout),
		errors.As(err, &netErr) && netErr.Timeout():
		return KindTimeout
	case errors.As(err, &netErr), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, redis.ErrClosed), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED):
		return KindConnection
	}
	return KindUnavailable
}

// classify turns an error of the Redis client into ErrUnavailable when Redis
// could not do the work (network, timeout, pool, transient replies). Any other
// error reply means the script itself failed and is returned as it is, for the
// caller to treat as an internal error.
func classify(op string, err error) error {
	if errorKind(err) == KindScript {
		return fmt.Errorf("limiter: %s: script failed: %w", op, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
}

// replyError says that a script answered something its contract does not
// allow: the Lua and this package disagree.
func replyError(op string, reply any) error {
	return fmt.Errorf("limiter: %s: unexpected reply %v", op, reply)
}
