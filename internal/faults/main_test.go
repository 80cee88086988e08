package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/internal/servicetest"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

// Settings every test passes to limiterd explicitly, so that a change of a
// default does not silently change what is tested.
const (
	redisTimeout = 500 * time.Millisecond // REDIS_TIMEOUT
	streamLimit  = 3                      // STREAM_LIMIT
	longLease    = 60 * time.Second       // LEASE_TTL where no lease may lapse during a test
	keyPrefix    = "limiter"              // KEY_PREFIX
)

// Bounds on waits. They stop a hang; none of them is a speed target.
const (
	// hangMargin is how much longer than REDIS_TIMEOUT a request may take
	// while Redis is away before the test calls it a hang.
	hangMargin = time.Second
	// exchangeBound ends any one HTTP exchange of the load. It is far above
	// every bound asserted, so that a hang shows up as a failed assertion
	// with figures rather than as a stuck test.
	exchangeBound = 10 * time.Second
	// waitBound limits waiting for a recovery, a readiness or an exit.
	waitBound = 10 * time.Second
)

// startLimiterd starts the real binary against the Redis at redisAddr with
// this package's settings; env entries given later override them.
func startLimiterd(t *testing.T, redisAddr string, env ...string) *servicetest.Service {
	t.Helper()
	base := []string{
		"REDIS_URL=redis://" + redisAddr,
		"REDIS_TIMEOUT=" + redisTimeout.String(),
		// closed is the default of this coming setting; these tests check the
		// closed behaviour (503, never a lease Redis did not confirm).
		"REDIS_FAILURE_MODE=closed",
		"STREAM_LIMIT=" + strconv.Itoa(streamLimit),
		"LEASE_TTL=" + longLease.String(),
		"SHUTDOWN_TIMEOUT=5s",
		"KEY_PREFIX=" + keyPrefix,
	}
	return servicetest.Start(t, append(base, env...)...)
}

// checker is a Redis client of the test's own, to look at the state the
// service wrote, never through the service.
func checker(t *testing.T, addr string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{
		Addr: addr, DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
		ContextTimeoutEnabled: true,
	})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// redisCtx bounds one look at Redis from the test.
func redisCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func streamsKey(user string) string { return keyPrefix + ":{" + user + "}:streams" }
func keysKey(user string) string    { return keyPrefix + ":{" + user + "}:keys" }

// Operations a player makes.
const (
	opAcquire   = "acquire"
	opHeartbeat = "heartbeat"
	opRelease   = "release"
)

// outcome is one HTTP exchange of the load, as the player saw it.
type outcome struct {
	op           string
	player       int
	replica      int
	user, stream string
	sentKey      string // the stream key sent (heartbeat, release)
	retry        bool   // a retry of a call that got a 503

	start, end time.Time
	err        error // transport error; status is 0 then

	status     int
	code       string // the "error" field of an error body
	retryAfter string // the Retry-After header
	body       string // the body, cut short, for messages

	key      string    // stream_key of a 200 acquire or heartbeat
	active   int       // active_streams of a 200
	released bool      // released of a 200 release
	expires  time.Time // lease_expires_at of a 200 acquire or heartbeat
}

func (o outcome) took() time.Duration { return o.end.Sub(o.start) }

// during reports whether the whole exchange fell between from and to.
func (o outcome) during(from, to time.Time) bool {
	return !o.start.Before(from) && !o.end.After(to)
}

func (o outcome) String() string {
	what := fmt.Sprintf("%s %s/%s via replica %d (player %d", o.op, o.user, o.stream, o.replica, o.player)
	if o.retry {
		what += ", retry"
	}
	what += fmt.Sprintf(") at %s took %s: ", o.start.Format("15:04:05.000"), ms(o.took()))
	if o.err != nil {
		return what + o.err.Error()
	}
	return what + strconv.Itoa(o.status) + " " + o.body
}

// unavailable reports whether o is the service's answer when Redis is away:
// 503, redis_unavailable, Retry-After: 1.
func (o outcome) unavailable() bool {
	return o.status == http.StatusServiceUnavailable && o.code == "redis_unavailable" && o.retryAfter == "1"
}

// expected reports whether o is an answer the API documents for the call
// while Redis works: a lease, a release, or the documented refusal.
func (o outcome) expected() bool {
	switch {
	case o.err != nil:
		return false
	case o.status == http.StatusOK:
		if o.op == opRelease {
			return true
		}
		return o.key != "" && o.active >= 1 && o.active <= streamLimit && !o.expires.IsZero()
	case o.op == opAcquire:
		return o.status == http.StatusForbidden && o.code == "stream_limit_reached"
	case o.op == opHeartbeat && o.status == http.StatusGone:
		return o.code == "lease_expired"
	default: // heartbeat or release with a key that is not the live one's
		return o.status == http.StatusConflict && o.code == "stream_key_mismatch"
	}
}

// caller sends the players' requests to one or more replicas.
type caller struct {
	client  *http.Client
	targets []*servicetest.Service
}

func newCaller(t *testing.T, targets ...*servicetest.Service) *caller {
	tr := &http.Transport{
		MaxIdleConnsPerHost: 64, // every player keeps its connection
		IdleConnTimeout:     30 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &caller{client: &http.Client{Transport: tr, Timeout: exchangeBound}, targets: targets}
}

// call makes one exchange. written, when not nil, is called once the request
// has been written to the connection.
func (c *caller) call(replica int, op, user, stream, key string, written func()) outcome {
	o := outcome{op: op, replica: replica, user: user, stream: stream, sentKey: key}
	base := c.targets[replica].URL + "/api/streams/" + user + "/" + stream
	var (
		method, target string
		body           io.Reader
	)
	switch op {
	case opAcquire:
		method, target = http.MethodGet, base
	case opHeartbeat:
		method, target = http.MethodPost, base+"/heartbeat"
		body = strings.NewReader(`{"stream_key":"` + key + `"}`)
	case opRelease:
		method, target = http.MethodDelete, base+"?stream_key="+url.QueryEscape(key)
	default:
		panic("unknown op " + op)
	}
	req, err := http.NewRequest(method, target, body)
	if err != nil {
		panic(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if written != nil {
		trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { written() }}
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	}

	o.start = time.Now()
	resp, err := c.client.Do(req)
	if err != nil {
		o.end, o.err = time.Now(), err
		return o
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	o.end = time.Now()
	if err != nil {
		o.err = fmt.Errorf("reading the body: %w", err)
		return o
	}
	o.status, o.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	o.body = string(data)
	if len(o.body) > 300 {
		o.body = o.body[:300] + "..."
	}
	var b struct {
		Error          string          `json:"error"`
		StreamKey      string          `json:"stream_key"`
		ActiveStreams  json.RawMessage `json:"active_streams"`
		Released       bool            `json:"released"`
		LeaseExpiresAt time.Time       `json:"lease_expires_at"`
	}
	if err := json.Unmarshal(data, &b); err != nil {
		o.code = "(body is not JSON)"
		return o
	}
	o.code, o.key, o.released, o.expires = b.Error, b.StreamKey, b.Released, b.LeaseExpiresAt
	if o.status == http.StatusOK {
		// A number in a lease or a release; a list in a 403.
		if err := json.Unmarshal(b.ActiveStreams, &o.active); err != nil {
			o.code = "(active_streams is not a number)"
		}
	}
	return o
}

// checkUserState checks what Redis holds for every user key it has: the
// set and the hash hold the same streams, at most streamLimit, every lease
// ends after Redis's current time (the caller makes sure no lease could have
// lapsed yet: past that, an ended lease may stay in the set until the user's
// next call prunes it, which is harmless), and both keys expire exactly at
// the latest lease (PEXPIRETIME, Redis 7, is PTTL as an absolute time, so
// the comparison is exact). It returns how many users and leases it saw.
func checkUserState(t *testing.T, rdb *redis.Client) (users, leases int) {
	t.Helper()
	ctx := redisCtx(t)
	found := map[string]bool{}
	iter := rdb.Scan(ctx, 0, keyPrefix+":{*}:*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		open, shut := strings.IndexByte(k, '{'), strings.LastIndexByte(k, '}')
		if open < 0 || shut < open {
			t.Errorf("key %q is not of the schema %s:{USER}:streams|keys", k, keyPrefix)
			continue
		}
		found[k[open+1:shut]] = true
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("SCAN: %v", err)
	}
	for _, user := range slices.Sorted(maps.Keys(found)) {
		var (
			now                      *redis.TimeCmd
			members                  *redis.ZSliceCmd
			fields                   *redis.StringSliceCmd
			setExpiresAt, keysExpire *redis.Cmd
		)
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			now = p.Time(ctx)
			members = p.ZRangeWithScores(ctx, streamsKey(user), 0, -1)
			fields = p.HKeys(ctx, keysKey(user))
			setExpiresAt = p.Do(ctx, "PEXPIRETIME", streamsKey(user))
			keysExpire = p.Do(ctx, "PEXPIRETIME", keysKey(user))
			return nil
		})
		if err != nil {
			t.Fatalf("reading %s's keys: %v", user, err)
		}
		zs, hs := members.Val(), fields.Val()
		if len(zs) == 0 && len(hs) == 0 {
			continue // both expired since the SCAN
		}
		users++
		leases += len(zs)
		ids := make([]string, len(zs))
		var latest int64
		for i, z := range zs {
			ids[i] = z.Member.(string)
			latest = max(latest, int64(z.Score))
			if int64(z.Score) <= now.Val().UnixMilli() {
				t.Errorf("%s: lease %s ended at %d, Redis's time is %d: an ended lease with no call since it ended",
					user, ids[i], int64(z.Score), now.Val().UnixMilli())
			}
		}
		slices.Sort(ids)
		slices.Sort(hs)
		if !slices.Equal(ids, hs) {
			t.Errorf("%s: the set holds %q, the hash %q: they must hold the same streams", user, ids, hs)
		}
		if len(zs) > streamLimit {
			t.Errorf("%s holds %d leases %q, over the limit of %d", user, len(zs), ids, streamLimit)
		}
		for _, e := range []struct {
			key string
			at  *redis.Cmd
		}{{streamsKey(user), setExpiresAt}, {keysKey(user), keysExpire}} {
			got, err := e.at.Int64()
			if err != nil || got != latest {
				t.Errorf("PEXPIRETIME %s = %d, %v; want the latest lease's end %d (-1: no expiry, -2: no key)",
					e.key, got, err, latest)
			}
		}
	}
	return users, leases
}

// ms formats a duration in milliseconds, one decimal, for the figure lines.
func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

// spread returns the median and the worst of ds ("-" for none).
func spread(ds []time.Duration) (median, worst string) {
	if len(ds) == 0 {
		return "-", "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return ms(s[len(s)/2]), ms(s[len(s)-1])
}

// statusCounts tells how many exchanges ended in each status ("err" for a
// transport error), as "200:812,403:95,...".
func statusCounts(os []outcome) string {
	n := map[string]int{}
	for _, o := range os {
		if o.err != nil {
			n["err"]++
		} else {
			n[strconv.Itoa(o.status)]++
		}
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(n)) {
		parts = append(parts, fmt.Sprintf("%s:%d", k, n[k]))
	}
	return strings.Join(parts, ",")
}

// report logs one line of figures in the form every test of this package
// uses: "faults: <scenario>: name=value ...".
func report(t *testing.T, scenario string, kv ...any) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "faults: %s:", scenario)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	t.Log(b.String())
}

// wantAnswers fails the test for every exchange that is neither an answer
// the API documents while Redis works nor one tolerate accepts, and returns
// how many there were.
func wantAnswers(t *testing.T, outs []outcome, tolerate func(outcome) bool) int {
	t.Helper()
	bad := 0
	for _, o := range outs {
		if o.expected() || (tolerate != nil && tolerate(o)) {
			continue
		}
		bad++
		if bad <= 10 {
			t.Errorf("unexpected exchange: %v", o)
		}
	}
	if bad > 10 {
		t.Errorf("... and %d more unexpected exchanges", bad-10)
	}
	return bad
}

// readyAfter polls every replica's /readyz until each answers 200, and
// returns for each how long after since it first did. It fails the test if
// one is not ready within waitBound.
func readyAfter(t *testing.T, since time.Time, svcs ...*servicetest.Service) []time.Duration {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	after := make([]time.Duration, len(svcs))
	for waiting := len(svcs); waiting > 0; {
		for i, svc := range svcs {
			if after[i] != 0 {
				continue
			}
			resp, err := client.Get(svc.URL + "/readyz")
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				after[i] = time.Since(since)
				waiting--
			}
		}
		if waiting > 0 && time.Since(since) > waitBound {
			t.Fatalf("%d replicas of %d not ready (/readyz 200) within %v", waiting, len(svcs), waitBound)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return after
}
