package limiter_test

import (
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/internal/redistest"
	"github.com/limiterd/limiterd/limiter"
)

// backend is one Redis the limiter's behaviour is checked against.
type backend struct {
	name  string
	rdb   redis.UniversalClient
	lease time.Duration // a lease short enough for the backend to see it end
	// advance moves Redis's clock, and its key TTLs, forward by d.
	advance func(d time.Duration)
	prefix  string // key prefix of this test's state
}

// eachBackend runs test against miniredis (fast, clock under control) and
// against a real redis-server (real Lua, real clock, so short real leases).
func eachBackend(t *testing.T, test func(t *testing.T, b backend)) {
	t.Helper()
	t.Parallel() // the real server's leases take real seconds to run out
	t.Run("miniredis", func(t *testing.T) {
		t.Parallel()
		m := miniredis.RunT(t)
		now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
		m.SetTime(now)
		rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
		t.Cleanup(func() { rdb.Close() })
		test(t, backend{
			name:  "miniredis",
			rdb:   rdb,
			lease: 90 * time.Second,
			advance: func(d time.Duration) {
				now = now.Add(d)
				m.SetTime(now)
				m.FastForward(d)
			},
			prefix: limiter.DefaultKeyPrefix,
		})
	})
	t.Run("redis-server", func(t *testing.T) {
		t.Parallel()
		test(t, backend{
			name:    "redis-server",
			rdb:     redistest.Client(t),
			lease:   time.Second,
			advance: time.Sleep,
			prefix:  uniquePrefix(),
		})
	})
}

// newLimiter returns a Limiter on the backend with its short lease, unless
// cfg says otherwise.
func (b backend) newLimiter(t *testing.T, cfg limiter.Config) *limiter.Limiter {
	t.Helper()
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = b.lease
	}
	cfg.KeyPrefix = b.prefix
	l, err := limiter.New(b.rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// uniquePrefix keeps tests apart on a shared REDIS_TEST_URL server.
func uniquePrefix() string {
	var b [6]byte
	rand.Read(b[:])
	return "limitertest-" + hex.EncodeToString(b[:])
}
