package httpapi_test

// FuzzRoutes sends arbitrary requests through the real handler. `go test`
// runs its seeds (f.Add and testdata/fuzz/FuzzRoutes/); `go test -run '^$'
// -fuzz '^FuzzRoutes$' -parallel 1 ./httpapi/` searches for more.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/httpapi"
	"github.com/limiterd/limiterd/limiter"
)

// fuzzLimit is the limit of the fuzzed limiter; fuzzSeedState puts alice
// at it, so that acquires, refusals and releases are all one request away.
const fuzzLimit = 3

// fuzzNow is Redis's clock for every input: frozen, so that no lease ends
// while an input runs and any change of state is the request's doing.
var fuzzNow = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

// fuzzStatuses are all the statuses the README documents, with 204 for
// OPTIONS, which Echo answers itself with the route's Allow header.
var fuzzStatuses = []int{200, 204, 400, 403, 404, 405, 409, 410, 413, 415}

// fuzzKeyPattern is every key the service may write.
var fuzzKeyPattern = regexp.MustCompile(`^limiter:\{([A-Za-z0-9\-_.:@~]{1,128})\}:(streams|keys)$`)

// fuzzPlainRequestID is a request ID any way of honouring X-Request-ID
// keeps as it is.
var fuzzPlainRequestID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// fuzzSeedState resets Redis to alice holding the limit (a1 to a3, keys
// key-a1 to key-a3) and bob one stream (b1, key key-b1).
func fuzzSeedState(m *miniredis.Miniredis) {
	m.FlushAll()
	m.SetTime(fuzzNow)
	for user, streams := range map[string][]string{"alice": {"a1", "a2", "a3"}, "bob": {"b1"}} {
		for i, s := range streams {
			expiry := fuzzNow.Add(time.Duration(10*(i+1)) * time.Second).UnixMilli()
			m.ZAdd("limiter:{"+user+"}:streams", float64(expiry), s)
			m.HSet("limiter:{"+user+"}:keys", s, "key-"+s)
		}
	}
}

// fuzzState is what Redis holds, key TTLs aside: key -> member or field ->
// score or value.
type fuzzState map[string]map[string]string

func fuzzSnapshot(t *testing.T, m *miniredis.Miniredis) fuzzState {
	t.Helper()
	st := fuzzState{}
	for _, k := range m.Keys() {
		entries := map[string]string{}
		switch typ := m.Type(k); typ {
		case "zset":
			set, err := m.SortedSet(k)
			if err != nil {
				t.Fatal(err)
			}
			for member, score := range set {
				entries[member] = strconv.FormatFloat(score, 'f', -1, 64)
			}
		case "hash":
			fields, err := m.HKeys(k)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range fields {
				entries[f] = m.HGet(k, f)
			}
		default:
			t.Fatalf("key %q is a %s: the service writes only sorted sets and hashes", k, typ)
		}
		st[k] = entries
	}
	return st
}

// checkInvariants checks what must hold of Redis after any request: only
// keys of the schema, no user over the limit, and a key for every live
// stream and no key without one.
func (st fuzzState) checkInvariants(t *testing.T) {
	t.Helper()
	for k, entries := range st {
		m := fuzzKeyPattern.FindStringSubmatch(k)
		if m == nil {
			t.Fatalf("Redis holds key %q, outside the schema", k)
		}
		if m[2] != "streams" {
			continue
		}
		if len(entries) > fuzzLimit {
			t.Fatalf("%s holds %d streams, over the limit %d: %v", k, len(entries), fuzzLimit, entries)
		}
		hash := st["limiter:{"+m[1]+"}:keys"]
		if !slices.Equal(slices.Sorted(maps.Keys(entries)), slices.Sorted(maps.Keys(hash))) {
			t.Fatalf("user %q: streams %v and keys %v disagree", m[1], entries, hash)
		}
	}
}

// changedStreams returns the streams added to, removed from or given
// another expiry in any user's set between before and after, as
// "user/stream". It also fails the test if a stream live in both lost its
// key: no request may hand a live stream a new key.
func changedStreams(t *testing.T, before, after fuzzState) []string {
	t.Helper()
	var changed []string
	for _, k := range unionKeys(before, after) {
		m := fuzzKeyPattern.FindStringSubmatch(k)
		if m == nil || m[2] != "streams" {
			continue
		}
		keys := "limiter:{" + m[1] + "}:keys"
		for _, member := range unionKeys(before[k], after[k]) {
			b, inBefore := before[k][member]
			a, inAfter := after[k][member]
			if inBefore != inAfter || a != b {
				changed = append(changed, m[1]+"/"+member)
			}
			if inBefore && inAfter && before[keys][member] != after[keys][member] {
				t.Fatalf("the key of live stream %s/%s changed from %q to %q", m[1], member, before[keys][member], after[keys][member])
			}
		}
	}
	return changed
}

// unionKeys returns the keys of a and b, sorted.
func unionKeys[V any](a, b map[string]V) []string {
	out := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// downStore is a backing store that cannot be reached: every call fails as
// the limiter fails when Redis is down.
type downStore struct{}

var errStoreDown = fmt.Errorf("%w: fuzz: the store is down", limiter.ErrUnavailable)

func (downStore) Acquire(context.Context, string, string) (limiter.Lease, error) {
	return limiter.Lease{}, errStoreDown
}
func (downStore) Renew(context.Context, string, string, string) (limiter.Lease, error) {
	return limiter.Lease{}, errStoreDown
}
func (downStore) Release(context.Context, string, string, string) (limiter.Release, error) {
	return limiter.Release{}, errStoreDown
}
func (downStore) ReleaseSoonest(context.Context, string) (limiter.Release, error) {
	return limiter.Release{}, errStoreDown
}
func (downStore) Active(context.Context, string) ([]limiter.Stream, error) { return nil, errStoreDown }
func (downStore) Limit() int                                               { return fuzzLimit }
func (downStore) Ping(context.Context) error                               { return errStoreDown }

// validHeaderValue is net/http's rule for a field value (no control bytes
// but tab): a value that breaks it is answered 400 by net/http before any
// handler runs, so it is not ours to fuzz.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// FuzzRoutes sends one request, built from the input, to the handler over
// a limiter on miniredis (or, with storeDown, over a store that is down),
// and checks the answer and Redis afterwards. The request goes through
// http.ReadRequest, so the handler sees exactly what net/http's server would
// hand it; what ReadRequest refuses, net/http answers itself.
func FuzzRoutes(f *testing.F) {
	type seed struct {
		method, path, query, contentType, requestID, body string
		storeDown                                         bool
	}
	for _, s := range []seed{
		{"GET", "/api/streams/carol/tv", "", "", "", "", false},
		{"GET", "/api/streams/alice/a1", "", "", "", "", false},
		{"GET", "/api/streams/alice/a4", "", "", "req-1", "", false},
		{"GET", "/api/streams/carol%40example.com/tv", "", "", "", "", false},
		{"POST", "/api/streams/bob/b1/heartbeat", "", "application/json", "", `{"stream_key":"key-b1"}`, false},
		{"POST", "/api/streams/bob/b1/heartbeat", "", "application/json", "", `{"stream_key":"key-a1"}`, false},
		{"POST", "/api/streams/bob/b9/heartbeat", "", "", "", `{"stream_key":"key-b1"}`, false},
		{"DELETE", "/api/streams/alice/a2", "stream_key=key-a2", "", "", "", false},
		{"PATCH", "/api/streams/alice/a2", "", "application/merge-patch+json", "", `{"stream_key":"key-a1","stream_id":"a2"}`, false},
		{"PATCH", "/api/users/bob", "", "application/json", "", `{"stream_id":"b1"}`, false},
		{"PATCH", "/api/users/alice", "stream_id=a3&stream_id=a3", "", "", "", false},
		{"PATCH", "/api/users/alice", "", "application/json", "", `{"stream_id":18446744073709551616}`, false},
		{"PATCH", "/api/users/alice", "", "application/json", "", `{"stream_id":-1}`, false},
		{"GET", "/api/users/alice/streams", "", "", "", "", false},
		{"GET", "/healthz", "", "", "", "", false},
		{"GET", "/readyz", "", "", "", "", true},
		{"GET", "/api/streams/%7Balice%7D/tv", "", "", "", "", false},
		{"GET", "/api/streams/alice/a%2F1", "", "", "", "", false},
		{"GET", "/api/streams/alice/%2E%2E", "", "", "", "", false},
		{"GET", "/api/streams/alice/a1%00", "", "", "", "", false},
		{"GET", "/api/streams/alice/%FF", "", "", "", "", false},
		{"DELETE", "/api/streams/alice/a1", "stream_key=%zz", "", "", "", false},
		{"POST", "/api/streams/bob/b1/heartbeat", "", "text/plain", "", `{"stream_key":"key-b1"}`, false},
		{"POST", "/api/streams/bob/b1/heartbeat", "", "application/json", "", "{\"stream_key\":\"\xff\"}", false},
		{"OPTIONS", "/api/streams/alice/a1", "", "", "", "", false},
		{"TRACE", "/api/streams/alice/a1", "", "", "", "", false},
		{"GET", "http://limiterd.test/api/streams/carol/tv", "", "", "", "", false},
		{"DELETE", "/api/streams/bob/b1", "", "", "", "", true},
	} {
		f.Add(s.method, s.path, s.query, s.contentType, s.requestID, []byte(s.body), s.storeDown)
	}

	m := miniredis.RunT(f)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	f.Cleanup(func() { rdb.Close() })
	lim, err := limiter.New(rdb, limiter.Config{Limit: fuzzLimit, LeaseTTL: 90 * time.Second, Timeout: 5 * time.Second})
	if err != nil {
		f.Fatal(err)
	}
	up := httpapi.NewServer(httpapi.Deps{Streams: lim, Ready: lim})
	down := httpapi.NewServer(httpapi.Deps{Streams: downStore{}, Ready: downStore{}})

	f.Fuzz(func(t *testing.T, method, path, query, contentType, requestID string, body []byte, storeDown bool) {
		raw := method + " " + path
		if query != "" {
			raw += "?" + query
		}
		raw += " HTTP/1.1\r\nHost: limiterd.test\r\n"
		for _, h := range [][2]string{{"Content-Type", contentType}, {"X-Request-ID", requestID}} {
			if h[1] == "" {
				continue
			}
			if !validHeaderValue(h[1]) {
				return
			}
			raw += h[0] + ": " + h[1] + "\r\n"
		}
		raw += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + string(body)
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			return // net/http answers 400 itself
		}

		srv := up
		if storeDown {
			srv = down
		}
		fuzzSeedState(m)
		before := fuzzSnapshot(t, m)
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		resp := rec.Result()
		what := fmt.Sprintf("%q %q (query %q, Content-Type %q, body %q)", method, path, query, contentType, body)

		checkFuzzResponse(t, what, resp.StatusCode, resp.Header, rec.Body.Bytes(), storeDown)
		if got := resp.Header.Get("X-Request-ID"); got == "" {
			t.Errorf("%s: no X-Request-ID in the response", what)
		} else if fuzzPlainRequestID.MatchString(strings.TrimSpace(requestID)) && got != strings.TrimSpace(requestID) {
			t.Errorf("%s: X-Request-ID %q, want the caller's %q", what, got, requestID)
		}

		after := fuzzSnapshot(t, m)
		after.checkInvariants(t)
		changed := changedStreams(t, before, after)
		switch {
		case storeDown && len(changed) > 0:
			t.Fatalf("%s: Redis changed with the store down: %v", what, changed)
		case resp.StatusCode != http.StatusOK && len(changed) > 0:
			t.Fatalf("%s: answered %d but changed %v\n%s", what, resp.StatusCode, changed, rec.Body)
		case len(changed) > 1:
			t.Fatalf("%s: one request changed %d streams: %v\n%s", what, len(changed), changed, rec.Body)
		}
		if resp.StatusCode == http.StatusOK && !storeDown {
			checkFuzzSuccess(t, what, rec.Body.Bytes(), after, changed)
		}
	})
}

// checkFuzzResponse checks what every answer must be: a documented status,
// never cached, and JSON; an error is {"error": code, "msg": sentence}; 5xx
// only when the store is down, and then 503 with Retry-After.
func checkFuzzResponse(t *testing.T, what string, status int, header http.Header, body []byte, storeDown bool) {
	t.Helper()
	switch {
	case status == http.StatusServiceUnavailable && storeDown:
		if header.Get("Retry-After") != "1" {
			t.Errorf("%s: 503 with Retry-After %q, want 1", what, header.Get("Retry-After"))
		}
	case !slices.Contains(fuzzStatuses, status):
		t.Fatalf("%s: status %d, not one the API documents; body %s", what, status, body)
	}
	if cc := header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("%s: Cache-Control %q, want no-store", what, cc)
	}
	if status == http.StatusNoContent {
		if len(body) != 0 {
			t.Errorf("%s: 204 with a body %q", what, body)
		}
		return
	}
	if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: %d with Content-Type %q, want JSON; body %s", what, status, ct, body)
	}
	var obj map[string]any
	if err := json.Unmarshal(body, &obj); err != nil {
		t.Fatalf("%s: %d with a body that is not a JSON object (%v): %q", what, status, err, body)
	}
	if status < 400 {
		return
	}
	code, _ := obj["error"].(string)
	msg, _ := obj["msg"].(string)
	if code == "" || msg == "" {
		t.Fatalf("%s: %d without an error code and msg: %s", what, status, body)
	}
	if storeDown && status == http.StatusServiceUnavailable && code != "redis_unavailable" {
		t.Errorf("%s: 503 with error %q, want redis_unavailable", what, code)
	}
}

// checkFuzzSuccess checks that a 200 says what Redis now holds.
func checkFuzzSuccess(t *testing.T, what string, body []byte, after fuzzState, changed []string) {
	t.Helper()
	var obj struct {
		StreamKey      *string   `json:"stream_key"`
		UserID         string    `json:"user_id"`
		StreamID       *string   `json:"stream_id"`
		ActiveStreams  any       `json:"active_streams"`
		Limit          int       `json:"limit"`
		LeaseExpiresAt time.Time `json:"lease_expires_at"`
		Released       *bool     `json:"released"`
	}
	if err := json.Unmarshal(body, &obj); err != nil {
		t.Fatalf("%s: 200 body %s: %v", what, body, err)
	}
	switch {
	case obj.StreamKey != nil: // a lease: acquire or heartbeat
		streams, keys := "limiter:{"+obj.UserID+"}:streams", "limiter:{"+obj.UserID+"}:keys"
		score, live := after[streams][*obj.StreamID]
		if !live || after[keys][*obj.StreamID] != *obj.StreamKey {
			t.Fatalf("%s: lease %s, but Redis holds score %q, key %q", what, body, score, after[keys][*obj.StreamID])
		}
		if want := strconv.FormatInt(obj.LeaseExpiresAt.UnixMilli(), 10); score != want {
			t.Fatalf("%s: lease_expires_at %v (%s ms), but Redis holds %s", what, obj.LeaseExpiresAt, want, score)
		}
		if n, _ := obj.ActiveStreams.(float64); int(n) != len(after[streams]) || obj.Limit != fuzzLimit {
			t.Fatalf("%s: active_streams %v of %d, but Redis holds %d of %d", what, obj.ActiveStreams, obj.Limit, len(after[streams]), fuzzLimit)
		}
	case obj.Released != nil: // a release
		if !*obj.Released && len(changed) > 0 {
			t.Fatalf("%s: released:false but changed %v", what, changed)
		}
		if *obj.Released && len(changed) != 1 {
			t.Fatalf("%s: released:true but changed %v", what, changed)
		}
	case len(changed) > 0:
		t.Fatalf("%s: a read changed %v: %s", what, changed, body)
	}
}
