package limiter_test

import (
	"errors"
	"sync"
	"testing"

	"github.com/limiterd/limiterd/internal/redistest"
	"github.com/limiterd/limiterd/limiter"
)

// TestRaceAdmitsExactlyTheLimit starts 300 goroutines at once, each asking
// for a different stream of one user, through three Limiters with clients of
// their own (three replicas of the service), on a real Redis.
func TestRaceAdmitsExactlyTheLimit(t *testing.T) {
	const goroutines, replicas, limit = 300, 3, 3
	cfg := redistest.Config(t) // any topology REDIS_TEST_MODE names
	prefix := uniquePrefix()
	var limiters []*limiter.Limiter
	for range replicas {
		cfg := cfg
		cfg.PoolSize = goroutines / replicas
		rdb := redistest.NewClient(t, cfg)
		l, err := limiter.New(rdb, limiter.Config{Limit: limit, KeyPrefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		limiters = append(limiters, l)
	}

	var (
		start             = make(chan struct{})
		wg                sync.WaitGroup
		mu                sync.Mutex
		admitted, refused int
		others            []error
		keysByStream      = map[string]string{}
	)
	for i := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := limiters[i%replicas]
			stream := "s" + string(rune('A'+i/26%26)) + string(rune('a'+i%26))
			<-start
			lease, err := l.Acquire(ctx, "alice", stream)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				admitted++
				keysByStream[stream] = lease.StreamKey
			case errors.Is(err, limiter.ErrLimitReached):
				refused++
			default:
				others = append(others, err)
			}
		}()
	}
	close(start)
	wg.Wait()

	streamsKey, keysKey := limiters[0].Keys("alice")
	rdb := redistest.NewClient(t, cfg)
	inSet, inHash := rdb.ZCard(ctx, streamsKey).Val(), rdb.HLen(ctx, keysKey).Val()
	t.Logf("%d goroutines over %d replicas: admitted %d, refused %d, other errors %d; set holds %d, hash holds %d",
		goroutines, replicas, admitted, refused, len(others), inSet, inHash)
	if len(others) > 0 {
		t.Errorf("unexpected errors, first: %v", others[0])
	}
	if admitted != limit || refused != goroutines-limit || inSet != limit || inHash != limit {
		t.Errorf("want exactly %d admitted and stored, %d refused", limit, goroutines-limit)
	}
}
