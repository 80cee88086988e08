package limiter_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/limiterd/limiterd/limiter"
)

var ctx = context.Background()

func TestAcquireAdmitsUpToTheLimit(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		l := b.newLimiter(t, limiter.Config{Limit: 3})
		for i, id := range []string{"s1", "s2", "s3"} {
			lease, err := l.Acquire(ctx, "alice", id)
			if err != nil {
				t.Fatalf("acquire %s: %v", id, err)
			}
			if lease.Active != i+1 || lease.Renewed || lease.StreamID != id || lease.UserID != "alice" {
				t.Errorf("acquire %s: got %+v, want active %d, not renewed", id, lease, i+1)
			}
			if _, err := uuid.Parse(lease.StreamKey); err != nil {
				t.Errorf("stream key %q is not a UUID: %v", lease.StreamKey, err)
			}
			if lease.TTL != b.lease {
				t.Errorf("TTL = %v, want %v", lease.TTL, b.lease)
			}
		}

		_, err := l.Acquire(ctx, "alice", "s4")
		var limitErr *limiter.LimitError
		if !errors.As(err, &limitErr) || !errors.Is(err, limiter.ErrLimitReached) {
			t.Fatalf("4th acquire: err = %v, want a *LimitError", err)
		}
		if limitErr.Limit != 3 || ids(limitErr.Active) != "s1,s2,s3" {
			t.Errorf("LimitError = %+v, want limit 3 and s1,s2,s3", limitErr)
		}
		if n := b.rdb.ZCard(ctx, b.prefix+":{alice}:streams").Val(); n != 3 {
			t.Errorf("set holds %d streams after a refusal, want 3", n)
		}
		if has := b.rdb.HExists(ctx, b.prefix+":{alice}:keys", "s4").Val(); has {
			t.Error("a refused stream has a stored key")
		}

		// Another user is not affected.
		if _, err := l.Acquire(ctx, "bob", "s4"); err != nil {
			t.Errorf("bob: %v", err)
		}
	})
}

func TestAcquireAgainIsTheSameLease(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		l := b.newLimiter(t, limiter.Config{Limit: 1})
		first, err := l.Acquire(ctx, "alice", "s1")
		if err != nil {
			t.Fatal(err)
		}
		b.advance(b.lease / 2)
		again, err := l.Acquire(ctx, "alice", "s1")
		if err != nil {
			t.Fatalf("re-acquire at the limit: %v", err)
		}
		if again.StreamKey != first.StreamKey || !again.Renewed || again.Active != 1 {
			t.Errorf("re-acquire = %+v, want the same key, renewed, 1 active", again)
		}
		if !again.ExpiresAt.After(first.ExpiresAt) {
			t.Errorf("re-acquire did not extend the lease: %v then %v", first.ExpiresAt, again.ExpiresAt)
		}
	})
}

func TestExpiredLeasesFreeTheirSlots(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		l := b.newLimiter(t, limiter.Config{Limit: 2})
		old := make(map[string]string)
		for _, id := range []string{"s1", "s2"} {
			lease, err := l.Acquire(ctx, "alice", id)
			if err != nil {
				t.Fatal(err)
			}
			old[id] = lease.StreamKey
		}
		if _, err := l.Acquire(ctx, "alice", "s3"); !errors.Is(err, limiter.ErrLimitReached) {
			t.Fatalf("at the limit: err = %v", err)
		}

		b.advance(b.lease + 50*time.Millisecond) // the players died without releasing

		lease, err := l.Acquire(ctx, "alice", "s3")
		if err != nil {
			t.Fatalf("after the leases ended: %v", err)
		}
		if lease.Active != 1 {
			t.Errorf("active = %d, want 1: the expired leases still count", lease.Active)
		}
		if n := b.rdb.HLen(ctx, b.prefix+":{alice}:keys").Val(); n != 1 {
			t.Errorf("keys hash holds %d keys, want only s3's", n)
		}
		again, err := l.Acquire(ctx, "alice", "s1")
		if err != nil {
			t.Fatal(err)
		}
		if again.Renewed || again.StreamKey == old["s1"] {
			t.Errorf("an expired stream came back with its old lease: %+v", again)
		}
	})
}

func TestRenew(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		l := b.newLimiter(t, limiter.Config{})
		lease, err := l.Acquire(ctx, "alice", "s1")
		if err != nil {
			t.Fatal(err)
		}

		b.advance(b.lease / 2)
		renewed, err := l.Renew(ctx, "alice", "s1", lease.StreamKey)
		if err != nil {
			t.Fatalf("renew: %v", err)
		}
		if renewed.StreamKey != lease.StreamKey || !renewed.ExpiresAt.After(lease.ExpiresAt) || renewed.Active != 1 {
			t.Errorf("renew = %+v, want the same key and a later expiry than %v", renewed, lease.ExpiresAt)
		}

		if _, err := l.Renew(ctx, "alice", "s1", uuid.NewString()); !errors.Is(err, limiter.ErrKeyMismatch) {
			t.Errorf("renew with a wrong key: err = %v, want ErrKeyMismatch", err)
		}
		if _, err := l.Renew(ctx, "alice", "never", lease.StreamKey); !errors.Is(err, limiter.ErrLeaseInactive) {
			t.Errorf("renew of a stream never acquired: err = %v, want ErrLeaseInactive", err)
		}

		// Past the original expiry, but inside the renewed lease: still live.
		b.advance(b.lease*3/4 + 20*time.Millisecond)
		if streams, err := l.Active(ctx, "alice"); err != nil || ids(streams) != "s1" {
			t.Errorf("after renewal, active = %v, %v; want s1", ids(streams), err)
		}

		b.advance(b.lease)
		for _, key := range []string{lease.StreamKey, "wrong"} {
			if _, err := l.Renew(ctx, "alice", "s1", key); !errors.Is(err, limiter.ErrLeaseInactive) {
				t.Errorf("renew after expiry with key %q: err = %v, want ErrLeaseInactive", key, err)
			}
		}
		if n := b.rdb.Exists(ctx, b.prefix+":{alice}:streams").Val(); n != 0 {
			t.Error("a heartbeat after expiry brought the stream back")
		}
	})
}

func TestRelease(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		l := b.newLimiter(t, limiter.Config{})
		s1, _ := l.Acquire(ctx, "alice", "s1")
		s2, _ := l.Acquire(ctx, "alice", "s2")

		if _, err := l.Release(ctx, "alice", "s1", s2.StreamKey); !errors.Is(err, limiter.ErrKeyMismatch) {
			t.Fatalf("release with another stream's key: err = %v, want ErrKeyMismatch", err)
		}
		if streams, _ := l.Active(ctx, "alice"); ids(streams) != "s1,s2" {
			t.Fatalf("a mismatched release freed something: active %s", ids(streams))
		}

		r, err := l.Release(ctx, "alice", "s1", s1.StreamKey)
		if err != nil || r != (limiter.Release{StreamID: "s1", Released: true, Active: 1}) {
			t.Errorf("release with the key = %+v, %v", r, err)
		}
		if b.rdb.HExists(ctx, b.prefix+":{alice}:keys", "s1").Val() {
			t.Error("the released stream's key is still stored")
		}
		r, err = l.Release(ctx, "alice", "s1", s1.StreamKey)
		if err != nil || r != (limiter.Release{StreamID: "s1", Released: false, Active: 1}) {
			t.Errorf("second release = %+v, %v; want released false", r, err)
		}
		r, err = l.Release(ctx, "alice", "s2", "")
		if err != nil || r != (limiter.Release{StreamID: "s2", Released: true, Active: 0}) {
			t.Errorf("release without a key = %+v, %v", r, err)
		}
		if n := b.rdb.Exists(ctx, b.prefix+":{alice}:streams", b.prefix+":{alice}:keys").Val(); n != 0 {
			t.Errorf("%d keys left after the last release", n)
		}
	})
}

func TestReleaseSoonest(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		l := b.newLimiter(t, limiter.Config{})
		r, err := l.ReleaseSoonest(ctx, "alice")
		if err != nil || r != (limiter.Release{}) {
			t.Errorf("with nothing live: %+v, %v", r, err)
		}
		l.Acquire(ctx, "alice", "s1")
		b.advance(b.lease / 4)
		l.Acquire(ctx, "alice", "s2")
		b.advance(b.lease / 4)
		l.Acquire(ctx, "alice", "s1") // s1's lease now ends last

		r, err = l.ReleaseSoonest(ctx, "alice")
		if err != nil || r != (limiter.Release{StreamID: "s2", Released: true, Active: 1}) {
			t.Errorf("release soonest = %+v, %v; want s2", r, err)
		}
	})
}

func TestActiveListsSoonestFirst(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		l := b.newLimiter(t, limiter.Config{Limit: 5})
		streams, err := l.Active(ctx, "alice")
		if err != nil || len(streams) != 0 {
			t.Fatalf("no streams yet: %v, %v", streams, err)
		}
		var leases []limiter.Lease
		for _, id := range []string{"b", "a", "c"} {
			lease, err := l.Acquire(ctx, "alice", id)
			if err != nil {
				t.Fatal(err)
			}
			leases = append(leases, lease)
			b.advance(10 * time.Millisecond)
		}
		streams, err = l.Active(ctx, "alice")
		if err != nil || ids(streams) != "b,a,c" {
			t.Fatalf("active = %s, %v; want b,a,c", ids(streams), err)
		}
		for i, s := range streams {
			if !s.ExpiresAt.Equal(leases[i].ExpiresAt) {
				t.Errorf("%s expires %v, its lease said %v", s.ID, s.ExpiresAt, leases[i].ExpiresAt)
			}
		}
	})
}

func TestKeysExpireWithTheLongestLease(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		long := b.newLimiter(t, limiter.Config{LeaseTTL: 10 * b.lease})
		short := b.newLimiter(t, limiter.Config{})
		streamsKey, keysKey := long.Keys("alice")

		pexpireat := func() (int64, int64) {
			t.Helper()
			return b.rdb.PExpireTime(ctx, streamsKey).Val().Milliseconds(),
				b.rdb.PExpireTime(ctx, keysKey).Val().Milliseconds()
		}

		lease, err := long.Acquire(ctx, "alice", "s1")
		if err != nil {
			t.Fatal(err)
		}
		want := lease.ExpiresAt.UnixMilli()
		if s, k := pexpireat(); s != want || k != want {
			t.Fatalf("keys expire at %d and %d, want %d (the lease's end)", s, k, want)
		}

		// A replica with a shorter LEASE_TTL shortens nothing.
		again, err := short.Acquire(ctx, "alice", "s1")
		if err != nil || !again.ExpiresAt.Equal(lease.ExpiresAt) || again.StreamKey != lease.StreamKey {
			t.Errorf("short re-acquire = %+v, %v; want the long lease unchanged", again, err)
		}
		renewed, err := short.Renew(ctx, "alice", "s1", lease.StreamKey)
		if err != nil || !renewed.ExpiresAt.Equal(lease.ExpiresAt) {
			t.Errorf("short renew = %+v, %v; want the long lease unchanged", renewed, err)
		}
		s2, err := short.Acquire(ctx, "alice", "s2")
		if err != nil {
			t.Fatal(err)
		}
		if s, k := pexpireat(); s != want || k != want {
			t.Errorf("after a shorter lease, keys expire at %d and %d, want %d", s, k, want)
		}

		// Releasing the longest lease brings the TTL down to the one left.
		if _, err := long.Release(ctx, "alice", "s1", ""); err != nil {
			t.Fatal(err)
		}
		want = s2.ExpiresAt.UnixMilli()
		if s, k := pexpireat(); s != want || k != want {
			t.Errorf("after releasing the longest, keys expire at %d and %d, want %d", s, k, want)
		}
	})
}

func TestALowerLimitKeepsLiveStreams(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		three := b.newLimiter(t, limiter.Config{Limit: 3})
		two := b.newLimiter(t, limiter.Config{Limit: 2})
		var keys []string
		for _, id := range []string{"s1", "s2", "s3"} {
			lease, err := three.Acquire(ctx, "alice", id)
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, lease.StreamKey)
		}
		if _, err := two.Renew(ctx, "alice", "s3", keys[2]); err != nil {
			t.Errorf("heartbeat over a lowered limit: %v", err)
		}
		if _, err := two.Acquire(ctx, "alice", "s3"); err != nil {
			t.Errorf("re-acquire over a lowered limit: %v", err)
		}
		if _, err := two.Acquire(ctx, "alice", "s4"); !errors.Is(err, limiter.ErrLimitReached) {
			t.Errorf("new stream over a lowered limit: err = %v", err)
		}
	})
}

func TestAcquireRestoresAMissingKey(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		l := b.newLimiter(t, limiter.Config{})
		if _, err := l.Acquire(ctx, "alice", "s1"); err != nil {
			t.Fatal(err)
		}
		_, keysKey := l.Keys("alice")
		b.rdb.HDel(ctx, keysKey, "s1") // an operator's slip
		lease, err := l.Acquire(ctx, "alice", "s1")
		if err != nil || lease.StreamKey == "" {
			t.Fatalf("re-acquire = %+v, %v", lease, err)
		}
		if got := b.rdb.HGet(ctx, keysKey, "s1").Val(); got != lease.StreamKey {
			t.Errorf("stored key %q, handed out %q", got, lease.StreamKey)
		}
	})
}

func TestScriptErrorsAreNotUnavailability(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		l := b.newLimiter(t, limiter.Config{})
		streamsKey, _ := l.Keys("alice")
		b.rdb.Set(ctx, streamsKey, "not a sorted set", 0)
		_, err := l.Acquire(ctx, "alice", "s1")
		if err == nil || errors.Is(err, limiter.ErrUnavailable) {
			t.Errorf("acquire on a key of the wrong type: err = %v, want a script error", err)
		}
	})
}

func TestScriptCacheFlushed(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		l := b.newLimiter(t, limiter.Config{})
		if _, err := l.Acquire(ctx, "alice", "s1"); err != nil {
			t.Fatal(err)
		}
		if err := b.rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Acquire(ctx, "alice", "s2"); err != nil {
			t.Errorf("acquire after SCRIPT FLUSH: %v", err)
		}
	})
}

func TestInvalidIDsNeverReachRedis(t *testing.T) {
	l, err := limiter.New(unreachable{}, limiter.Config{})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", limiter.MaxIDLength+1)
	tests := []struct {
		user, stream string
		want         error
	}{
		{"", "s1", limiter.ErrInvalidUserID},
		{long, "s1", limiter.ErrInvalidUserID},
		{"{alice}", "s1", limiter.ErrInvalidUserID},
		{"al ice", "s1", limiter.ErrInvalidUserID},
		{"a/b", "s1", limiter.ErrInvalidUserID},
		{"..", "s1", limiter.ErrInvalidUserID},
		{"é", "s1", limiter.ErrInvalidUserID},
		{"a\x00", "s1", limiter.ErrInvalidUserID},
		{"alice", "", limiter.ErrInvalidStreamID},
		{"alice", long, limiter.ErrInvalidStreamID},
		{"alice", "s}1", limiter.ErrInvalidStreamID},
		{"alice", ".", limiter.ErrInvalidStreamID},
		{"alice", "s*", limiter.ErrInvalidStreamID},
	}
	for _, tt := range tests {
		if _, err := l.Acquire(ctx, tt.user, tt.stream); !errors.Is(err, tt.want) {
			t.Errorf("Acquire(%q, %q): err = %v, want %v", tt.user, tt.stream, err, tt.want)
		}
		if _, err := l.Renew(ctx, tt.user, tt.stream, "k"); !errors.Is(err, tt.want) {
			t.Errorf("Renew(%q, %q): err = %v, want %v", tt.user, tt.stream, err, tt.want)
		}
		if _, err := l.Release(ctx, tt.user, tt.stream, ""); !errors.Is(err, tt.want) {
			t.Errorf("Release(%q, %q): err = %v, want %v", tt.user, tt.stream, err, tt.want)
		}
	}
	if _, err := l.Active(ctx, "{x}"); !errors.Is(err, limiter.ErrInvalidUserID) {
		t.Errorf("Active: err = %v", err)
	}
	if _, err := l.ReleaseSoonest(ctx, ""); !errors.Is(err, limiter.ErrInvalidUserID) {
		t.Errorf("ReleaseSoonest: err = %v", err)
	}
}

func TestValidIDs(t *testing.T) {
	eachBackend(t, func(t *testing.T, b backend) {
		l := b.newLimiter(t, limiter.Config{Limit: 10})
		for _, id := range []string{"a", strings.Repeat("z", limiter.MaxIDLength), "user-1_x.y:z@w~", "42", "..."} {
			if _, err := l.Acquire(ctx, id, id); err != nil {
				t.Errorf("valid ID %q: %v", id, err)
			}
		}
	})
}

func TestNewRejectsImpossibleConfig(t *testing.T) {
	for _, cfg := range []limiter.Config{
		{Limit: -1},
		{LeaseTTL: time.Microsecond},
		{LeaseTTL: -time.Second},
		{Timeout: -time.Second},
		{KeyPrefix: "tv{1}"},
		{KeyPrefix: "{"},
	} {
		if _, err := limiter.New(unreachable{}, cfg); err == nil {
			t.Errorf("New(%+v) accepted it", cfg)
		}
	}
	if _, err := limiter.New(nil, limiter.Config{}); err == nil {
		t.Error("New(nil) accepted it")
	}
}

func ids(streams []limiter.Stream) string {
	var s []string
	for _, st := range streams {
		s = append(s, st.ID)
	}
	return strings.Join(s, ",")
}

// unreachable is a Redis that fails the test (by panicking) if anything
// reaches it.
type unreachable struct{ limiter.Redis }
