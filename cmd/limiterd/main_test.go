package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/internal/redistest"
)

// Bounds on every wait of these tests. They stop a hang; they are not speed
// targets.
const (
	startTimeout = 10 * time.Second // run logging that it listens
	stopTimeout  = 10 * time.Second // run returning once ctx is cancelled
	httpTimeout  = 10 * time.Second // one HTTP exchange
)

// logBuffer is the stderr given to run: a goroutine-safe writer that keeps
// everything logged and lets a test wait for a line.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	written chan struct{} // closed, and replaced, at every write
}

func newLogBuffer() *logBuffer {
	return &logBuffer{written: make(chan struct{})}
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.written)
	b.written = make(chan struct{})
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// line returns the first complete line holding every one of parts, and a
// channel closed at the next write.
func (b *logBuffer) line(parts ...string) (string, bool, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		if containsAll(sc.Text(), parts...) {
			return sc.Text(), true, nil
		}
	}
	return "", false, b.written
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// instance is one run of the program, started by startRun.
type instance struct {
	URL    string // http://host:port
	log    *logBuffer
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned
	err    error         // what run returned, once done is closed

	stopOnce sync.Once
}

// launch calls run in a goroutine with env as the whole environment and args
// as its arguments, and returns at once. Logs are text, which these tests
// read, unless env sets LOG_FORMAT.
func launch(t *testing.T, env map[string]string, args ...string) *instance {
	t.Helper()
	if _, set := env["LOG_FORMAT"]; !set {
		env = cloneWith(env, "LOG_FORMAT", "text")
	}
	ctx, cancel := context.WithCancel(context.Background())
	inst := &instance{log: newLogBuffer(), cancel: cancel, done: make(chan struct{})}
	getenv := func(name string) string { return env[name] }
	go func() {
		defer close(inst.done)
		inst.err = run(ctx, args, getenv, io.Discard, inst.log)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-inst.done:
		case <-time.After(stopTimeout):
			t.Errorf("run did not return within %v of the cancel", stopTimeout)
		}
		if t.Failed() {
			t.Logf("limiterd log:\n%s", inst.log)
		}
	})
	return inst
}

// startRun starts the program on a free loopback port with env (LISTEN_ADDR
// is set here), waits until it listens, and, at the end of the test, cancels
// it and checks that run returned nil.
func startRun(t *testing.T, env map[string]string) *instance {
	t.Helper()
	env = cloneWith(env, "LISTEN_ADDR", "127.0.0.1:0")
	inst := launch(t, env)
	line := inst.waitLog(t, `msg="limiterd listening"`)
	addr := logValue(t, line, "addr")
	if host, _, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" {
		t.Fatalf("listening on %q, want 127.0.0.1:PORT (line %q)", addr, line)
	}
	inst.URL = "http://" + addr
	t.Cleanup(func() { inst.stop(t) })
	return inst
}

// stop cancels run's context and checks that run returns nil in time. Only
// the first call does anything.
func (inst *instance) stop(t *testing.T) {
	t.Helper()
	inst.stopOnce.Do(func() {
		inst.cancel()
		select {
		case <-inst.done:
		case <-time.After(stopTimeout):
			t.Fatalf("run did not return within %v of the cancel", stopTimeout)
		}
		if inst.err != nil {
			t.Errorf("run returned %v, want nil", inst.err)
		}
	})
}

// waitLog waits for a logged line holding every one of parts and returns it.
// It fails the test if run returns first or the line is not logged in time.
func (inst *instance) waitLog(t *testing.T, parts ...string) string {
	t.Helper()
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	for {
		line, ok, written := inst.log.line(parts...)
		if ok {
			return line
		}
		select {
		case <-written:
		case <-inst.done:
			if line, ok, _ := inst.log.line(parts...); ok {
				return line
			}
			t.Fatalf("run returned %v before logging a line with %q; log:\n%s", inst.err, parts, inst.log)
		case <-deadline.C:
			t.Fatalf("no line with %q logged within %v; log:\n%s", parts, startTimeout, inst.log)
		}
	}
}

// logValue returns the value of key in a line of slog's text format.
func logValue(t *testing.T, line, key string) string {
	t.Helper()
	m := regexp.MustCompile(`(?:^| )` + regexp.QuoteMeta(key) + `=("(?:[^"\\]|\\.)*"|\S*)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no %s= in log line %q", key, line)
	}
	return strings.Trim(m[1], `"`)
}

func cloneWith(env map[string]string, kv ...string) map[string]string {
	out := make(map[string]string, len(env)+len(kv)/2)
	for k, v := range env {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// response is one HTTP answer, read in full.
type response struct {
	status int
	header http.Header
	body   []byte
}

var client = &http.Client{Timeout: httpTimeout}

// do sends one request; a non-empty body is sent as JSON.
func do(t *testing.T, method, url, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return response{resp.StatusCode, resp.Header, data}
}

// object checks the response's status and that its body is one JSON object
// with exactly the keys given, and returns it.
func (r response) object(t *testing.T, status int, keys ...string) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json; body %s", ct, r.body)
	}
	var obj map[string]any
	if err := json.Unmarshal(r.body, &obj); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	wantKeys(t, obj, keys...)
	return obj
}

func wantKeys(t *testing.T, obj map[string]any, keys ...string) {
	t.Helper()
	got := make([]string, 0, len(obj))
	for k := range obj {
		got = append(got, k)
	}
	slices.Sort(got)
	keys = slices.Sorted(slices.Values(keys))
	if !slices.Equal(got, keys) {
		t.Errorf("body keys %q, want %q; body %v", got, keys, obj)
	}
}

// wantError checks an error response: the status, exactly the keys error and
// msg, the code, and a sentence for people.
func (r response) wantError(t *testing.T, status int, code string) {
	t.Helper()
	obj := r.object(t, status, "error", "msg")
	if obj["error"] != code {
		t.Errorf("error %v, want %q; body %s", obj["error"], code, r.body)
	}
	if msg, _ := obj["msg"].(string); msg == "" {
		t.Errorf("msg %v, want a sentence; body %s", obj["msg"], r.body)
	}
}

// lease is the body of an acquire or a heartbeat.
type lease struct {
	StreamKey         string    `json:"stream_key"`
	UserID            string    `json:"user_id"`
	StreamID          string    `json:"stream_id"`
	ActiveStreams     int       `json:"active_streams"`
	Limit             int       `json:"limit"`
	LeaseExpiresAt    time.Time `json:"lease_expires_at"`
	LeaseTTLSeconds   int       `json:"lease_ttl_seconds"`
	RenewAfterSeconds int       `json:"renew_after_seconds"`
}

var leaseKeys = []string{"stream_key", "user_id", "stream_id", "active_streams", "limit",
	"lease_expires_at", "lease_ttl_seconds", "renew_after_seconds"}

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// wantLease checks a 200 lease body for the user's stream with the
// service's defaults (limit 3, 90 s leases) and returns it.
func (r response) wantLease(t *testing.T, user, stream string, active int) lease {
	t.Helper()
	r.object(t, http.StatusOK, leaseKeys...)
	var l lease
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatalf("lease body %s: %v", r.body, err)
	}
	if l.UserID != user || l.StreamID != stream {
		t.Errorf("lease of %q/%q, want %q/%q; body %s", l.UserID, l.StreamID, user, stream, r.body)
	}
	if !uuidPattern.MatchString(l.StreamKey) {
		t.Errorf("stream_key %q, want a UUID; body %s", l.StreamKey, r.body)
	}
	if l.ActiveStreams != active || l.Limit != 3 {
		t.Errorf("active_streams %d of limit %d, want %d of 3; body %s", l.ActiveStreams, l.Limit, active, r.body)
	}
	if l.LeaseTTLSeconds != 90 || l.RenewAfterSeconds != 30 {
		t.Errorf("lease_ttl_seconds %d, renew_after_seconds %d, want 90 and 30; body %s",
			l.LeaseTTLSeconds, l.RenewAfterSeconds, r.body)
	}
	// Redis's clock and ours are the same machine's: allow only slack.
	if until := time.Until(l.LeaseExpiresAt); until < 80*time.Second || until > 91*time.Second {
		t.Errorf("lease_expires_at %v is %v away, want about 90s; body %s", l.LeaseExpiresAt, until, r.body)
	}
	return l
}

// embeddedAddr returns the address of the embedded Redis, as logged.
func embeddedAddr(t *testing.T, inst *instance) string {
	t.Helper()
	line := inst.waitLog(t, `msg="no REDIS_URL: started the embedded`)
	addr := logValue(t, line, "addr")
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("embedded Redis on %q, want 127.0.0.1:PORT (line %q)", addr, line)
	}
	if inspect := logValue(t, line, "inspect"); inspect != "redis-cli -p "+port {
		t.Errorf("inspect=%q, want %q", inspect, "redis-cli -p "+port)
	}
	return addr
}

func redisClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

func TestEmbeddedRedisHoldsTheLease(t *testing.T) {
	inst := startRun(t, map[string]string{"EMBEDDED_REDIS_ADDR": "127.0.0.1:0"})
	addr := embeddedAddr(t, inst)

	l := do(t, "GET", inst.URL+"/api/streams/alice/tv", "").wantLease(t, "alice", "tv", 1)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rdb := redisClient(t, addr)
	score, err := rdb.ZScore(ctx, "limiter:{alice}:streams", "tv").Result()
	if err != nil {
		t.Fatalf("ZSCORE: %v", err)
	}
	if int64(score) != l.LeaseExpiresAt.UnixMilli() || score != float64(int64(score)) {
		t.Errorf("ZSCORE limiter:{alice}:streams tv = %v, want lease_expires_at in Unix ms %d", score, l.LeaseExpiresAt.UnixMilli())
	}
	key, err := rdb.HGet(ctx, "limiter:{alice}:keys", "tv").Result()
	if err != nil || key != l.StreamKey {
		t.Errorf("HGET limiter:{alice}:keys tv = %q, %v; want the stream_key %q", key, err, l.StreamKey)
	}
	for _, k := range []string{"limiter:{alice}:streams", "limiter:{alice}:keys"} {
		ttl, err := rdb.PTTL(ctx, k).Result()
		if err != nil || ttl <= 0 || ttl > 90*time.Second {
			t.Errorf("PTTL %s = %v, %v; want from 0 to 90s", k, ttl, err)
		}
	}

	// The embedded server lives and dies with run.
	inst.stop(t)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("the embedded Redis on %s still accepts connections after run returned", addr)
	}
}

func TestEmbeddedRedisAddrTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { taken.Close() })

	inst := startRun(t, map[string]string{"EMBEDDED_REDIS_ADDR": taken.Addr().String()})
	line := inst.waitLog(t, "EMBEDDED_REDIS_ADDR is taken")
	if got := logValue(t, line, "addr"); got != taken.Addr().String() {
		t.Errorf("fallback logged addr=%s, want the taken %s", got, taken.Addr())
	}
	addr := embeddedAddr(t, inst)
	if addr == taken.Addr().String() {
		t.Fatalf("embedded Redis logged on the taken address %s", addr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := redisClient(t, addr).Ping(ctx).Err(); err != nil {
		t.Errorf("PING the embedded Redis on %s: %v", addr, err)
	}
	do(t, "GET", inst.URL+"/api/streams/alice/tv", "").wantLease(t, "alice", "tv", 1)
}

func TestPlayerFlow(t *testing.T) {
	srv := redistest.Start(t)
	inst := startRun(t, map[string]string{"REDIS_URL": "redis://" + srv.Addr})
	api := inst.URL + "/api/streams/bob/"

	health := do(t, "GET", inst.URL+"/healthz", "").object(t, http.StatusOK, "status")
	if health["status"] != "ok" {
		t.Errorf("/healthz status %v, want ok", health["status"])
	}
	ready := do(t, "GET", inst.URL+"/readyz", "").object(t, http.StatusOK, "status")
	if ready["status"] != "ready" {
		t.Errorf("/readyz status %v, want ready", ready["status"])
	}

	leases := map[string]lease{}
	for i, s := range []string{"s1", "s2", "s3"} {
		leases[s] = do(t, "GET", api+s, "").wantLease(t, "bob", s, i+1)
	}

	// The fourth is refused, with the live streams, soonest expiry first.
	refused := do(t, "GET", api+"s4", "")
	obj := refused.object(t, http.StatusForbidden, "error", "msg", "limit", "active_streams")
	if obj["error"] != "stream_limit_reached" || obj["msg"] != "Request denied: too many concurrent streams" || obj["limit"] != 3.0 {
		t.Errorf("refusal %s, want stream_limit_reached, its sentence and limit 3", refused.body)
	}
	active, _ := obj["active_streams"].([]any)
	if len(active) != 3 {
		t.Fatalf("active_streams %v, want the 3 live streams", obj["active_streams"])
	}
	for i, s := range []string{"s1", "s2", "s3"} {
		item, _ := active[i].(map[string]any)
		wantKeys(t, item, "stream_id", "lease_expires_at")
		at, err := time.Parse(time.RFC3339Nano, fmtString(item["lease_expires_at"]))
		if item["stream_id"] != s || err != nil || !at.Equal(leases[s].LeaseExpiresAt) {
			t.Errorf("active_streams[%d] = %v, want %s expiring at %v", i, item, s, leases[s].LeaseExpiresAt)
		}
	}

	hb := do(t, "POST", api+"s1/heartbeat", `{"stream_key":"`+leases["s1"].StreamKey+`"}`).wantLease(t, "bob", "s1", 3)
	if hb.StreamKey != leases["s1"].StreamKey || hb.LeaseExpiresAt.Before(leases["s1"].LeaseExpiresAt) {
		t.Errorf("heartbeat gave key %q expiring %v, want key %q expiring no sooner than %v",
			hb.StreamKey, hb.LeaseExpiresAt, leases["s1"].StreamKey, leases["s1"].LeaseExpiresAt)
	}

	rel := do(t, "DELETE", api+"s2", "")
	relObj := rel.object(t, http.StatusOK, "stream_id", "released", "active_streams", "limit")
	if relObj["stream_id"] != "s2" || relObj["released"] != true || relObj["active_streams"] != 2.0 || relObj["limit"] != 3.0 {
		t.Errorf("release body %s, want s2 released, 2 of 3 active", rel.body)
	}

	l4 := do(t, "GET", api+"s4", "").wantLease(t, "bob", "s4", 3)
	if l4.StreamKey == leases["s2"].StreamKey {
		t.Errorf("s4 got the released s2's key %q", l4.StreamKey)
	}
}

func fmtString(v any) string {
	s, _ := v.(string)
	return s
}

func TestRedisHangs(t *testing.T) {
	inst := startRun(t, map[string]string{
		"REDIS_URL":     "redis://" + redistest.Silent(t),
		"REDIS_TIMEOUT": "200ms",
	})
	inst.waitLog(t, "Redis does not answer yet")

	const bound = 2 * time.Second // 200ms and a wide margin: a hang, not a speed test
	for _, path := range []string{"/api/streams/alice/tv", "/readyz"} {
		start := time.Now()
		r := do(t, "GET", inst.URL+path, "")
		if took := time.Since(start); took > bound {
			t.Errorf("GET %s took %v, want under %v", path, took, bound)
		}
		r.wantError(t, http.StatusServiceUnavailable, "redis_unavailable")
		if ra := r.header.Get("Retry-After"); ra == "" {
			t.Errorf("GET %s: no Retry-After header", path)
		}
	}
	health := do(t, "GET", inst.URL+"/healthz", "").object(t, http.StatusOK, "status")
	if health["status"] != "ok" {
		t.Errorf("/healthz status %v, want ok", health["status"])
	}
}

func TestRedisKilledAndRestarted(t *testing.T) {
	srv := redistest.Start(t)
	inst := startRun(t, map[string]string{"REDIS_URL": "redis://" + srv.Addr})
	do(t, "GET", inst.URL+"/api/streams/alice/tv", "").wantLease(t, "alice", "tv", 1)

	srv.Kill(t)
	r := do(t, "GET", inst.URL+"/api/streams/alice/tv", "")
	r.wantError(t, http.StatusServiceUnavailable, "redis_unavailable")
	if r.header.Get("Retry-After") == "" {
		t.Error("no Retry-After header on 503")
	}
	do(t, "GET", inst.URL+"/readyz", "").wantError(t, http.StatusServiceUnavailable, "redis_unavailable")

	// The same run reconnects; the restarted Redis is empty, so the stream is
	// admitted afresh. The pool may hold a dead connection or two: retry.
	srv.Restart(t)
	for attempt := 1; ; attempt++ {
		r := do(t, "GET", inst.URL+"/api/streams/alice/tv", "")
		if r.status == http.StatusOK || attempt == 5 {
			r.wantLease(t, "alice", "tv", 1)
			break
		}
		r.wantError(t, http.StatusServiceUnavailable, "redis_unavailable")
		time.Sleep(100 * time.Millisecond)
	}
	do(t, "GET", inst.URL+"/readyz", "").object(t, http.StatusOK, "status")
}

func TestRunInvalidSettings(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { taken.Close() })

	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string
	}{
		{"stream limit 0", map[string]string{"STREAM_LIMIT": "0"}, nil, "STREAM_LIMIT"},
		{"lease TTL flag", nil, []string{"-lease-ttl", "1s"}, "LEASE_TTL"},
		{"redis URL", map[string]string{"REDIS_URL": "http://x"}, nil, "REDIS_URL"},
		{"listen address taken", map[string]string{"LISTEN_ADDR": taken.Addr().String()}, nil, "LISTEN_ADDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := cloneWith(tt.env, "EMBEDDED_REDIS_ADDR", "127.0.0.1:0")
			if env["LISTEN_ADDR"] == "" {
				env["LISTEN_ADDR"] = "127.0.0.1:0"
			}
			inst := launch(t, env, tt.args...)
			select {
			case <-inst.done:
			case <-time.After(stopTimeout):
				t.Fatalf("run did not return within %v", stopTimeout)
			}
			if inst.err == nil || !strings.Contains(inst.err.Error(), tt.wantErr) {
				t.Errorf("run returned %v, want an error naming %s", inst.err, tt.wantErr)
			}
			if strings.Contains(inst.log.String(), "limiterd listening") {
				t.Errorf("run logged that it listens; log:\n%s", inst.log)
			}
		})
	}
}

func TestShutdownFinishesRequestsInFlight(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr)
	inst := startRun(t, map[string]string{
		"REDIS_URL":     "redis://" + proxy.Addr,
		"REDIS_TIMEOUT": "1s",
	})
	// Load the script into Redis, so the request in flight is one EVALSHA.
	do(t, "GET", inst.URL+"/api/streams/carol/warm", "").wantLease(t, "carol", "warm", 1)

	sent := proxy.Expect("evalsha")
	srv.Pause(t)
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume(t)
		}
	}()

	type result struct {
		r    response
		err  error
		took time.Duration
	}
	inFlight := make(chan result, 1)
	start := time.Now()
	go func() {
		resp, err := client.Get(inst.URL + "/api/streams/carol/tv")
		if err != nil {
			inFlight <- result{err: err, took: time.Since(start)}
			return
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		inFlight <- result{response{resp.StatusCode, resp.Header, data}, err, time.Since(start)}
	}()

	// The handler waits on the paused Redis: now shut down.
	select {
	case <-sent:
	case res := <-inFlight:
		t.Fatalf("the request ended before reaching Redis: %+v", res)
	case <-time.After(httpTimeout):
		t.Fatal("the request did not reach Redis in time")
	}
	inst.cancel()
	inst.waitLog(t, "shutting down")
	select {
	case <-inst.done:
		t.Fatalf("run returned %v with a request in flight", inst.err)
	case <-time.After(200 * time.Millisecond):
	}
	srv.Resume(t)
	resumed = true

	var res result
	select {
	case res = <-inFlight:
	case <-time.After(httpTimeout):
		t.Fatal("the request in flight got no response")
	}
	if res.err != nil {
		t.Fatalf("the request in flight failed: %v", res.err)
	}
	// Resumed within REDIS_TIMEOUT the request is served; on a machine slow
	// enough to pass it, the answer is a complete 503.
	if res.r.status == http.StatusServiceUnavailable {
		t.Logf("the request in flight timed out on Redis: %s", res.r.body)
		res.r.wantError(t, http.StatusServiceUnavailable, "redis_unavailable")
		if res.took < time.Second {
			t.Errorf("503 after %v, before REDIS_TIMEOUT: the shutdown cut the request short", res.took)
		}
	} else {
		res.r.wantLease(t, "carol", "tv", 2)
	}

	inst.stop(t)
	if log := inst.log.String(); !strings.Contains(log, `msg=stopped`) || strings.Contains(log, "still in flight") {
		t.Errorf("run did not drain and stop cleanly; log:\n%s", log)
	}
	if resp, err := client.Get(inst.URL + "/healthz"); err == nil {
		resp.Body.Close()
		t.Errorf("the server still answers after run returned: %s", resp.Status)
	}
}

func TestHealthCheckFlag(t *testing.T) {
	inst := startRun(t, map[string]string{"REDIS_URL": redistest.URL(t)})
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(inst.URL, "http://"))
	tests := []struct {
		listen string
		ok     bool
	}{
		{"127.0.0.1:" + port, true},
		{":" + port, true}, // all interfaces: probed on loopback
		{redistest.ClosedAddr(t), false},
		{"127.0.0.1:0", false},
	}
	for _, tt := range tests {
		t.Run(tt.listen, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), httpTimeout)
			defer cancel()
			var stderr bytes.Buffer
			err := run(ctx, []string{"-healthcheck"}, envOf(map[string]string{"LISTEN_ADDR": tt.listen}), io.Discard, &stderr)
			if (err == nil) != tt.ok {
				t.Errorf("-healthcheck on %s: %v, want ok=%v", tt.listen, err, tt.ok)
			}
			if stderr.Len() != 0 {
				t.Errorf("-healthcheck logged %q: it must start nothing", stderr.String())
			}
		})
	}
}
