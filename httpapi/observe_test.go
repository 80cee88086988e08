package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limiterd/limiterd/httpapi"
	"github.com/limiterd/limiterd/limiter"
)

// requestCounter is a RequestObserver that keeps "route method status".
type requestCounter struct {
	mu   sync.Mutex
	seen []string
}

func (r *requestCounter) ObserveRequest(route, method string, status int, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, fmt.Sprintf("%s %s %d", route, method, status))
}

func TestRequestIDs(t *testing.T) {
	a := newAPI(t)
	generated := regexp.MustCompile(`^[0-9a-f]{32}$`)
	tests := []struct {
		name, incoming string
		keep           bool
	}{
		{"none", "", false},
		{"printable", "abc-123_XYZ.42", true},
		{"longest kept", strings.Repeat("r", 128), true},
		{"too long", strings.Repeat("r", 129), false},
		{"with a space", "two words", false},
		{"not ASCII", "caf\u00e9", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var headers []string
			if tt.incoming != "" {
				headers = []string{"X-Request-ID", tt.incoming}
			}
			got := a.do("GET", "/healthz", "", headers...).header.Get("X-Request-ID")
			switch {
			case tt.keep && got != tt.incoming:
				t.Errorf("X-Request-ID %q, want the caller's %q", got, tt.incoming)
			case !tt.keep && !generated.MatchString(got):
				t.Errorf("X-Request-ID %q for incoming %q, want a new 32-hex-digit ID", got, tt.incoming)
			}
		})
	}
}

func TestRequestsAreObservedByRouteTemplate(t *testing.T) {
	a := newAPI(t)
	counter := &requestCounter{}
	serve(t, a, httpapi.Deps{Streams: mustLimiter(t, a), Ready: mustLimiter(t, a), Metrics: counter})
	a.do("GET", "/api/streams/u1/s1", "")
	a.do("GET", "/api/streams/u%7B/s1", "")
	a.do("POST", "/api/streams/u1/s1", "")
	a.do("GET", "/no/such/path", "")
	a.do("GET", "/api/users/u1/streams", "")
	want := []string{
		"/api/streams/:user_id/:stream_id GET 200",
		"/api/streams/:user_id/:stream_id GET 400",
		"/api/streams/:user_id/:stream_id POST 405",
		"unmatched GET 404",
		"/api/users/:user_id/streams GET 200",
	}
	if got := strings.Join(counter.seen, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("observed:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

// degradedStreams grants every acquire and heartbeat as fail-open does when
// Redis is down, and fails everything else.
type degradedStreams struct{ failing }

func (degradedStreams) Acquire(_ context.Context, user, stream string) (limiter.Lease, error) {
	return degradedLease(user, stream, "new-key"), nil
}

func (degradedStreams) Renew(_ context.Context, user, stream, key string) (limiter.Lease, error) {
	return degradedLease(user, stream, key), nil
}

func degradedLease(user, stream, key string) limiter.Lease {
	return limiter.Lease{
		UserID: user, StreamID: stream, StreamKey: key,
		ExpiresAt: time.Now().Add(90 * time.Second), TTL: 90 * time.Second,
		DegradedBy: limiter.ErrUnavailable,
	}
}

func TestDegradedAnswers(t *testing.T) {
	var logs bytes.Buffer
	a := serve(t, &api{}, httpapi.Deps{
		Streams: degradedStreams{failing{limiter.ErrUnavailable}},
		Ready:   failing{limiter.ErrUnavailable},
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
	})
	for _, req := range []struct{ method, path, body, key string }{
		{"GET", "/api/streams/u1/s1", "", "new-key"},
		{"POST", "/api/streams/u1/s1/heartbeat", `{"stream_key":"k1"}`, "k1"},
	} {
		r := a.do(req.method, req.path, req.body, "X-Request-ID", "req-"+req.method)
		if r.status != http.StatusOK || r.body["degraded"] != true || r.body["stream_key"] != req.key {
			t.Errorf("%s %s: %d %s, want 200 with degraded true and key %q", req.method, req.path, r.status, r.raw, req.key)
		}
		if _, ok := r.body["active_streams"]; ok {
			t.Errorf("%s %s: %s: a degraded answer cannot know active_streams", req.method, req.path, r.raw)
		}
		if !strings.Contains(logs.String(), "request_id=req-"+req.method) ||
			!strings.Contains(logs.String(), "degraded answer") {
			t.Errorf("no degraded line with request_id=req-%s in the log:\n%s", req.method, logs.String())
		}
	}
	wantError(t, a.do("DELETE", "/api/streams/u1/s1", ""), http.StatusServiceUnavailable, "redis_unavailable")
	wantError(t, a.do("GET", "/readyz", ""), http.StatusServiceUnavailable, "redis_unavailable")
}

func mustLimiter(t *testing.T, a *api) *limiter.Limiter {
	t.Helper()
	lim, err := limiter.New(a.rdb, limiter.Config{Limit: 3, LeaseTTL: 90 * time.Second, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return lim
}
