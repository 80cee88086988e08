package limiter_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/internal/redistest"
	"github.com/limiterd/limiterd/limiter"
)

// waitingLimiter returns a Limiter that waits for one replica, on a master
// with or without a replica attached.
func waitingLimiter(t *testing.T, withReplica bool) (*limiter.Limiter, *redis.Client, *recorder) {
	t.Helper()
	master := redistest.Start(t, "--repl-diskless-sync-delay", "0")
	if withReplica {
		host, port, _ := strings.Cut(master.Addr, ":")
		replica := redistest.Start(t, "--replicaof", host, port)
		waitForReplica(t, master.Addr, replica.Addr)
	}
	rdb := redis.NewClient(&redis.Options{Addr: master.Addr, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	rec := newRecorder()
	// Redis checks WAIT timeouts at its hz (10 a second by default), so a
	// WAIT lasts up to 100ms over its own timeout: give it room.
	l, err := limiter.New(rdb, limiter.Config{WaitReplicas: 1, Timeout: waitTestTimeout, Observer: rec})
	if err != nil {
		t.Fatal(err)
	}
	return l, rdb, rec
}

// waitTestTimeout is generous: on a loaded machine a replica's
// acknowledgement can be slow, and this is no test of speed.
const waitTestTimeout = 3 * time.Second

// waitForReplica returns once the master counts the replica as online and
// the replica sees its link up.
func waitForReplica(t *testing.T, masterAddr, replicaAddr string) {
	t.Helper()
	for _, check := range []struct{ addr, want string }{
		{masterAddr, ",state=online,"},
		{replicaAddr, "master_link_status:up"},
	} {
		rdb := redis.NewClient(&redis.Options{Addr: check.addr})
		deadline := time.Now().Add(10 * time.Second)
		for {
			info, _ := rdb.Info(context.Background(), "replication").Result()
			if strings.Contains(info, check.want) {
				break
			}
			if time.Now().After(deadline) {
				rdb.Close()
				t.Fatalf("replication not up in 10s: %s lacks %q", check.addr, check.want)
			}
			time.Sleep(20 * time.Millisecond)
		}
		rdb.Close()
	}
}

func commandCalls(t *testing.T, rdb *redis.Client) map[string]string {
	t.Helper()
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]string{}
	for _, line := range strings.Split(info, "\r\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":calls=")
		if ok && strings.HasPrefix(line, "cmdstat_") {
			calls[name], _, _ = strings.Cut(rest, ",")
		}
	}
	return calls
}

func TestWaitReplicasConfirmedInOneRoundTrip(t *testing.T) {
	l, rdb, _ := waitingLimiter(t, true)
	if _, err := l.Acquire(ctx, "alice", "warm-up"); err != nil { // loads the script
		t.Fatal(err)
	}
	if err := rdb.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	lease, err := l.Acquire(ctx, "alice", "tv")
	if err != nil || lease.Active != 2 {
		t.Fatalf("Acquire = %+v, %v; want a lease, the user's second", lease, err)
	}
	calls := commandCalls(t, rdb)
	if calls["evalsha"] != "1" || calls["wait"] != "1" || calls["eval"] != "" {
		t.Errorf("commands %v, want one evalsha and one wait", calls)
	}

	// After SCRIPT FLUSH the pipeline's EVALSHA fails: EVAL follows.
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	again, err := l.Acquire(ctx, "alice", "tv")
	if err != nil || again.StreamKey != lease.StreamKey {
		t.Errorf("Acquire after SCRIPT FLUSH = %+v, %v; want the same lease", again, err)
	}
}

// The first Acquire on a fresh Redis also meets NOSCRIPT, so it waits twice:
// both fit in the timeout.
func TestWaitReplicasUnconfirmedIsUnavailable(t *testing.T) {
	l, rdb, rec := waitingLimiter(t, false)
	start := time.Now()
	_, err := l.Acquire(ctx, "alice", "tv")
	took := time.Since(start)
	if !errors.Is(err, limiter.ErrUnavailable) {
		t.Fatalf("Acquire with no replica to confirm it: %v, want ErrUnavailable", err)
	}
	if took > waitTestTimeout+500*time.Millisecond {
		t.Errorf("took %v: WAIT must give up within the timeout", took)
	}
	if rec.errors[limiter.KindReplication] != 1 {
		t.Errorf("redis errors %v, want one of kind replication", rec.errors)
	}
	// The write stands on the master: the player's retry gets that lease,
	// never a second slot.
	if n, _ := rdb.ZCard(ctx, "limiter:{alice}:streams").Result(); n != 1 {
		t.Errorf("master holds %d leases for alice, want 1", n)
	}
	l.Acquire(ctx, "alice", "tv")
	if n, _ := rdb.ZCard(ctx, "limiter:{alice}:streams").Result(); n != 1 {
		t.Errorf("after the retry the master holds %d leases for alice, want 1", n)
	}
}

// scripterOnly is a client that cannot pipeline.
type scripterOnly struct{ limiter.Redis }

func TestWaitReplicasNeedsAPipeline(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: redistest.ClosedAddr(t)})
	t.Cleanup(func() { rdb.Close() })
	if _, err := limiter.New(scripterOnly{rdb}, limiter.Config{WaitReplicas: 1}); err == nil {
		t.Error("New accepted WaitReplicas with a client that cannot pipeline")
	}
	if _, err := limiter.New(rdb, limiter.Config{WaitReplicas: -1}); err == nil {
		t.Error("New accepted a negative WaitReplicas")
	}
}
