package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/httpapi"
	"github.com/limiterd/limiterd/limiter"
)

var ctx = context.Background()

// api is the real HTTP server over a real Limiter on miniredis.
type api struct {
	t   *testing.T
	url string
	rdb *redis.Client
	m   *miniredis.Miniredis
	now time.Time // miniredis's clock
}

// advance moves Redis's clock and its key TTLs forward.
func (a *api) advance(d time.Duration) {
	a.now = a.now.Add(d)
	a.m.SetTime(a.now)
	a.m.FastForward(d)
}

func newAPI(t *testing.T) *api {
	t.Helper()
	m := miniredis.RunT(t)
	now := time.Now()
	m.SetTime(now)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { rdb.Close() })
	lim, err := limiter.New(rdb, limiter.Config{Limit: 3, LeaseTTL: 90 * time.Second, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, &api{rdb: rdb, m: m, now: now}, httpapi.Deps{Streams: lim, Ready: lim})
}

// serve starts the server behind checkedServer, so that every request of
// these tests and its response are held to docs/openapi.yaml.
func serve(t *testing.T, a *api, deps httpapi.Deps) *api {
	srv := checkedServer(t, httpapi.NewServer(deps))
	a.t, a.url = t, srv.URL
	return a
}

// response is what a test sees of an HTTP answer.
type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// do sends a request; headers come as name, value pairs. A body is sent as
// JSON unless a Content-Type header says otherwise.
func (a *api) do(method, path, body string, headers ...string) response {
	a.t.Helper()
	req, err := http.NewRequest(method, a.url+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		a.t.Errorf("%s %s: Content-Type %q, want JSON; body %s", method, path, ct, raw)
	}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		a.t.Errorf("%s %s: body is not a JSON object: %v: %s", method, path, err, raw)
	}
	return r
}

// acquire takes a stream and returns its key. Redis's clock then moves on a
// millisecond, so that leases taken one after the other end in that order.
func (a *api) acquire(user, stream string) string {
	a.t.Helper()
	defer a.advance(time.Millisecond)
	r := a.do("GET", "/api/streams/"+user+"/"+stream, "")
	if r.status != http.StatusOK {
		a.t.Fatalf("acquire %s/%s: %d %s", user, stream, r.status, r.raw)
	}
	return r.body["stream_key"].(string)
}

// wantError checks an error response: status, code, and the other fields of
// the body, if any are given (as name, value pairs, compared as JSON).
func wantError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.status != status || r.body["error"] != code {
		t.Errorf("got %d %s, want %d with error %q", r.status, r.raw, status, code)
	}
	if msg, _ := r.body["msg"].(string); msg == "" {
		t.Errorf("error body without a msg: %s", r.raw)
	}
}

func TestAcquire(t *testing.T) {
	a := newAPI(t)
	before := time.Now()
	r := a.do("GET", "/api/streams/alice/tv", "")
	if r.status != http.StatusOK {
		t.Fatalf("acquire: %d %s", r.status, r.raw)
	}
	wantFields(t, r.body, map[string]any{
		"user_id": "alice", "stream_id": "tv", "active_streams": 1.0, "limit": 3.0,
		"lease_ttl_seconds": 90.0, "renew_after_seconds": 30.0,
	})
	key := r.body["stream_key"].(string)
	expires, err := time.Parse(time.RFC3339, r.body["lease_expires_at"].(string))
	if err != nil {
		t.Fatalf("lease_expires_at: %v", err)
	}
	if lease := expires.Sub(before); lease < 89*time.Second || lease > 91*time.Second {
		t.Errorf("lease_expires_at %v is %v from now, want 90s", expires, lease)
	}
	if score := a.rdb.ZScore(ctx, "limiter:{alice}:streams", "tv").Val(); int64(score) != expires.UnixMilli() {
		t.Errorf("stored expiry %v, answered %v", int64(score), expires.UnixMilli())
	}

	again := a.do("GET", "/api/streams/alice/tv", "")
	if again.status != http.StatusOK || again.body["stream_key"] != key || again.body["active_streams"] != 1.0 {
		t.Errorf("re-acquire: %d %s, want 200, the same key, 1 active", again.status, again.raw)
	}
}

func TestAcquireOverTheLimit(t *testing.T) {
	a := newAPI(t)
	for _, s := range []string{"tv", "phone", "laptop"} {
		a.acquire("alice", s)
	}
	r := a.do("GET", "/api/streams/alice/tablet", "")
	wantError(t, r, http.StatusForbidden, "stream_limit_reached")
	wantFields(t, r.body, map[string]any{"msg": "Request denied: too many concurrent streams", "limit": 3.0})
	active, _ := r.body["active_streams"].([]any)
	var ids []string
	for _, s := range active {
		s := s.(map[string]any)
		ids = append(ids, s["stream_id"].(string))
		if _, err := time.Parse(time.RFC3339, s["lease_expires_at"].(string)); err != nil {
			t.Errorf("lease_expires_at: %v", err)
		}
		if _, leaked := s["stream_key"]; leaked {
			t.Error("a refusal lists stream keys")
		}
	}
	if strings.Join(ids, ",") != "tv,phone,laptop" {
		t.Errorf("active_streams = %v, want tv,phone,laptop", ids)
	}
}

func TestHeartbeat(t *testing.T) {
	a := newAPI(t)
	key := a.acquire("alice", "tv")
	hb := func(stream, body string, headers ...string) response {
		return a.do("POST", "/api/streams/alice/"+stream+"/heartbeat", body, headers...)
	}

	r := hb("tv", `{"stream_key":"`+key+`"}`)
	if r.status != http.StatusOK || r.body["stream_key"] != key || r.body["active_streams"] != 1.0 {
		t.Errorf("heartbeat: %d %s", r.status, r.raw)
	}
	wantFields(t, r.body, map[string]any{"user_id": "alice", "stream_id": "tv", "limit": 3.0})

	tests := []struct {
		name, stream, body string
		headers            []string
		status             int
		code               string
	}{
		{"wrong key", "tv", `{"stream_key":"not-the-key"}`, nil, 409, "stream_key_mismatch"},
		{"empty key", "tv", `{"stream_key":""}`, nil, 400, "invalid_stream_key"},
		{"never acquired", "radio", `{"stream_key":"` + key + `"}`, nil, 410, "lease_expired"},
		{"never acquired, wrong key", "radio", `{"stream_key":"x"}`, nil, 410, "lease_expired"},
		{"no body", "tv", ``, nil, 400, "invalid_body"},
		{"no key", "tv", `{"key":"x"}`, nil, 400, "invalid_body"},
		{"key not a string", "tv", `{"stream_key":42}`, nil, 400, "invalid_body"},
		{"not JSON", "tv", `stream_key=x`, nil, 400, "invalid_body"},
		{"a JSON array", "tv", `["x"]`, nil, 400, "invalid_body"},
		{"trailing garbage", "tv", `{"stream_key":"` + key + `"} x`, nil, 400, "invalid_body"},
		{"invalid UTF-8", "tv", "{\"stream_key\":\"\xff\xfe\"}", nil, 400, "invalid_body"},
		{"form content type", "tv", `{"stream_key":"` + key + `"}`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"},
		{"over 1 MiB", "tv", `{"stream_key":"` + strings.Repeat("x", httpapi.MaxBodyBytes) + `"}`, nil, 413, "body_too_large"},
		{"invalid stream ID", "%7Btv%7D", `{"stream_key":"` + key + `"}`, nil, 400, "invalid_stream_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, hb(tt.stream, tt.body, tt.headers...), tt.status, tt.code)
		})
	}

	// Expired: the heartbeat must not bring the stream back.
	a.advance(91 * time.Second)
	wantError(t, hb("tv", `{"stream_key":"`+key+`"}`), http.StatusGone, "lease_expired")
	if n := a.rdb.Exists(ctx, "limiter:{alice}:streams").Val(); n != 0 {
		t.Error("a heartbeat after expiry re-added the stream")
	}
}

func TestRelease(t *testing.T) {
	for _, method := range []string{"PATCH", "DELETE"} {
		t.Run(method, func(t *testing.T) {
			a := newAPI(t)
			tv := a.acquire("alice", "tv")
			phone := a.acquire("alice", "phone")

			r := a.do(method, "/api/streams/alice/tv", `{"stream_key":"`+phone+`"}`)
			wantError(t, r, http.StatusConflict, "stream_key_mismatch")
			if !a.rdb.HExists(ctx, "limiter:{alice}:keys", "tv").Val() {
				t.Fatal("a release with a wrong key freed the stream")
			}
			wantError(t, a.do(method, "/api/streams/alice/tv?stream_key="+phone, ""), http.StatusConflict, "stream_key_mismatch")
			wantError(t, a.do(method, "/api/streams/alice/tv", `{"stream_key":""}`), http.StatusBadRequest, "invalid_stream_key")
			wantError(t, a.do(method, "/api/streams/alice/tv?stream_key=", ""), http.StatusBadRequest, "invalid_stream_key")
			wantError(t, a.do(method, "/api/streams/alice/tv?stream_id=phone", ""), http.StatusBadRequest, "invalid_stream_id")
			wantError(t, a.do(method, "/api/streams/alice/tv", `{"stream_id":"phone"}`), http.StatusBadRequest, "invalid_stream_id")

			r = a.do(method, "/api/streams/alice/tv", `{"stream_key":"`+tv+`"}`)
			wantBody(t, r, http.StatusOK, `{"stream_id":"tv","released":true,"active_streams":1,"limit":3}`)
			r = a.do(method, "/api/streams/alice/tv", "")
			wantBody(t, r, http.StatusOK, `{"stream_id":"tv","released":false,"active_streams":1,"limit":3}`)
			r = a.do(method, "/api/streams/alice/phone?stream_key="+phone, "")
			wantBody(t, r, http.StatusOK, `{"stream_id":"phone","released":true,"active_streams":0,"limit":3}`)
			if n := a.rdb.Exists(ctx, "limiter:{alice}:streams", "limiter:{alice}:keys").Val(); n != 0 {
				t.Errorf("%d keys left after every stream was released", n)
			}
		})
	}
}

func TestLegacyRelease(t *testing.T) {
	tests := []struct {
		name, query, body string
		status            int
		want              string // the whole body, for a 200
		code              string // the error code otherwise
	}{
		{name: "stream_id in the body", body: `{"stream_id":"phone"}`, status: 200,
			want: `{"stream_id":"phone","released":true,"active_streams":2,"limit":3}`},
		{name: "numeric stream_id, as old players send", body: `{"stream_id":42}`, status: 200,
			want: `{"stream_id":"42","released":true,"active_streams":2,"limit":3}`},
		{name: "stream_id in the query", query: "?stream_id=laptop", status: 200,
			want: `{"stream_id":"laptop","released":true,"active_streams":2,"limit":3}`},
		{name: "the same in both", query: "?stream_id=phone", body: `{"stream_id":"phone"}`, status: 200,
			want: `{"stream_id":"phone","released":true,"active_streams":2,"limit":3}`},
		{name: "none: the lease that expires soonest", status: 200,
			want: `{"stream_id":"tv","released":true,"active_streams":2,"limit":3}`},
		{name: "an empty body is none", body: ` `, status: 200,
			want: `{"stream_id":"tv","released":true,"active_streams":2,"limit":3}`},
		{name: "not live", query: "?stream_id=radio", status: 200,
			want: `{"stream_id":"radio","released":false,"active_streams":3,"limit":3}`},
		{name: "body and query differ", query: "?stream_id=tv", body: `{"stream_id":"phone"}`, status: 400, code: "invalid_query"},
		{name: "query repeats it", query: "?stream_id=tv&stream_id=phone", status: 400, code: "invalid_query"},
		{name: "malformed query", query: "?stream_id=%zz", status: 400, code: "invalid_query"},
		{name: "empty stream_id", query: "?stream_id=", status: 400, code: "invalid_stream_id"},
		{name: "invalid stream_id", body: `{"stream_id":"a b"}`, status: 400, code: "invalid_stream_id"},
		{name: "stream_id neither string nor number", body: `{"stream_id":true}`, status: 400, code: "invalid_body"},
		{name: "negative number", body: `{"stream_id":-1}`, status: 400, code: "invalid_body"},
		{name: "a key without its stream", body: `{"stream_key":"k"}`, status: 400, code: "invalid_stream_id"},
		{name: "a key without its stream, in the query", query: "?stream_key=k", status: 400, code: "invalid_stream_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAPI(t)
			for _, s := range []string{"tv", "phone", "42"} { // tv expires first
				a.acquire("alice", s)
			}
			if tt.query == "?stream_id=laptop" {
				a.do("DELETE", "/api/streams/alice/42", "")
				a.acquire("alice", "laptop")
			}
			r := a.do("PATCH", "/api/users/alice"+tt.query, tt.body)
			if tt.status == 200 {
				wantBody(t, r, 200, tt.want)
			} else {
				wantError(t, r, tt.status, tt.code)
			}
		})
	}
	t.Run("nothing live", func(t *testing.T) {
		wantBody(t, newAPI(t).do("PATCH", "/api/users/bob", ""), 200, `{"released":false,"active_streams":0,"limit":3}`)
	})
}

func TestActiveStreams(t *testing.T) {
	a := newAPI(t)
	wantBody(t, a.do("GET", "/api/users/alice/streams", ""), 200, `{"user_id":"alice","limit":3,"active_streams":[]}`)
	a.acquire("alice", "tv")
	a.acquire("alice", "phone")
	r := a.do("GET", "/api/users/alice/streams", "")
	if r.status != 200 || strings.Contains(r.raw, "stream_key") {
		t.Fatalf("list: %d %s", r.status, r.raw)
	}
	active := r.body["active_streams"].([]any)
	if len(active) != 2 || active[0].(map[string]any)["stream_id"] != "tv" || active[1].(map[string]any)["stream_id"] != "phone" {
		t.Errorf("active_streams = %v, want tv then phone", active)
	}
}

func TestIDs(t *testing.T) {
	a := newAPI(t)
	tests := []struct {
		path   string
		status int
		code   string
	}{
		{"/api/streams/al%69ce/tv", 200, ""}, // percent-decoded before the check: alice
		{"/api/streams/user:1@x~y_z.w-v/s", 200, ""},
		{"/api/streams/" + strings.Repeat("u", 128) + "/s", 200, ""},
		{"/api/streams/" + strings.Repeat("u", 129) + "/s", 400, "invalid_user_id"},
		{"/api/streams/%7Balice%7D/tv", 400, "invalid_user_id"},
		{"/api/streams/a%2Fb/tv", 400, "invalid_user_id"},
		{"/api/streams/a%20b/tv", 400, "invalid_user_id"},
		{"/api/streams/a%00b/tv", 400, "invalid_user_id"},
		{"/api/streams/%C3%A9/tv", 400, "invalid_user_id"},
		{"/api/streams/%2E%2E/tv", 400, "invalid_user_id"},
		{"/api/streams/alice/%2A", 400, "invalid_stream_id"},
		{"/api/streams/alice/tv%7D", 400, "invalid_stream_id"},
		{"/api/users/%7Bx%7D/streams", 400, "invalid_user_id"},
	}
	for _, tt := range tests {
		r := a.do("GET", tt.path, "")
		if tt.status == 200 {
			if r.status != 200 {
				t.Errorf("GET %s: %d %s, want 200", tt.path, r.status, r.raw)
			}
			continue
		}
		wantError(t, r, tt.status, tt.code)
	}
	if n := a.rdb.ZCard(ctx, "limiter:{alice}:streams").Val(); n != 1 {
		t.Errorf("al%%69ce was not stored as alice")
	}
	wantError(t, a.do("PATCH", "/api/users/%7Bx%7D", ""), 400, "invalid_user_id")
	wantError(t, a.do("POST", "/api/streams/%7Bx%7D/tv/heartbeat", `{"stream_key":"k"}`), 400, "invalid_user_id")
	wantError(t, a.do("DELETE", "/api/streams/x/%7Btv%7D", ""), 400, "invalid_stream_id")
}

func TestRoutingErrors(t *testing.T) {
	a := newAPI(t)
	wantBody(t, a.do("GET", "/nope", ""), 404, `{"error":"not_found","msg":"No such route"}`)
	wantBody(t, a.do("GET", "/api/streams/alice", ""), 404, `{"error":"not_found","msg":"No such route"}`)
	r := a.do("PUT", "/api/streams/alice/tv", "")
	wantError(t, r, 405, "method_not_allowed")
	if allow := r.header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "DELETE") {
		t.Errorf("Allow = %q", allow)
	}
	wantError(t, a.do("GET", "/api/users/alice", ""), 405, "method_not_allowed")
}

func TestHealth(t *testing.T) {
	a := newAPI(t)
	wantBody(t, a.do("GET", "/healthz", ""), 200, `{"status":"ok"}`)
	wantBody(t, a.do("GET", "/readyz", ""), 200, `{"status":"ready"}`)
	a.m.Close()
	r := a.do("GET", "/readyz", "")
	wantError(t, r, 503, "redis_unavailable")
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	wantBody(t, a.do("GET", "/healthz", ""), 200, `{"status":"ok"}`)
}

func TestAScriptThatFailsIsInternal(t *testing.T) {
	a := newAPI(t)
	a.rdb.Set(ctx, "limiter:{alice}:streams", "a string where a sorted set belongs", 0)
	r := a.do("GET", "/api/streams/alice/tv", "")
	wantBody(t, r, 500, `{"error":"internal","msg":"Internal error: it has been logged"}`)
}

func TestNothingIsCached(t *testing.T) {
	a := newAPI(t)
	for _, path := range []string{"/api/streams/alice/tv", "/api/users/alice/streams", "/nope"} {
		if got := a.do("GET", path, "").header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("GET %s: Cache-Control = %q, want no-store", path, got)
		}
	}
}

func TestBodyErrorsSpeakJSONNotGo(t *testing.T) {
	a := newAPI(t)
	tests := []struct{ body, msg string }{
		{`["x"]`, "the body must be a JSON object"},
		{`{"stream_key":42}`, "stream_key must not be a JSON number"},
		{`{"stream_key":`, "the body is not valid JSON (at byte 14)"},
		{`{"stream_key":"k"} x`, "the body is not valid JSON (at byte 20)"},
	}
	for _, tt := range tests {
		r := a.do("POST", "/api/streams/alice/tv/heartbeat", tt.body)
		wantBody(t, r, 400, `{"error":"invalid_body","msg":"`+tt.msg+`"}`)
	}
	r := a.do("PATCH", "/api/users/alice", `{"stream_id":[1]}`)
	wantBody(t, r, 400, `{"error":"invalid_body","msg":"stream_id must be a string or a whole number"}`)
}

func TestRequestID(t *testing.T) {
	a := newAPI(t)
	r := a.do("GET", "/healthz", "", "X-Request-ID", "abc-123")
	if got := r.header.Get("X-Request-ID"); got != "abc-123" {
		t.Errorf("X-Request-ID = %q, want the caller's", got)
	}
	if got := a.do("GET", "/healthz", "").header.Get("X-Request-ID"); got == "" {
		t.Error("no X-Request-ID made")
	}
}

// failing answers every call with one error, to reach the error mapping.
type failing struct{ err error }

func (f failing) Acquire(context.Context, string, string) (limiter.Lease, error) {
	return limiter.Lease{}, f.err
}
func (f failing) Renew(context.Context, string, string, string) (limiter.Lease, error) {
	return limiter.Lease{}, f.err
}
func (f failing) Release(context.Context, string, string, string) (limiter.Release, error) {
	return limiter.Release{}, f.err
}
func (f failing) ReleaseSoonest(context.Context, string) (limiter.Release, error) {
	return limiter.Release{}, f.err
}
func (f failing) Active(context.Context, string) ([]limiter.Stream, error) { return nil, f.err }
func (f failing) Limit() int                                               { return 3 }
func (f failing) Ping(context.Context) error                               { return f.err }

func TestFailuresOfTheStore(t *testing.T) {
	requests := []struct{ method, path, body string }{
		{"GET", "/api/streams/alice/tv", ""},
		{"POST", "/api/streams/alice/tv/heartbeat", `{"stream_key":"k"}`},
		{"PATCH", "/api/streams/alice/tv", ""},
		{"DELETE", "/api/streams/alice/tv", ""},
		{"PATCH", "/api/users/alice", ""},
		{"GET", "/api/users/alice/streams", ""},
		{"GET", "/readyz", ""},
	}
	t.Run("unavailable", func(t *testing.T) {
		f := failing{err: errors.Join(limiter.ErrUnavailable, errors.New("dial tcp 10.0.0.1:6379: secret detail"))}
		a := serve(t, &api{}, httpapi.Deps{Streams: f, Ready: f})
		for _, req := range requests {
			r := a.do(req.method, req.path, req.body)
			wantBody(t, r, 503, `{"error":"redis_unavailable","msg":"The stream store is unavailable: retry shortly"}`)
			if r.header.Get("Retry-After") != "1" {
				t.Errorf("%s %s: Retry-After = %q", req.method, req.path, r.header.Get("Retry-After"))
			}
		}
	})
	t.Run("internal", func(t *testing.T) {
		var logs bytes.Buffer
		f := failing{err: errors.New("limiter: acquire: script failed: WRONGTYPE secret detail")}
		a := serve(t, &api{}, httpapi.Deps{Streams: f, Ready: f, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		for _, req := range requests {
			r := a.do(req.method, req.path, req.body, "X-Request-ID", "req-"+req.method)
			wantBody(t, r, 500, `{"error":"internal","msg":"Internal error: it has been logged"}`)
		}
		if !strings.Contains(logs.String(), "request_id=req-GET") || !strings.Contains(logs.String(), "secret detail") {
			t.Errorf("the cause and request ID were not logged: %s", logs.String())
		}
	})
}

func wantFields(t *testing.T, body map[string]any, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if body[k] != v {
			t.Errorf("%s = %#v, want %#v (body %v)", k, body[k], v, body)
		}
	}
}

// wantBody compares a whole JSON body, field order aside.
func wantBody(t *testing.T, r response, status int, want string) {
	t.Helper()
	var w map[string]any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(r.body)
	exp, _ := json.Marshal(w)
	if r.status != status || string(got) != string(exp) {
		t.Errorf("got %d %s, want %d %s", r.status, r.raw, status, want)
	}
}

func TestBodyOverTheLimitWithoutContentLength(t *testing.T) {
	a := newAPI(t)
	a.acquire("alice", "tv")
	// A reader of unknown length makes the client send the body chunked.
	body := io.MultiReader(strings.NewReader(`{"stream_key":"`), strings.NewReader(strings.Repeat("x", httpapi.MaxBodyBytes)), strings.NewReader(`"}`))
	req, _ := http.NewRequest("POST", a.url+"/api/streams/alice/tv/heartbeat", body)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(raw), `"body_too_large"`) {
		t.Errorf("chunked body over 1 MiB: %d %s", resp.StatusCode, raw)
	}
}
