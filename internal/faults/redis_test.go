package faults

import (
	"context"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/internal/redistest"
	"github.com/limiterd/limiterd/internal/servicetest"
)

// The load of these tests: 12 players on two replicas, 6 users each, 5
// streams a user (over the limit of 3, so some acquires are refused), a
// call every 10 ms per player at most.
func steadyLoad(replicas int) loadConfig {
	return loadConfig{
		players: 12, usersPerPlayer: 6, streamsPerUser: 5, pace: 10 * time.Millisecond,
		replica: func(player int) int { return player % replicas },
	}
}

// unavailableBound is the longest a 503 may take before it counts as a hang.
const unavailableBound = redisTimeout + hangMargin

// checkOutage checks the exchanges made wholly while Redis was away: each
// one a 503 redis_unavailable with Retry-After, in time, so no lease was
// granted. It returns their latencies.
func checkOutage(t *testing.T, outs []outcome, from, to time.Time) []time.Duration {
	t.Helper()
	var took []time.Duration
	for _, o := range outs {
		if !o.during(from, to) {
			continue
		}
		took = append(took, o.took())
		switch {
		case o.op == opAcquire && o.status == http.StatusOK:
			t.Errorf("admitted while Redis was away: %v", o)
		case !o.unavailable():
			t.Errorf("while Redis was away, want 503 redis_unavailable with Retry-After: 1: %v", o)
		}
	}
	if len(took) == 0 {
		t.Fatalf("no exchange began and ended within the outage (%v): the load stopped, or every call outlasted it", to.Sub(from))
	}
	return took
}

// unavailableTimes returns the latencies of every 503, those that began
// before the fault or ended after it included.
func unavailableTimes(outs []outcome) []time.Duration {
	var took []time.Duration
	for _, o := range outs {
		if o.status == http.StatusServiceUnavailable {
			took = append(took, o.took())
		}
	}
	return took
}

// checkNoHang fails the test for every call slower than unavailableBound:
// a request waiting on Redis must give up after REDIS_TIMEOUT, and one
// that does not need to wait is far quicker.
func checkNoHang(t *testing.T, outs []outcome) {
	t.Helper()
	slow := 0
	for _, o := range outs {
		if o.took() <= unavailableBound {
			continue
		}
		if slow++; slow <= 10 {
			t.Errorf("took over REDIS_TIMEOUT %v + %v: %v", redisTimeout, hangMargin, o)
		}
	}
	if slow > 10 {
		t.Errorf("... and %d more calls over REDIS_TIMEOUT + %v", slow-10, hangMargin)
	}
}

func TestRedisKilledUnderLoad(t *testing.T) {
	srv := redistest.Start(t)
	replicas := []*servicetest.Service{startLimiterd(t, srv.Addr), startLimiterd(t, srv.Addr)}
	// Redis comes back empty, so the players' leases are forgotten: not
	// reliable.
	l := startLoad(t, newCaller(t, replicas...), steadyLoad(len(replicas)))

	time.Sleep(400 * time.Millisecond) // steady load before the fault
	srv.Kill(t)
	down := time.Now()
	// A 503 takes about REDIS_TIMEOUT even with the port closed (the client
	// retries its dial until the deadline): 1.5 s gives each player two
	// calls wholly inside the outage.
	time.Sleep(1500 * time.Millisecond)
	restartAt := time.Now()
	srv.Restart(t) // same port, no data, no scripts; returns once it answers PING
	up := time.Now()
	// The replicas recover by themselves, not at once: after PoolSize failed
	// dials, go-redis stops dialling and probes once a second in the
	// background (internal/pool tryDial), so answers stay 503 for up to
	// about a second after Redis is back.
	ready := readyAfter(t, up, replicas...)
	firstOK := waitFirst(t, l, up, func(o outcome) bool { return o.status == http.StatusOK })
	readyAt := up.Add(slices.Max(ready))
	time.Sleep(300 * time.Millisecond) // steady load after the recovery
	outs := l.stop()

	checkNoHang(t, outs)
	took := checkOutage(t, outs, down, restartAt)
	// Around the kill and the restart a call may get a 503; an answer from
	// a Redis that forgot everything (410 on a heartbeat) is documented.
	wantAnswers(t, outs, outcome.unavailable)
	lateUnavailable := 0
	for _, o := range outs {
		if o.start.After(readyAt) && o.status == http.StatusServiceUnavailable {
			lateUnavailable++ // a pooled connection to the killed process may fail once
		}
	}

	median, worst := spread(took)
	allMedian, allWorst := spread(unavailableTimes(outs))
	report(t, "redis killed", "requests", len(outs), "outage", ms(restartAt.Sub(down)),
		"503s", len(took), "median", median, "worst", worst,
		"all_503s_median", allMedian, "all_503s_worst", allWorst, "statuses", statusCounts(outs))
	report(t, "redis killed: recovery", "restart", ms(up.Sub(restartAt)),
		"first_200", ms(firstOK.end.Sub(up)), "ready", readyFigures(ready),
		"all_ready", ms(slices.Max(ready)), "503s_after_all_ready", lateUnavailable)
}

// waitFirst waits until the load has made an exchange that ended after
// since and matches, and returns it; it fails the test after waitBound.
func waitFirst(t *testing.T, l *load, since time.Time, match func(outcome) bool) outcome {
	t.Helper()
	for {
		var first *outcome
		for _, o := range l.all() {
			if o.end.After(since) && match(o) && (first == nil || o.end.Before(first.end)) {
				first = &o
			}
		}
		if first != nil {
			return *first
		}
		if time.Since(since) > waitBound {
			t.Fatalf("no matching answer within %v", waitBound)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readyFigures(ds []time.Duration) string {
	s := ""
	for i, d := range ds {
		if i > 0 {
			s += ","
		}
		s += ms(d)
	}
	return s
}

func TestRedisPausedUnderLoad(t *testing.T) {
	srv := redistest.Start(t)
	rdb := checker(t, srv.Addr)
	replicas := []*servicetest.Service{startLimiterd(t, srv.Addr), startLimiterd(t, srv.Addr)}
	cfg := steadyLoad(len(replicas))
	// Redis loses nothing while paused: leases last 60 s, so every belief of
	// the players must hold. A call answered 503 is retried, the same call,
	// once Redis is back, like a player honouring Retry-After.
	cfg.reliable, cfg.park, cfg.rdb = true, true, rdb
	l := startLoad(t, newCaller(t, replicas...), cfg)

	time.Sleep(400 * time.Millisecond)
	srv.Pause(t) // SIGSTOP: connections stay open, commands queue unanswered
	down := time.Now()
	time.Sleep(1500 * time.Millisecond)
	resumeAt := time.Now()
	srv.Resume(t)
	up := time.Now()
	ready := readyAfter(t, up, replicas...)
	// The commands written while Redis was stopped run at once when it
	// resumes, before it reads anything sent later, such as the /readyz
	// pings just answered; the sleep is slack on top. Only then do the
	// players retry, so that the test can read, before each retried
	// acquire, whether its first attempt was admitted after all.
	time.Sleep(100 * time.Millisecond)
	l.allowRetries()
	time.Sleep(500 * time.Millisecond) // steady load after the pause
	outs := l.stop()

	checkNoHang(t, outs)
	took := checkOutage(t, outs, down, resumeAt)
	wantAnswers(t, outs, outcome.unavailable)

	// Every retry found Redis consistent, and a retried acquire whose first
	// attempt had been admitted got that admission's key: no second slot.
	records := l.retryRecords()
	if len(records) == 0 {
		t.Fatal("no call was retried: the pause made no 503")
	}
	admittedUnseen, sameKey := 0, 0
	for _, r := range records {
		o := r.final
		if !slices.Equal(r.members, r.fields) {
			t.Errorf("after %v: set %q, hash %q; want the same streams", o, r.members, r.fields)
		}
		if len(r.members) > streamLimit {
			t.Errorf("after %v: the user holds %q, over the limit of %d", o, r.members, streamLimit)
		}
		if o.op != opAcquire || r.keyBefore == "" {
			continue
		}
		if o.status != http.StatusOK || o.key != r.keyBefore {
			t.Errorf("Redis held the stream with key %s before this retried acquire, want 200 with that key: %v", r.keyBefore, o)
		}
		sameKey++
		if !r.heldBefore {
			admittedUnseen++ // the first attempt got a 503 but was admitted
		}
	}

	// With every call resolved, what each player holds is exactly what
	// Redis holds for its users: no lease the player does not know of.
	ctx := redisCtx(t)
	for _, p := range l.players {
		for _, user := range p.users {
			got, err := rdb.HGetAll(ctx, keysKey(user)).Result()
			if err != nil {
				t.Fatalf("HGETALL %s: %v", keysKey(user), err)
			}
			if !maps.Equal(got, p.held[user]) {
				t.Errorf("%s: Redis holds %v, the player %v", user, got, p.held[user])
			}
		}
	}
	users, leases := checkUserState(t, rdb)

	median, worst := spread(took)
	allMedian, allWorst := spread(unavailableTimes(outs))
	report(t, "redis paused", "requests", len(outs), "pause", ms(resumeAt.Sub(down)),
		"503s", len(took), "median", median, "worst", worst,
		"all_503s_median", allMedian, "all_503s_worst", allWorst, "statuses", statusCounts(outs))
	report(t, "redis paused: retries", "retried", len(records), "acquires_same_key", sameKey,
		"admitted_while_503", admittedUnseen, "ready", readyFigures(ready), "users", users, "leases", leases)
}

func TestScriptFlushUnderLoad(t *testing.T) {
	srv := redistest.Start(t)
	rdb := checker(t, srv.Addr)
	replicas := []*servicetest.Service{startLimiterd(t, srv.Addr), startLimiterd(t, srv.Addr)}
	cfg := steadyLoad(len(replicas))
	cfg.reliable = true
	l := startLoad(t, newCaller(t, replicas...), cfg)

	time.Sleep(300 * time.Millisecond)
	ctx := redisCtx(t)
	evalsBefore := commandCalls(ctx, t, rdb, "eval")
	const flushes = 8
	for range flushes {
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatalf("SCRIPT FLUSH: %v", err)
		}
		time.Sleep(150 * time.Millisecond)
	}
	evals := commandCalls(ctx, t, rdb, "eval") - evalsBefore
	outs := l.stop()

	// Every script call after a flush gets NOSCRIPT and falls back to EVAL
	// within the same request: no answer may show it.
	bad := wantAnswers(t, outs, nil)
	if evals == 0 {
		t.Errorf("no EVAL during the flushes: the load never met an empty script cache")
	}
	users, leases := checkUserState(t, rdb)
	fivexx := 0
	for _, o := range outs {
		if o.status >= 500 {
			fivexx++
		}
	}
	report(t, "script flush", "requests", len(outs), "flushes", flushes, "eval_fallbacks", evals,
		"5xx", fivexx, "unexpected", bad, "statuses", statusCounts(outs), "users", users, "leases", leases)
}

// commandCalls returns how many times Redis has run the command, from INFO
// commandstats.
func commandCalls(ctx context.Context, t *testing.T, rdb *redis.Client, cmd string) int {
	t.Helper()
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	m := regexp.MustCompile(`(?m)^cmdstat_` + cmd + `:calls=(\d+)`).FindStringSubmatch(info)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
