package scripts_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/internal/redistest"
	"github.com/limiterd/limiterd/limiter"
)

// The operator scripts run with bash and redis-cli, as an operator would,
// against state written by the real limiter: on a real redis-server, and on
// miniredis listening on TCP, which `make run` embeds.

// scriptTimeout bounds every script run, so that a hung redis-cli fails the
// test instead of stalling it. Generous: the machine may be busy, and
// top-users.sh --scan-count 1 makes dozens of redis-cli calls.
const scriptTimeout = 2 * time.Minute

// callTimeout is the scripts' own bound on one redis-cli call (-t), raised
// from its default of 5s for a busy test machine.
const callTimeout = "20"

// backend is a Redis the scripts and the limiter both reach.
type backend struct {
	name string
	// start returns a client for seeding, and the script flags and
	// environment that reach the same server.
	start func(t *testing.T) (rdb redis.UniversalClient, flags, env []string)
}

var backends = []backend{
	{"redis-server", func(t *testing.T) (redis.UniversalClient, []string, []string) {
		// A server of the test's own, or the one REDIS_TEST_* names (every
		// test keeps to its own key prefix there). The scripts get the
		// service's settings for it (REDIS_MODE, REDIS_URL, REDIS_TLS_*...),
		// as an operator on the service's host would have them.
		if redistest.Mode() == "sentinel" {
			t.Skip("REDIS_TEST_MODE=sentinel: the scripts need the primary's address (-h/-p), which the test does not know")
		}
		cfg := redistest.Config(t)
		return redistest.NewClient(t, cfg), nil, redistest.Env(cfg)
	}},
	{"miniredis", func(t *testing.T) (redis.UniversalClient, []string, []string) {
		m := miniredis.RunT(t) // a real TCP listener, as in make run
		rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
		t.Cleanup(func() { rdb.Close() })
		return rdb, []string{"-p", m.Port()}, nil // the form make run's log suggests
	}},
}

// fixture is what seed wrote, through the limiter.
type fixture struct {
	prefix string
	leases map[string][]limiter.Lease // user -> leases, in acquire order
}

// seed gives, under a fresh prefix:
//
//	dave   5 live
//	alice  3 live (movie-1..3) and 1 ended lease still stored (stale)
//	bob    2 live
//	carol  1 live and 3 ended leases still stored
//	alice2 1 live
//
// so that counting stored members (ZCARD) would rank carol (4) above bob (2)
// and count 16, where live members rank bob above carol and count 12. The
// same user IDs under another prefix must never show.
func seed(t *testing.T, rdb redis.UniversalClient) fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := fixture{prefix: "optest-" + randomHex(t), leases: map[string][]limiter.Lease{}}
	newLimiter := func(prefix string, ttl time.Duration) *limiter.Limiter {
		l, err := limiter.New(rdb, limiter.Config{Limit: 10, LeaseTTL: ttl, KeyPrefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	long := newLimiter(f.prefix, 90*time.Second)
	// Long enough that the short leases of one user are all acquired before
	// the first ends (an acquire prunes what has ended), even on a busy
	// machine; checked below.
	short := newLimiter(f.prefix, time.Second)
	other := newLimiter("other-"+f.prefix, 90*time.Second)

	acquire := func(l *limiter.Limiter, user string, streams ...string) {
		for _, s := range streams {
			lease, err := l.Acquire(ctx, user, s)
			if err != nil {
				t.Fatalf("acquire %s/%s: %v", user, s, err)
			}
			f.leases[user] = append(f.leases[user], lease)
		}
	}
	acquire(long, "dave", "d1", "d2", "d3", "d4", "d5")
	acquire(long, "alice", "movie-1", "movie-2", "movie-3")
	acquire(long, "bob", "b1", "b2")
	acquire(long, "carol", "c-live")
	acquire(long, "alice2", "a2")
	// Short leases last, for users who already hold a long one: no later
	// call prunes them, and the keys live on with the long lease.
	acquire(short, "alice", "stale")
	acquire(short, "carol", "c-old1", "c-old2", "c-old3")
	for _, s := range []string{"z1", "z2", "z3", "z4", "z5", "z6", "z7", "z8"} {
		if _, err := other.Acquire(ctx, "zed", s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := other.Acquire(ctx, "alice", "elsewhere"); err != nil {
		t.Fatal(err)
	}

	for user, want := range map[string]int64{"alice": 4, "carol": 4} {
		key, _ := long.Keys(user)
		if n, err := rdb.ZCard(ctx, key).Result(); err != nil || n != want {
			t.Fatalf("%s holds %d leases (%v), want %d: were short leases pruned while seeding?", user, n, err, want)
		}
	}

	// Wait for the short leases to end on Redis's clock, the only one that
	// counts. Nothing prunes them afterwards: only limiter calls do.
	last := f.leases["carol"][len(f.leases["carol"])-1].ExpiresAt
	for {
		now, err := rdb.Time(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if now.After(last) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Redis's clock did not pass %v", last)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return f
}

func (f fixture) lease(t *testing.T, user, stream string) limiter.Lease {
	t.Helper()
	for _, l := range f.leases[user] {
		if l.StreamID == stream {
			return l
		}
	}
	t.Fatalf("no lease %s/%s in the fixture", user, stream)
	return limiter.Lease{}
}

// streamKeys lists every stream key the fixture handed out.
func (f fixture) streamKeys() []string {
	var keys []string
	for _, leases := range f.leases {
		for _, l := range leases {
			keys = append(keys, l.StreamKey)
		}
	}
	return keys
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs scripts/NAME with bash, in an environment stripped of the
// developer's Redis settings, and stdin as given.
func run(t *testing.T, env []string, stdin, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), scriptTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{name}, args...)...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %q did not finish within %v\nstdout:\n%s\nstderr:\n%s", name, args, scriptTimeout, &stdout, &stderr)
	}
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("%s: %v", name, err)
	}
	return r
}

// cleanEnv is the test's environment without the settings the scripts read,
// so that a developer's REDIS_URL cannot point them elsewhere.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "REDIS_") || name == "KEY_PREFIX" || name == "REDISCLI_AUTH" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// requireTools skips without bash or redis-cli locally, and fails in CI,
// where .ci/run installs redis-cli with redis-server.
func requireTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"bash", "redis-cli"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is required in CI: %v", tool, err)
			}
			t.Skipf("%s not installed (apt-get install redis-tools): %v", tool, err)
		}
	}
}

func randomHex(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// table returns the fields of the indented lines under the first line that
// starts with heading, up to the next line that is not indented.
func table(out, heading string) [][]string {
	var rows [][]string
	in := false
	for _, line := range strings.Split(out, "\n") {
		switch {
		case !in && strings.HasPrefix(line, heading):
			in = true
		case in && strings.HasPrefix(line, "  "):
			rows = append(rows, strings.Fields(line))
		case in:
			return rows
		}
	}
	return rows
}

func utc(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

var uuidPattern = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// assertNoStreamKeys fails when output holds a stream key: they are the
// players' secrets, shown only on request.
func assertNoStreamKeys(t *testing.T, f fixture, output string) {
	t.Helper()
	for _, k := range f.streamKeys() {
		if strings.Contains(output, k) {
			t.Errorf("output shows the stream key %s:\n%s", k, output)
		}
	}
	if m := uuidPattern.FindString(output); m != "" {
		t.Errorf("output shows a UUID %s:\n%s", m, output)
	}
}

func TestOperatorScripts(t *testing.T) {
	requireTools(t)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			rdb, conn, env := b.start(t)
			f := seed(t, rdb)
			env = append(env, "KEY_PREFIX="+f.prefix)
			script := func(stdin, name string, args ...string) result {
				t.Helper()
				return run(t, env, stdin, name, append(slices.Clone(conn), append([]string{"-t", callTimeout}, args...)...)...)
			}
			t.Run("sessions", func(t *testing.T) { testSessions(t, f, script) })
			t.Run("top-users", func(t *testing.T) { testTopUsers(t, f, script) })
			t.Run("free-user", func(t *testing.T) { testFreeUser(t, f, rdb, script) })
			t.Run("hand-made key", func(t *testing.T) { testHandMadeKey(t, f, rdb, script) })
		})
	}
}

type scriptFunc func(stdin, name string, args ...string) result

func testSessions(t *testing.T, f fixture, script scriptFunc) {
	r := script("", "sessions.sh", "alice")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("sessions.sh alice: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if !strings.HasPrefix(r.stdout, "user alice: 3 live streams at Redis time ") {
		t.Errorf("first line is not the live count:\n%s", r.stdout)
	}
	live := table(r.stdout, "  STREAM   EXPIRES AT (UTC)")
	if len(live) != 3 {
		t.Fatalf("%d live rows, want 3 (movie-1..3, not stale):\n%s", len(live), r.stdout)
	}
	for i, want := range []string{"movie-1", "movie-2", "movie-3"} { // soonest expiry first
		row := live[i]
		lease := f.lease(t, "alice", want)
		if len(row) != 3 || row[0] != want || row[1] != utc(lease.ExpiresAt) {
			t.Errorf("live row %d = %q, want [%s %s <in>]", i, row, want, utc(lease.ExpiresAt))
			continue
		}
		if in, err := time.ParseDuration(row[2]); err != nil || in <= 0 || in > 90*time.Second {
			t.Errorf("%s expires in %q, want a duration in (0, 90s]", want, row[2])
		}
	}
	if !strings.Contains(r.stdout, "\n1 ended lease still stored") {
		t.Errorf("the ended lease is not reported apart:\n%s", r.stdout)
	}
	ended := table(r.stdout, "  STREAM   ENDED AT (UTC)")
	stale := f.lease(t, "alice", "stale")
	if len(ended) != 1 || len(ended[0]) != 4 || ended[0][0] != "stale" || ended[0][1] != utc(stale.ExpiresAt) || ended[0][3] != "ago" {
		t.Errorf("ended rows = %q, want [[stale %s <d> ago]]", ended, utc(stale.ExpiresAt))
	}
	assertNoStreamKeys(t, f, r.stdout+r.stderr)
	if t.Failed() {
		t.Logf("sessions.sh alice:\n%s", r.stdout)
	}

	t.Run("show-keys", func(t *testing.T) {
		r := script("", "sessions.sh", "--show-keys", "alice")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		rows := append(table(r.stdout, "  STREAM   EXPIRES AT (UTC)"), table(r.stdout, "  STREAM   ENDED AT (UTC)")...)
		if len(rows) != 4 {
			t.Fatalf("%d rows, want 4:\n%s", len(rows), r.stdout)
		}
		for _, row := range rows {
			if want := f.lease(t, "alice", row[0]).StreamKey; row[len(row)-1] != want {
				t.Errorf("%s: key column %q, want %s", row[0], row[len(row)-1], want)
			}
		}
	})

	t.Run("unknown user", func(t *testing.T) {
		r := script("", "sessions.sh", "nobody")
		want := "user nobody: no live streams (no key " + f.prefix + ":{nobody}:streams)"
		if r.code != 0 || !strings.HasPrefix(r.stdout, want) {
			t.Errorf("exit %d, stdout %q, want 0 and %q", r.code, r.stdout, want)
		}
	})
}

func testTopUsers(t *testing.T, f fixture, script scriptFunc) {
	// On a cluster the line goes on with the primaries walked.
	summary := "5 users hold 12 live streams; 4 ended leases still stored, not counted (5 keys matched " + f.prefix + ":{*}:streams"
	isSummary := func(line string) bool { return strings.HasPrefix(line, summary) && strings.HasSuffix(line, ")") }
	all := [][]string{
		{"1", "5", "dave"}, {"2", "3", "alice"}, {"3", "2", "bob"},
		{"4", "1", "alice2"}, {"5", "1", "carol"}, // ties by user ID
	}
	for _, tc := range []struct {
		name string
		args []string
		want [][]string
	}{
		{"default", nil, all},
		{"top 2", []string{"2"}, all[:2]},
		{"-n 3", []string{"-n", "3"}, all[:3]},
		{"all", []string{"0"}, all},
		// The path for cluster nodes and accounts without EVAL.
		{"no-eval", []string{"--no-eval"}, all},
		// A SCAN page of one key: many pages, as on a big keyspace.
		{"small pages", []string{"--scan-count", "1"}, all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := script("", "top-users.sh", tc.args...)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
			}
			rows := table(r.stdout, "(live: ")
			if len(rows) == 0 || !slices.Equal(rows[0], []string{"RANK", "LIVE", "USER"}) {
				t.Fatalf("no RANK LIVE USER table:\n%s", r.stdout)
			}
			if !slices.EqualFunc(rows[1:], tc.want, slices.Equal) {
				t.Errorf("rows = %q, want %q\n%s", rows[1:], tc.want, r.stdout)
			}
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			if got := lines[len(lines)-1]; !isSummary(got) {
				t.Errorf("summary:\n got %q\nwant %q", got, summary)
			}
			assertNoStreamKeys(t, f, r.stdout)
		})
	}

	t.Run("no user", func(t *testing.T) {
		r := script("", "top-users.sh", "-k", f.prefix+"-none")
		want := "  (none)\n0 users hold 0 live streams; 0 ended leases still stored, not counted (0 keys matched " + f.prefix + "-none:{*}:streams"
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("exit %d, stdout %q, want it to hold %q", r.code, r.stdout, want)
		}
	})

	t.Run("summary only", func(t *testing.T) {
		r := script("", "top-users.sh", "--summary")
		if r.code != 0 || strings.Count(r.stdout, "\n") != 1 || !isSummary(strings.TrimSuffix(r.stdout, "\n")) {
			t.Errorf("exit %d, stdout %q, want one line %q...", r.code, r.stdout, summary)
		}
	})
}

func testFreeUser(t *testing.T, f fixture, rdb redis.UniversalClient, script scriptFunc) {
	// Every key seed may have written, under both prefixes: freeing must
	// remove exactly two of them. EXISTS one by one works on any topology.
	var candidates []string
	for _, prefix := range []string{f.prefix, "other-" + f.prefix} {
		for _, user := range []string{"alice", "alice2", "bob", "carol", "dave", "zed"} {
			candidates = append(candidates, prefix+":{"+user+"}:streams", prefix+":{"+user+"}:keys")
		}
	}
	keys := func() []string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var existing []string
		for _, k := range candidates {
			n, err := rdb.Exists(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				existing = append(existing, k)
			}
		}
		slices.Sort(existing)
		return existing
	}
	without := func(all []string, user string) []string {
		return slices.DeleteFunc(slices.Clone(all), func(k string) bool {
			return k == f.prefix+":{"+user+"}:streams" || k == f.prefix+":{"+user+"}:keys"
		})
	}

	before := keys()
	if len(before) != 14 { // 5 users and zed, alice elsewhere: two keys each
		t.Fatalf("seed left %d keys, want 14: %q", len(before), before)
	}
	for _, answer := range []string{"", "n\n", "no\n", "maybe\n"} {
		r := script(answer, "free-user.sh", "alice")
		if r.code != 1 || !strings.Contains(r.stderr, "not confirmed: nothing deleted") {
			t.Errorf("answer %q: exit %d, stderr %q, want 1 and not confirmed", answer, r.code, r.stderr)
		}
		if after := keys(); !slices.Equal(after, before) {
			t.Fatalf("answer %q deleted keys: %q -> %q", answer, before, after)
		}
	}

	r := script("", "free-user.sh", "-y", "alice")
	if r.code != 0 || !strings.Contains(r.stdout, "freed alice: DEL "+f.prefix+":{alice}:streams "+f.prefix+":{alice}:keys removed 2 key(s)") {
		t.Errorf("free-user.sh -y alice: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	// It shows what goes (sessions.sh, without keys) before it deletes.
	if !strings.HasPrefix(r.stdout, "user alice: 3 live streams") {
		t.Errorf("free-user.sh did not show the user's streams first:\n%s", r.stdout)
	}
	assertNoStreamKeys(t, f, r.stdout+r.stderr)
	want := without(before, "alice")
	if after := keys(); !slices.Equal(after, want) || len(want) != len(before)-2 {
		t.Fatalf("keys after freeing alice:\n got %q\nwant %q", after, want)
	}

	r = script("y\n", "free-user.sh", "bob")
	if r.code != 0 {
		t.Errorf("answer y: exit %d, stderr %q", r.code, r.stderr)
	}
	if after := keys(); !slices.Equal(after, without(want, "bob")) {
		t.Fatalf("keys after freeing bob:\n got %q\nwant %q", after, without(want, "bob"))
	}

	r = script("", "free-user.sh", "-y", "alice")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "nothing to free") {
		t.Errorf("freeing alice again: exit %d, stdout %q", r.code, r.stdout)
	}
}

// TestOperatorScriptErrors checks the command-line and connection errors:
// each exits non-zero with one line that says what is wrong, within a bound.
func TestOperatorScriptErrors(t *testing.T) {
	requireTools(t)
	closed := redistest.ClosedAddr(t)
	_, closedPort, _ := net.SplitHostPort(closed)
	silent := redistest.Silent(t)
	_, silentPort, _ := net.SplitHostPort(silent)

	for _, tc := range []struct {
		name       string
		env        []string
		script     string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"sessions without user", nil, "sessions.sh", nil, 2, "sessions.sh: no USER_ID given"},
		{"free-user without user", nil, "free-user.sh", []string{"-y"}, 2, "free-user.sh: no USER_ID given"},
		{"two users", nil, "sessions.sh", []string{"alice", "bob"}, 2, "one USER_ID only"},
		{"invalid user", nil, "sessions.sh", []string{"a b"}, 2, "'a b' is not a user ID"},
		{"percent-encoded user", nil, "free-user.sh", []string{"carol%40example.com"}, 2, "write carol@example.com"},
		{"unknown option", nil, "top-users.sh", []string{"--frobnicate"}, 2, "unknown option --frobnicate"},
		{"bad N", nil, "top-users.sh", []string{"-n", "ten"}, 2, "-n: 'ten' is not a whole number"},
		{"flag without value", nil, "sessions.sh", []string{"alice", "-p"}, 2, "-p needs a value"},
		{"prefix with braces", []string{"KEY_PREFIX=a{b}"}, "sessions.sh", []string{"alice"}, 2, "key prefix 'a{b}' must be non-empty, without braces"},
		{"url and port", nil, "sessions.sh", []string{"-u", "redis://" + closed, "-p", "1", "alice"}, 2, "give either -u URL or -h/-p"},
		{"unreachable, -p", nil, "sessions.sh", []string{"-p", closedPort, "alice"}, 1, "cannot reach Redis at 127.0.0.1:" + closedPort + ": "},
		{"unreachable, REDIS_URL", []string{"REDIS_URL=redis://" + closed + "/0"}, "top-users.sh", nil, 1, "cannot reach Redis at redis://" + closed + "/0: "},
		{"unreachable, password hidden", nil, "free-user.sh", []string{"-u", "redis://ops:s3cret@" + closed, "-y", "alice"}, 1, "cannot reach Redis at redis://ops:***@" + closed},
		{"sentinel URL", []string{"REDIS_MODE=sentinel", "REDIS_URL=redis://" + closed + "?master_name=m"}, "sessions.sh", []string{"alice"}, 1, "REDIS_MODE=sentinel: REDIS_URL names a sentinel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, tc.env, "", tc.script, tc.args...)
			if r.code != tc.wantCode || !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", r.code, r.stderr, tc.wantCode, tc.wantStderr)
			}
			if strings.Contains(r.stderr, "s3cret") {
				t.Errorf("stderr shows the password: %q", r.stderr)
			}
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		// redis-cli goes on as the default user after a refused AUTH when
		// that user needs no password, as on this server: the scripts stop.
		url := redistest.URL(t)
		env := []string{"REDIS_URL=" + url, "REDIS_USERNAME=ops", "REDIS_PASSWORD=wrong"}
		for _, args := range [][]string{{"sessions.sh", "alice"}, {"top-users.sh"}, {"free-user.sh", "-y", "alice"}} {
			name := args[0]
			r := run(t, env, "", name, append([]string{"-t", callTimeout}, args[1:]...)...)
			if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "refused the credentials: AUTH failed: WRONGPASS") {
				t.Errorf("%s: exit %d, stdout %q, stderr %q; want 1, nothing, and refused the credentials", name, r.code, r.stdout, r.stderr)
			}
		}
	})

	t.Run("hung Redis", func(t *testing.T) {
		if _, err := exec.LookPath("timeout"); err != nil {
			t.Skip("no timeout(1): the scripts then wait as long as redis-cli does")
		}
		want := "no answer from Redis at 127.0.0.1:" + silentPort + " within 0.5s"
		for _, args := range [][]string{
			{"sessions.sh", "alice"},
			{"top-users.sh"},
			{"free-user.sh", "-y", "alice"},
		} {
			r := run(t, nil, "", args[0], append([]string{"-p", silentPort, "-t", "0.5"}, args[1:]...)...)
			if r.code != 1 || !strings.Contains(r.stderr, want) {
				t.Errorf("%s: exit %d, stderr %q; want 1 and %q", args[0], r.code, r.stderr, want)
			}
		}
	})

	t.Run("usage", func(t *testing.T) {
		for _, name := range []string{"sessions.sh", "top-users.sh", "free-user.sh"} {
			r := run(t, nil, "", name, "--help")
			if r.code != 0 || !strings.HasPrefix(r.stdout, "Usage: "+name+" ") || !strings.Contains(r.stdout, "REDIS_URL") {
				t.Errorf("%s --help: exit %d, stdout:\n%s", name, r.code, r.stdout)
			}
		}
	})
}

// testHandMadeKey runs after testFreeUser (alice and bob are gone): a key
// the service never writes, a string where a sorted set belongs, must give a
// clear error for that user and be skipped, not fatal, when counting all.
func testHandMadeKey(t *testing.T, f fixture, rdb redis.UniversalClient, script scriptFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	weird := f.prefix + ":{weird}:streams"
	if err := rdb.Set(ctx, weird, "not a sorted set", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}

	r := script("", "sessions.sh", "weird")
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "sessions.sh: redis-cli ZRANGE failed against ") ||
		!strings.Contains(r.stderr, "WRONGTYPE") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("sessions.sh weird: exit %d\nstdout:\n%s\nstderr:\n%s\nwant exit 1 and one WRONGTYPE line", r.code, r.stdout, r.stderr)
	}

	for _, args := range [][]string{{"--summary"}, {"--summary", "--no-eval"}} {
		r = script("", "top-users.sh", args...)
		want := "3 users hold 7 live streams; 3 ended leases still stored, not counted (3 keys matched " + f.prefix + ":{*}:streams"
		if r.code != 0 || !strings.HasPrefix(r.stdout, want) || r.stderr != "top-users.sh: skipped "+weird+": not a sorted set (hand-made key?)\n" {
			t.Errorf("top-users.sh %q: exit %d\nstdout: %q\nwant:   %q\nstderr: %q", args, r.code, r.stdout, want, r.stderr)
		}
	}
}
