package faults

import (
	"errors"
	"net"
	"net/http"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/internal/redistest"
)

func TestReplicaKilledLeasesExpire(t *testing.T) {
	const leaseTTL = 3 * time.Second // LEASE_TTL's minimum
	srv := redistest.Start(t)
	rdb := checker(t, srv.Addr)
	dying := startLimiterd(t, srv.Addr, "LEASE_TTL="+leaseTTL.String())
	serving := startLimiterd(t, srv.Addr, "LEASE_TTL="+leaseTTL.String())
	cfg := steadyLoad(2) // even players on the dying replica, odd on the other
	// No lease can lapse: the load lasts well under LEASE_TTL. The players
	// of the killed replica stop at their first connection error, so its
	// users get no call after the kill.
	cfg.reliable, cfg.stopOnTransportError = true, true
	l := startLoad(t, newCaller(t, dying, serving), cfg)

	time.Sleep(700 * time.Millisecond)
	killAt := time.Now()
	dying.Kill(t) // SIGKILL: no drain, no release
	dead := time.Now()
	time.Sleep(500 * time.Millisecond) // the other replica keeps serving
	outs := l.stop()

	// The killed replica's players may see their call cut, or refused, once
	// the kill starts; nothing else may fail.
	wantAnswers(t, outs, func(o outcome) bool {
		return o.replica == 0 && o.err != nil && !o.end.Before(killAt)
	})
	servedAfter := 0
	for _, o := range outs {
		if o.replica == 1 && o.start.After(dead) {
			servedAfter++
		}
	}
	if servedAfter == 0 {
		t.Errorf("the surviving replica served nothing after the kill")
	}
	users, leases := checkUserState(t, rdb)

	// Every lease the killed replica granted is gone LEASE_TTL after its
	// last renewal at the latest, with no one to release it: both keys of
	// each of its users expire at the latest lease's end (checked above).
	// Watch them go: EXISTS expires a key that is due as it reads it, so
	// each is seen gone within one poll of its end.
	type watch struct {
		user   string
		end    int64     // the latest lease's end, Unix ms on Redis's clock
		goneAt time.Time // when the test first saw both keys gone
	}
	var watches []*watch
	orphans := 0
	ctx := redisCtx(t)
	for _, p := range l.players {
		if p.replica != 0 {
			continue
		}
		for _, user := range p.users {
			zs, err := rdb.ZRangeWithScores(ctx, streamsKey(user), 0, -1).Result()
			if err != nil {
				t.Fatalf("ZRANGE %s: %v", streamsKey(user), err)
			}
			if len(zs) > 0 {
				watches = append(watches, &watch{user: user, end: int64(zs[len(zs)-1].Score)})
				orphans += len(zs)
			}
		}
	}
	if len(watches) == 0 {
		t.Fatal("the killed replica left no lease: nothing to watch expire")
	}
	deadline := dead.Add(leaseTTL + 2*time.Second)
	for remaining := len(watches); remaining > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d users of the killed replica still hold leases %v after the kill (LEASE_TTL %v)",
				remaining, time.Since(dead), leaseTTL)
		}
		cmds := map[*watch][2]*redis.IntCmd{}
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, w := range watches {
				if w.goneAt.IsZero() {
					cmds[w] = [2]*redis.IntCmd{p.Exists(ctx, streamsKey(w.user)), p.Exists(ctx, keysKey(w.user))}
				}
			}
			return nil
		})
		seen := time.Now() // after the reply: every key read as gone was gone by now
		if err != nil {
			t.Fatalf("EXISTS: %v", err)
		}
		for w, c := range cmds {
			if c[0].Val() == 0 && c[1].Val() == 0 {
				w.goneAt = seen
				remaining--
			}
		}
		time.Sleep(10 * time.Millisecond)
	}

	var late []time.Duration
	var lastGone time.Time
	for _, w := range watches {
		// Seen gone before its end would be a lease cut short.
		if w.goneAt.UnixMilli() < w.end {
			t.Errorf("%s's keys were gone at %d, before its latest lease's end %d", w.user, w.goneAt.UnixMilli(), w.end)
		}
		late = append(late, time.Duration(w.goneAt.UnixMilli()-w.end)*time.Millisecond)
		if w.goneAt.After(lastGone) {
			lastGone = w.goneAt
		}
	}
	median, worst := spread(late)
	report(t, "replica killed", "requests", len(outs), "served_after_kill", servedAfter,
		"statuses", statusCounts(outs), "users", users, "leases", leases)
	report(t, "replica killed: expiry", "lease_ttl", leaseTTL, "dead_users", len(watches), "dead_leases", orphans,
		"last_gone_after_kill", ms(lastGone.Sub(dead)), "gone_after_end_median", median, "gone_after_end_worst", worst)
}

func TestSIGTERMDrainsRequestsInFlight(t *testing.T) {
	// To hold requests in flight for a known time, Redis is paused while
	// the players call: each player's call then waits in limiterd for Redis.
	// REDIS_TIMEOUT is 5 s here, far above how long Redis stays paused, so
	// those calls end with real answers once Redis resumes, not 503s: the
	// test sees that a draining server finishes them with their true
	// answer.
	const holdTimeout = 5 * time.Second
	srv := redistest.Start(t)
	rdb := checker(t, srv.Addr)
	svc := startLimiterd(t, srv.Addr, "REDIS_TIMEOUT="+holdTimeout.String(), "SHUTDOWN_TIMEOUT=10s")
	cfg := steadyLoad(1)
	cfg.players, cfg.reliable, cfg.stopOnTransportError = 16, true, true
	l := startLoad(t, newCaller(t, svc), cfg)

	time.Sleep(300 * time.Millisecond)
	srv.Pause(t)
	pausedAt := time.Now()
	// Each player's next call blocks. Wait until every player has a call
	// written, then a little more: a request written but not yet read by the
	// server travels on a connection the server still counts as idle, and
	// Shutdown closes idle connections at once.
	for !allInFlight(l.players) {
		if time.Since(pausedAt) > 2*time.Second {
			t.Fatal("not every player had a call in flight 2s after Redis paused")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)

	termAt := time.Now()
	svc.Signal(t, syscall.SIGTERM)
	// Shutdown closes the listener first: new connections are refused.
	var refusedAfter time.Duration
	for {
		c, err := net.DialTimeout("tcp", svc.Addr, 500*time.Millisecond)
		if err == nil {
			c.Close()
		} else if errors.Is(err, syscall.ECONNREFUSED) {
			refusedAfter = time.Since(termAt)
			break
		}
		if time.Since(termAt) > waitBound {
			t.Fatalf("new connections still not refused %v after SIGTERM (last: %v)", waitBound, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	select {
	case <-svc.Exited():
		t.Fatalf("limiterd exited with requests in flight (Redis still paused):\n%s", svc.Output())
	default:
	}
	resumeAt := time.Now()
	srv.Resume(t)
	code := svc.Wait(t, waitBound)
	exitAt := time.Now()
	outs := l.stop()

	if code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	// A call made before SIGTERM was answered, whatever its connection; a
	// call made after it was answered (it came before the listener closed)
	// or refused at connect.
	wantAnswers(t, outs, func(o outcome) bool {
		return o.start.After(termAt) && errors.Is(o.err, syscall.ECONNREFUSED)
	})
	var held []time.Duration
	refused := 0
	ctx := redisCtx(t)
	for _, o := range outs {
		if o.err != nil {
			refused++
			continue
		}
		if !o.start.Before(termAt) || !o.end.After(termAt) {
			continue
		}
		held = append(held, o.took())
		if o.op == opAcquire && o.status == http.StatusOK {
			// Answered while draining: the lease must be real.
			key, err := rdb.HGet(ctx, keysKey(o.user), o.stream).Result()
			if err != nil || key != o.key {
				t.Errorf("HGET %s %s = %q, %v; want the key answered while draining: %v", keysKey(o.user), o.stream, key, err, o)
			}
		}
	}
	if len(held) != cfg.players {
		t.Errorf("%d calls in flight at SIGTERM were answered, want one per player: %d", len(held), cfg.players)
	}
	median, worst := spread(held)
	report(t, "sigterm", "requests", len(outs), "in_flight", len(held), "in_flight_median", median,
		"in_flight_worst", worst, "refused_calls", refused, "statuses", statusCounts(outs))
	report(t, "sigterm: timing", "refused_after_term", ms(refusedAfter), "resume_after_term", ms(resumeAt.Sub(termAt)),
		"exit_after_term", ms(exitAt.Sub(termAt)), "exit_after_resume", ms(exitAt.Sub(resumeAt)), "exit_code", code)
}

func allInFlight(players []*player) bool {
	return !slices.ContainsFunc(players, func(p *player) bool { return !p.inFlight.Load() })
}
