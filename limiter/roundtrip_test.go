package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/internal/redistest"
	"github.com/limiterd/limiterd/limiter"
	"github.com/limiterd/limiterd/scripts"
)

// roundTripClient names the limiter's connection, so that the slow log can
// tell its commands from the observer's and from those the scripts run.
const roundTripClient = "limiter-under-test"

// roundTrips watches one redis-server of the test's own: INFO commandstats
// counts every command Redis ran (those a script runs inside Redis too,
// under their own names), and the slow log, told to keep every command, says
// which client sent each one (a script's own commands show no client).
type roundTrips struct {
	t   *testing.T
	obs *redis.Client // the observer's own connection
}

func newRoundTrips(t *testing.T) (*roundTrips, *redis.Client) {
	t.Helper()
	srv := redistest.Start(t, "--slowlog-log-slower-than", "0", "--slowlog-max-len", "100000")
	// One connection, dialled during the warm-up: its handshake (HELLO,
	// CLIENT SETNAME, CLIENT SETINFO) happens before anything is counted.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, ClientName: roundTripClient, PoolSize: 1, MaxIdleConns: 1})
	obs := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 1})
	t.Cleanup(func() { rdb.Close(); obs.Close() })
	return &roundTrips{t: t, obs: obs}, rdb
}

// reset zeroes the counters and empties the slow log.
func (r *roundTrips) reset(ctx context.Context) {
	r.t.Helper()
	if err := r.obs.ConfigResetStat(ctx).Err(); err != nil {
		r.t.Fatal(err)
	}
	if err := r.obs.SlowLogReset(ctx).Err(); err != nil {
		r.t.Fatal(err)
	}
}

// sent returns the commands the limiter's connection sent since reset, in
// order, each as its lower-case name and, for EVALSHA, the script's SHA.
func (r *roundTrips) sent(ctx context.Context) []string {
	r.t.Helper()
	entries, err := r.obs.SlowLogGet(ctx, -1).Result()
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, e := range slices.Backward(entries) { // the slow log lists the newest first
		if e.ClientName != roundTripClient || len(e.Args) == 0 {
			continue
		}
		cmd := strings.ToLower(e.Args[0])
		if cmd == "evalsha" && len(e.Args) > 1 {
			cmd += " " + e.Args[1]
		}
		out = append(out, cmd)
	}
	return out
}

// calls returns INFO commandstats as command name -> calls since reset.
func (r *roundTrips) calls(ctx context.Context) map[string]int {
	r.t.Helper()
	info, err := r.obs.Info(ctx, "commandstats").Result()
	if err != nil {
		r.t.Fatal(err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(rest, "calls="), ",")
		n, err := strconv.Atoi(calls)
		if err != nil {
			r.t.Fatalf("commandstats line %q: %v", line, err)
		}
		out[strings.TrimPrefix(name, "cmdstat_")] = n
	}
	return out
}

// observerCommands are what roundTrips itself sends.
var observerCommands = []string{"config|resetstat", "slowlog|reset", "slowlog|get", "info"}

// scriptCommands returns the commands the scripts call inside Redis, read
// from their source, so that a new redis.call in a script needs no change
// here.
func scriptCommands(t *testing.T) map[string]bool {
	t.Helper()
	call := regexp.MustCompile(`redis\.p?call\(\s*'([A-Za-z]+)'`)
	out := map[string]bool{}
	for _, name := range []string{"acquire.lua", "renew.lua", "release.lua", "active.lua"} {
		src, err := scripts.Source(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range call.FindAllStringSubmatch(src, -1) {
			out[strings.ToLower(m[1])] = true
		}
	}
	if !out["zadd"] || !out["time"] {
		t.Fatalf("reading the scripts' commands found only %v", out)
	}
	return out
}

// TestOneRoundTripPerCall calls each Limiter method n times on a warm
// script cache and checks, from INFO commandstats and the slow log, that
// each call was exactly one EVALSHA of that method's script (one PING for
// Ping): no EVAL, no second command, nothing else sent.
func TestOneRoundTripPerCall(t *testing.T) {
	ctx := context.Background()
	rt, rdb := newRoundTrips(t)
	lim, err := limiter.New(rdb, limiter.Config{Limit: 3, LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	inner := scriptCommands(t)

	// Warm-up: every script runs once (EVALSHA, NOSCRIPT, EVAL loads it),
	// and the leases the calls below renew and release exist.
	keys := map[string]string{}
	for _, s := range []string{"s0", "s1", "s2"} {
		lease, err := lim.Acquire(ctx, "renewer", s)
		if err != nil {
			t.Fatal(err)
		}
		keys[s] = lease.StreamKey
	}
	if _, err := lim.Renew(ctx, "renewer", "s0", keys["s0"]); err != nil {
		t.Fatal(err)
	}
	if _, err := lim.Release(ctx, "nobody", "s0", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := lim.Active(ctx, "nobody"); err != nil {
		t.Fatal(err)
	}

	const n = 25
	// ok accepts the domain answers a call may give: they are replies of the
	// script, not failures of the round trip.
	ok := func(err error) error {
		if err == nil || errors.Is(err, limiter.ErrLimitReached) || errors.Is(err, limiter.ErrLeaseInactive) ||
			errors.Is(err, limiter.ErrKeyMismatch) {
			return nil
		}
		return err
	}
	evalsha := func(s *redis.Script) string { return "evalsha " + s.Hash() }
	tests := []struct {
		name string
		want string // the one command each call must send
		call func(i int) error
	}{
		{"Acquire admits, renews and refuses", evalsha(scripts.Acquire), func(i int) error {
			_, err := lim.Acquire(ctx, fmt.Sprintf("user%d", i%4), fmt.Sprintf("s%d", i%5))
			return ok(err)
		}},
		{"Renew renews, mismatches and finds nothing", evalsha(scripts.Renew), func(i int) error {
			stream := fmt.Sprintf("s%d", i%4) // s3 was never acquired
			key := keys[stream]
			if i%5 == 0 {
				key = "not-the-key"
			}
			_, err := lim.Renew(ctx, "renewer", stream, key)
			return ok(err)
		}},
		{"Release with and without a key", evalsha(scripts.Release), func(i int) error {
			user := fmt.Sprintf("user%d", i%4)
			key := ""
			if i%2 == 0 {
				key = "not-the-key"
			}
			_, err := lim.Release(ctx, user, fmt.Sprintf("s%d", i%5), key)
			return ok(err)
		}},
		{"ReleaseSoonest", evalsha(scripts.Release), func(i int) error {
			_, err := lim.ReleaseSoonest(ctx, fmt.Sprintf("user%d", i%4))
			return ok(err)
		}},
		{"Active", evalsha(scripts.Active), func(i int) error {
			_, err := lim.Active(ctx, fmt.Sprintf("user%d", i%4))
			return ok(err)
		}},
		{"Ping", "ping", func(int) error { return lim.Ping(ctx) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt.t = t
			rt.reset(ctx)
			for i := range n {
				if err := tt.call(i); err != nil {
					t.Fatalf("call %d: %v", i, err)
				}
			}
			sent := rt.sent(ctx)
			calls := rt.calls(ctx)

			wantSent := slices.Repeat([]string{tt.want}, n)
			if !slices.Equal(sent, wantSent) {
				t.Errorf("the limiter's connection sent %d commands %q, want %d times %q", len(sent), sent, n, tt.want)
			}
			wantName, _, _ := strings.Cut(tt.want, " ")
			if calls[wantName] != n {
				t.Errorf("commandstats: %s calls = %d, want %d", wantName, calls[wantName], n)
			}
			if wantName == "evalsha" && calls["eval"] != 0 {
				t.Errorf("commandstats: %d EVAL, want none on a warm script cache", calls["eval"])
			}
			for name, c := range calls {
				if name == wantName || inner[name] || slices.Contains(observerCommands, name) {
					continue
				}
				t.Errorf("commandstats: %d calls of %s, which neither the call nor its script sends", c, name)
			}
		})
	}
}

// TestEmptyScriptCacheCostsOneMoreRoundTrip shows the count above can see
// an extra round trip: after SCRIPT FLUSH the first call is an EVALSHA that
// fails with NOSCRIPT, then the EVAL that loads the script; later calls are
// one EVALSHA again.
func TestEmptyScriptCacheCostsOneMoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	rt, rdb := newRoundTrips(t)
	lim, err := limiter.New(rdb, limiter.Config{Limit: 3, LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lim.Acquire(ctx, "alice", "s1"); err != nil { // dials the connection
		t.Fatal(err)
	}
	if err := rt.obs.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	rt.reset(ctx)
	for i := range 3 {
		if _, err := lim.Acquire(ctx, "alice", fmt.Sprintf("s%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	acquire := "evalsha " + scripts.Acquire.Hash()
	want := []string{acquire, "eval", acquire, acquire}
	if sent := rt.sent(ctx); !slices.Equal(sent, want) {
		t.Errorf("sent %q, want %q", sent, want)
	}
	if calls := rt.calls(ctx); calls["evalsha"] != 3 || calls["eval"] != 1 {
		t.Errorf("commandstats: evalsha %d, eval %d; want 3 and 1", calls["evalsha"], calls["eval"])
	}
}
