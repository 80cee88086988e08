package limiter_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/limiter"
)

func Example() {
	m, _ := miniredis.Run() // any Redis; miniredis keeps the example self-contained
	defer m.Close()
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()

	l, _ := limiter.New(rdb, limiter.Config{Limit: 2})
	ctx := context.Background()

	tv, _ := l.Acquire(ctx, "alice", "tv")
	phone, _ := l.Acquire(ctx, "alice", "phone")
	fmt.Println("streams:", phone.Active)

	_, err := l.Acquire(ctx, "alice", "laptop")
	var limitErr *limiter.LimitError
	if errors.As(err, &limitErr) {
		fmt.Println("laptop refused:", len(limitErr.Active), "of", limitErr.Limit, "in use")
	}

	again, _ := l.Acquire(ctx, "alice", "tv") // a retry: same lease, no second slot
	fmt.Println("same key:", again.StreamKey == tv.StreamKey, "streams:", again.Active)

	_, err = l.Renew(ctx, "alice", "tv", "a key from another session")
	fmt.Println("heartbeat with a wrong key:", errors.Is(err, limiter.ErrKeyMismatch))

	r, _ := l.Release(ctx, "alice", "phone", phone.StreamKey)
	fmt.Println("released:", r.Released, "streams:", r.Active)

	_, err = l.Acquire(ctx, "alice", "laptop")
	fmt.Println("laptop admitted:", err == nil)
	// Output:
	// streams: 2
	// laptop refused: 2 of 2 in use
	// same key: true streams: 2
	// heartbeat with a wrong key: true
	// released: true streams: 1
	// laptop admitted: true
}
