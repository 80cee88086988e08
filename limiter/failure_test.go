package limiter_test

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/internal/redistest"
	"github.com/limiterd/limiterd/limiter"
)

const testTimeout = 200 * time.Millisecond

// limiterOn returns a Limiter whose client honours context deadlines, as the
// service's does, with testTimeout per call.
func limiterOn(t *testing.T, addr string) *limiter.Limiter {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	l, err := limiter.New(rdb, limiter.Config{Timeout: testTimeout, KeyPrefix: uniquePrefix()})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// assertUnavailable calls every operation and wants ErrUnavailable from each,
// well within the timeout plus scheduling slack: never a hang, never a lease.
func assertUnavailable(t *testing.T, l *limiter.Limiter) {
	t.Helper()
	checkUnavailable(t, l, testTimeout+500*time.Millisecond, true)
}

// checkUnavailable wants ErrUnavailable within bound from every operation
// that runs a script, and from Ping too when withPing is set.
func checkUnavailable(t *testing.T, l *limiter.Limiter, bound time.Duration, withPing bool) {
	t.Helper()
	calls := map[string]func() error{
		"acquire": func() error {
			lease, err := l.Acquire(ctx, "alice", "s1")
			if err == nil || lease != (limiter.Lease{}) {
				t.Errorf("acquire admitted: %+v", lease)
			}
			return err
		},
		"renew":   func() error { _, err := l.Renew(ctx, "alice", "s1", "k"); return err },
		"release": func() error { _, err := l.Release(ctx, "alice", "s1", ""); return err },
		"soonest": func() error { _, err := l.ReleaseSoonest(ctx, "alice"); return err },
		"active":  func() error { _, err := l.Active(ctx, "alice"); return err },
	}
	if withPing {
		calls["ping"] = func() error { return l.Ping(ctx) }
	}
	for name, call := range calls {
		start := time.Now()
		err := call()
		took := time.Since(start)
		if !errors.Is(err, limiter.ErrUnavailable) {
			t.Errorf("%s: err = %v, want ErrUnavailable", name, err)
		}
		if took > bound {
			t.Errorf("%s took %v, want under %v", name, took, bound)
		}
	}
}

func TestRedisThatNeverAnswers(t *testing.T) {
	l := limiterOn(t, redistest.Silent(t))
	assertUnavailable(t, l)
}

func TestRedisNotListening(t *testing.T) {
	l := limiterOn(t, redistest.ClosedAddr(t))
	assertUnavailable(t, l)
}

func TestRedisPausedThenResumed(t *testing.T) {
	srv := redistest.Start(t)
	l := limiterOn(t, srv.Addr)
	if _, err := l.Acquire(ctx, "alice", "s1"); err != nil {
		t.Fatal(err)
	}
	srv.Pause(t)
	assertUnavailable(t, l)
	srv.Resume(t)
	lease, err := l.Acquire(ctx, "alice", "s1")
	if err != nil || lease.Active != 1 {
		t.Errorf("after resume: %+v, %v; want s1 alone, once", lease, err)
	}
}

func TestRedisRestartedEmpty(t *testing.T) {
	srv := redistest.Start(t)
	l := limiterOn(t, srv.Addr)
	if _, err := l.Acquire(ctx, "alice", "s1"); err != nil {
		t.Fatal(err)
	}
	srv.Kill(t)
	assertUnavailable(t, l)
	srv.Restart(t) // same port, no data, no cached scripts

	var err error
	for range 3 { // a pooled connection to the old process may fail once
		if _, err = l.Acquire(ctx, "alice", "s2"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if streams, err := l.Active(ctx, "alice"); err != nil || ids(streams) != "s2" {
		t.Errorf("after the restart, active = %s, %v; want s2", ids(streams), err)
	}
}

func TestRedisBusyWithAnotherScript(t *testing.T) {
	srv := redistest.Start(t, "--busy-reply-threshold", "20")
	l := limiterOn(t, srv.Addr)
	blocker := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer blocker.Close()

	running := make(chan error, 1)
	go func() { running <- blocker.Eval(ctx, "while true do end", nil).Err() }()
	// Redis answers BUSY once the script has run past the threshold.
	other := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer other.Close()
	deadline := time.Now().Add(5 * time.Second)
	for other.Ping(ctx).Err() == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	assertUnavailable(t, l)

	if err := other.ScriptKill(ctx).Err(); err != nil {
		t.Fatalf("SCRIPT KILL: %v", err)
	}
	<-running
	if _, err := l.Acquire(ctx, "alice", "s1"); err != nil {
		t.Errorf("after the busy script was killed: %v", err)
	}
}
