package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/httpapi"
	"github.com/limiterd/limiterd/internal/redistest"
	"github.com/limiterd/limiterd/limiter"
)

// benchStreams answers every call at once with a fixed reply, so that the
// handler benchmarks count the HTTP layer's work and allocations only.
type benchStreams struct {
	lease   limiter.Lease
	refusal error
	release limiter.Release
	active  []limiter.Stream
}

func newBenchStreams() *benchStreams {
	expires := time.Date(2026, 12, 4, 15, 50, 6, 571e6, time.UTC)
	live := []limiter.Stream{{ID: "movie-1", ExpiresAt: expires}, {ID: "movie-2", ExpiresAt: expires}, {ID: "movie-3", ExpiresAt: expires}}
	return &benchStreams{
		lease: limiter.Lease{UserID: "alice", StreamID: "movie-1", StreamKey: "25038a4d-c3df-491d-807a-3cafe584aef9",
			ExpiresAt: expires, TTL: 90 * time.Second, Active: 1},
		refusal: &limiter.LimitError{Limit: 3, Active: live},
		release: limiter.Release{StreamID: "movie-1", Released: true, Active: 2},
		active:  live,
	}
}

func (s *benchStreams) Acquire(_ context.Context, _, streamID string) (limiter.Lease, error) {
	if streamID == "movie-4" {
		return limiter.Lease{}, s.refusal
	}
	return s.lease, nil
}

func (s *benchStreams) Renew(context.Context, string, string, string) (limiter.Lease, error) {
	return s.lease, nil
}

func (s *benchStreams) Release(context.Context, string, string, string) (limiter.Release, error) {
	return s.release, nil
}

func (s *benchStreams) ReleaseSoonest(context.Context, string) (limiter.Release, error) {
	return s.release, nil
}

func (s *benchStreams) Active(context.Context, string) ([]limiter.Stream, error) {
	return s.active, nil
}
func (s *benchStreams) Limit() int                 { return 3 }
func (s *benchStreams) Ping(context.Context) error { return nil }

// reusedWriter is a ResponseWriter used again on every iteration, so the
// allocations counted are the server's, not a new recorder's.
type reusedWriter struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (w *reusedWriter) Header() http.Header { return w.header }
func (w *reusedWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *reusedWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}
func (w *reusedWriter) reset() {
	clear(w.header)
	w.code = 0
	w.body.Reset()
}

// BenchmarkHandler runs one request of each kind through httpapi.NewServer
// over a limiter that answers at once: the cost of routing, parsing, the
// middleware and the JSON answer.
func BenchmarkHandler(b *testing.B) {
	streams := newBenchStreams()
	srv := httpapi.NewServer(httpapi.Deps{Streams: streams, Ready: streams})
	key := streams.lease.StreamKey
	benchmarks := []struct {
		name, method, target, body string
		want                       int
	}{
		{"acquire", http.MethodGet, "/api/streams/alice/movie-1", "", http.StatusOK},
		{"acquire refused", http.MethodGet, "/api/streams/alice/movie-4", "", http.StatusForbidden},
		{"heartbeat", http.MethodPost, "/api/streams/alice/movie-1/heartbeat", `{"stream_key":"` + key + `"}`, http.StatusOK},
		{"release", http.MethodDelete, "/api/streams/alice/movie-1?stream_key=" + key, "", http.StatusOK},
		{"legacy release", http.MethodPatch, "/api/users/alice", `{"stream_id":42}`, http.StatusOK},
		{"list", http.MethodGet, "/api/users/alice/streams", "", http.StatusOK},
		{"healthz", http.MethodGet, "/healthz", "", http.StatusOK},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			body := strings.NewReader(bm.body)
			req := httptest.NewRequest(bm.method, bm.target, nil)
			if bm.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			w := &reusedWriter{header: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				body.Reset(bm.body)
				req.Body, req.ContentLength = io.NopCloser(body), int64(len(bm.body))
				w.reset()
				srv.ServeHTTP(w, req)
				if w.code != bm.want {
					b.Fatalf("status %d, want %d: %s", w.code, bm.want, w.body.String())
				}
			}
		})
	}
}

// BenchmarkEndToEndAcquire is an acquire through the whole service: the
// HTTP server and a real Limiter on a real redis-server. "handler" calls the
// server in process; "loopback" adds a keep-alive HTTP client over TCP.
// Each acquire asks for one of five streams of one of many users, so some
// are admitted, some renewed, some refused. Profile it with
//
//	go test -run '^$' -bench EndToEnd -cpuprofile cpu.out ./httpapi/
func BenchmarkEndToEndAcquire(b *testing.B) {
	opts, err := redis.ParseURL(redistest.URL(b))
	if err != nil {
		b.Fatal(err)
	}
	opts.PoolSize = 64
	rdb := redis.NewClient(opts)
	b.Cleanup(func() { rdb.Close() })
	var run atomic.Int64 // each sub-benchmark, and each of its rounds, gets users of its own
	newServer := func(b *testing.B) http.Handler {
		lim, err := limiter.New(rdb, limiter.Config{Limit: 3, LeaseTTL: 10 * time.Minute, Timeout: 5 * time.Second,
			KeyPrefix: fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), run.Add(1))})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := lim.Active(context.Background(), "warm-up"); err != nil { // loads the scripts
			b.Fatal(err)
		}
		return httpapi.NewServer(httpapi.Deps{Streams: lim, Ready: lim})
	}
	const users, streamsPerUser = 10_000, 5
	path := func(i int64) string {
		return fmt.Sprintf("/api/streams/user%d/s%d", i%users, (i/users)%streamsPerUser)
	}
	ok := func(code int) bool { return code == http.StatusOK || code == http.StatusForbidden }

	b.Run("handler", func(b *testing.B) {
		srv := newServer(b)
		var n atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			w := &reusedWriter{header: http.Header{}}
			for pb.Next() {
				req := httptest.NewRequest(http.MethodGet, path(n.Add(7919)), nil)
				w.reset()
				srv.ServeHTTP(w, req)
				if !ok(w.code) {
					b.Errorf("status %d: %s", w.code, w.body.String())
					return
				}
			}
		})
	})
	b.Run("loopback", func(b *testing.B) {
		ts := httptest.NewServer(newServer(b))
		b.Cleanup(ts.Close)
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
		b.Cleanup(client.CloseIdleConnections)
		var n atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := client.Get(ts.URL + path(n.Add(7919)))
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if !ok(resp.StatusCode) {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	})
}
