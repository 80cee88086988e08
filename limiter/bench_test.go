package limiter_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/internal/redistest"
	"github.com/limiterd/limiterd/limiter"
)

// BenchmarkLimiter times each Limiter call, with its allocations, on a real
// redis-server (real Lua, one loopback round trip; the allocations counted
// are the client's and the package's) and on miniredis (in this process, so
// its Lua engine's time and allocations are counted too: a figure to watch
// for the development server, not for production).
//
//	go test -run '^$' -bench Limiter -benchmem ./limiter/
func BenchmarkLimiter(b *testing.B) {
	backends := []struct {
		name string
		rdb  func(b *testing.B) *redis.Client
	}{
		{"redis-server", func(b *testing.B) *redis.Client {
			opts, err := redis.ParseURL(redistest.URL(b))
			if err != nil {
				b.Fatal(err)
			}
			opts.PoolSize = 64 // RunParallel below runs GOMAXPROCS goroutines; room to spare
			rdb := redis.NewClient(opts)
			b.Cleanup(func() { rdb.Close() })
			return rdb
		}},
		{"miniredis", func(b *testing.B) *redis.Client {
			rdb := redis.NewClient(&redis.Options{Addr: miniredis.RunT(b).Addr()})
			b.Cleanup(func() { rdb.Close() })
			return rdb
		}},
	}
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			rdb := be.rdb(b)
			// Each benchmark gets a prefix of its own: b.Loop and b.N run a
			// benchmark body more than once, and state must not carry over.
			newLimiter := func(b *testing.B) *limiter.Limiter {
				l, err := limiter.New(rdb, limiter.Config{Limit: 3, LeaseTTL: 10 * time.Minute, KeyPrefix: uniquePrefix()})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := l.Active(context.Background(), "warm-up"); err != nil {
					b.Fatal(err)
				}
				return l
			}
			benchLimiter(b, newLimiter)
		})
	}
}

func benchLimiter(b *testing.B, newLimiter func(b *testing.B) *limiter.Limiter) {
	ctx := context.Background()
	must := func(b *testing.B, err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Run("Acquire admitted", func(b *testing.B) {
		l := newLimiter(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() { // a new user each time
			i++
			_, err := l.Acquire(ctx, fmt.Sprintf("u%d", i), "s1")
			must(b, err)
		}
	})
	b.Run("Acquire renewed", func(b *testing.B) {
		l := newLimiter(b)
		_, err := l.Acquire(ctx, "alice", "s1")
		must(b, err)
		b.ReportAllocs()
		for b.Loop() {
			_, err := l.Acquire(ctx, "alice", "s1")
			must(b, err)
		}
	})
	b.Run("Acquire refused", func(b *testing.B) {
		l := newLimiter(b)
		for _, s := range []string{"s1", "s2", "s3"} {
			_, err := l.Acquire(ctx, "alice", s)
			must(b, err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l.Acquire(ctx, "alice", "s4"); !errors.Is(err, limiter.ErrLimitReached) {
				b.Fatalf("want a refusal, got %v", err)
			}
		}
	})
	b.Run("Renew", func(b *testing.B) {
		l := newLimiter(b)
		lease, err := l.Acquire(ctx, "alice", "s1")
		must(b, err)
		b.ReportAllocs()
		for b.Loop() {
			_, err := l.Renew(ctx, "alice", "s1", lease.StreamKey)
			must(b, err)
		}
	})
	b.Run("Release", func(b *testing.B) {
		l := newLimiter(b)
		b.ReportAllocs()
		i := 0
		for b.Loop() { // acquire untimed, release timed
			i++
			user := fmt.Sprintf("u%d", i)
			b.StopTimer()
			lease, err := l.Acquire(ctx, user, "s1")
			must(b, err)
			b.StartTimer()
			r, err := l.Release(ctx, user, "s1", lease.StreamKey)
			must(b, err)
			if !r.Released {
				b.Fatal("nothing released")
			}
		}
	})
	b.Run("Active", func(b *testing.B) {
		l := newLimiter(b)
		for _, s := range []string{"s1", "s2", "s3"} {
			_, err := l.Acquire(ctx, "alice", s)
			must(b, err)
		}
		b.ReportAllocs()
		for b.Loop() {
			streams, err := l.Active(ctx, "alice")
			must(b, err)
			if len(streams) != 3 {
				b.Fatalf("%d streams, want 3", len(streams))
			}
		}
	})
	// Many goroutines, many users, five streams each: admitted, renewed and
	// refused mixed, as in limiterbench's row b.
	b.Run("Acquire parallel mix", func(b *testing.B) {
		l := newLimiter(b)
		var n atomic.Int64
		b.ReportAllocs()
		b.SetParallelism(8) // 8 x GOMAXPROCS goroutines keep the connection pool busy
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(7919)
				_, err := l.Acquire(ctx, fmt.Sprintf("u%d", i%10_000), fmt.Sprintf("s%d", (i/10_000)%5))
				if err != nil && !errors.Is(err, limiter.ErrLimitReached) {
					b.Error(err)
					return
				}
			}
		})
	})
}
