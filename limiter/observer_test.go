package limiter_test

import (
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/internal/redistest"
	"github.com/limiterd/limiterd/limiter"
)

// recorder is an Observer that counts what it is told.
type recorder struct {
	mu        sync.Mutex
	scripts   map[string]int // "op outcome"
	decisions map[string]int
	errors    map[string]int
}

func newRecorder() *recorder {
	return &recorder{scripts: map[string]int{}, decisions: map[string]int{}, errors: map[string]int{}}
}

func (r *recorder) ScriptDone(op, outcome string, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.scripts[op+" "+outcome]++
}

func (r *recorder) RedisError(kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors[kind]++
}

func (r *recorder) Decision(d string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.decisions[d]++
}

func wantCounts(t *testing.T, what string, got, want map[string]int) {
	t.Helper()
	if !maps.Equal(got, want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestObserverSeesEveryCallAndDecision(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		rec := newRecorder()
		l := b.newLimiter(t, limiter.Config{Limit: 2, Observer: rec})
		first, err := l.Acquire(ctx, "u", "s1")
		if err != nil {
			t.Fatal(err)
		}
		l.Acquire(ctx, "u", "s2")
		l.Acquire(ctx, "u", "s3")                // refused
		l.Acquire(ctx, "u", "s1")                // renewed
		l.Renew(ctx, "u", "s1", first.StreamKey) // renewed
		l.Renew(ctx, "u", "s1", "wrong")         // key mismatch
		l.Renew(ctx, "u", "gone", "k")           // expired on heartbeat
		l.Release(ctx, "u", "s2", "wrong")       // key mismatch
		l.Release(ctx, "u", "s1", "")            // released
		l.Release(ctx, "u", "s1", "")            // not live
		l.Active(ctx, "u")

		wantCounts(t, "script calls", rec.scripts, map[string]int{
			"acquire admitted": 2, "acquire refused": 1, "acquire renewed": 1,
			"renew renewed": 1, "renew mismatch": 1, "renew inactive": 1,
			"release mismatch": 1, "release released": 1, "release inactive": 1,
			"active ok": 1,
		})
		wantCounts(t, "decisions", rec.decisions, map[string]int{
			limiter.DecisionAdmitted: 2, limiter.DecisionRefused: 1, limiter.DecisionRenewed: 2,
			limiter.DecisionKeyMismatch: 2, limiter.DecisionExpiredOnHeartbeat: 1,
			limiter.DecisionReleased: 1, limiter.DecisionNotLive: 1,
		})
		wantCounts(t, "redis errors", rec.errors, map[string]int{})
	})
}

func TestFailOpen(t *testing.T) {
	tests := []struct {
		name     string
		failOpen bool
	}{
		{"closed", false},
		{"open", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newRecorder()
			rdb := redis.NewClient(&redis.Options{Addr: redistest.ClosedAddr(t), ContextTimeoutEnabled: true, MaxRetries: -1})
			t.Cleanup(func() { rdb.Close() })
			l, err := limiter.New(rdb, limiter.Config{Timeout: testTimeout, FailOpen: tt.failOpen, Observer: rec, LeaseTTL: time.Minute})
			if err != nil {
				t.Fatal(err)
			}

			before := time.Now()
			acquired, err := l.Acquire(ctx, "alice", "tv")
			renewed, renewErr := l.Renew(ctx, "alice", "tv", "the-key")
			if !tt.failOpen {
				for _, err := range []error{err, renewErr} {
					if !errors.Is(err, limiter.ErrUnavailable) {
						t.Errorf("err = %v, want ErrUnavailable", err)
					}
				}
				wantCounts(t, "decisions", rec.decisions, map[string]int{})
			} else {
				if err != nil || renewErr != nil {
					t.Fatalf("fail-open acquire/renew: %v, %v; want degraded leases", err, renewErr)
				}
				for _, lease := range []limiter.Lease{acquired, renewed} {
					if !errors.Is(lease.DegradedBy, limiter.ErrUnavailable) {
						t.Errorf("DegradedBy = %v, want ErrUnavailable", lease.DegradedBy)
					}
					if lease.Active != 0 || lease.TTL != time.Minute || lease.ExpiresAt.Before(before.Add(time.Minute-time.Second)) {
						t.Errorf("degraded lease %+v: want Active 0 and a one-minute lease from now", lease)
					}
				}
				if len(acquired.StreamKey) != 36 || renewed.StreamKey != "the-key" {
					t.Errorf("keys %q, %q: want a new UUID and the heartbeat's own key", acquired.StreamKey, renewed.StreamKey)
				}
				wantCounts(t, "decisions", rec.decisions, map[string]int{
					limiter.DecisionDegradedAdmission: 1, limiter.DecisionDegradedRenewal: 1,
				})
			}

			// Neither mode invents an answer where there is nothing to admit.
			if _, err := l.Release(ctx, "alice", "tv", ""); !errors.Is(err, limiter.ErrUnavailable) {
				t.Errorf("release: %v, want ErrUnavailable", err)
			}
			if _, err := l.Active(ctx, "alice"); !errors.Is(err, limiter.ErrUnavailable) {
				t.Errorf("active: %v, want ErrUnavailable", err)
			}
			wantCounts(t, "script calls", rec.scripts, map[string]int{
				"acquire unavailable": 1, "renew unavailable": 1, "release unavailable": 1, "active unavailable": 1,
			})
			// A refused dial is retried until the deadline, so it may end as
			// either kind.
			if n := rec.errors[limiter.KindConnection] + rec.errors[limiter.KindTimeout]; n != 4 || len(rec.errors) > 2 {
				t.Errorf("redis errors = %v, want 4 of kind connection or timeout", rec.errors)
			}
		})
	}
}

func TestFailOpenStillFailsOnABrokenScript(t *testing.T) {
	rdb := redistest.Client(t)
	l, err := limiter.New(rdb, limiter.Config{FailOpen: true, KeyPrefix: uniquePrefix()})
	if err != nil {
		t.Fatal(err)
	}
	streams, _ := l.Keys("alice")
	if err := rdb.Set(ctx, streams, "not a sorted set", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	lease, err := l.Acquire(ctx, "alice", "tv")
	if err == nil || errors.Is(err, limiter.ErrUnavailable) {
		t.Fatalf("Acquire on a corrupt key = %+v, %v; want an internal error, not a degraded lease", lease, err)
	}
}
