package limiter_test

// Tests of the limiter on the Redis topologies redisclient supports. Those
// that need a Redis Cluster run when REDIS_TEST_MODE=cluster points them at
// one (make test-cluster); the others run everywhere.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/internal/redisclient"
	"github.com/limiterd/limiterd/internal/redistest"
	"github.com/limiterd/limiterd/limiter"
)

// TestUsersSpreadOverAllMasters acquires a stream for each of many users on
// a Redis Cluster and looks where their keys went: every master holds some,
// and each user's two keys sit on the same master.
func TestUsersSpreadOverAllMasters(t *testing.T) {
	cluster := clusterClient(t)
	const users = 1000
	prefix := uniquePrefix()
	l, err := limiter.New(cluster, limiter.Config{KeyPrefix: prefix, LeaseTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		errs = make(chan error, users)
		next = make(chan int)
	)
	for range 16 { // 16 players at a time: quick, yet no storm
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if _, err := l.Acquire(ctx, "user-"+strconv.Itoa(i), "tv"); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range users {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("acquire: %v", err)
	}

	var (
		mu       sync.Mutex
		masterOf = map[string]string{} // key -> the master holding it
		perNode  = map[string]int{}
	)
	err = cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		keys, err := scanAll(ctx, node, prefix+":*")
		mu.Lock()
		defer mu.Unlock()
		for _, k := range keys {
			masterOf[k] = node.Options().Addr
		}
		perNode[node.Options().Addr] = len(keys)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d users: keys per master %v", users, perNode)
	if len(perNode) < 3 {
		t.Errorf("the cluster has %d masters, want 3 or more", len(perNode))
	}
	for addr, n := range perNode {
		if n == 0 {
			t.Errorf("master %s holds none of %d users' keys", addr, users)
		}
	}
	if len(masterOf) != 2*users {
		t.Errorf("found %d keys, want %d (two per user)", len(masterOf), 2*users)
	}
	for i := range users {
		streams, keys := l.Keys("user-" + strconv.Itoa(i))
		if masterOf[streams] == "" || masterOf[streams] != masterOf[keys] {
			t.Fatalf("user-%d: %s is on %q, %s on %q: want both on one master",
				i, streams, masterOf[streams], keys, masterOf[keys])
		}
	}
}

// TestUserKeysShareOneSlot proves for many user IDs what makes the scripts
// safe on a Cluster: the two keys a script is given always hash to one slot,
// so Redis never answers CROSSSLOT. The slot function is checked against a
// real Redis first.
func TestUserKeysShareOneSlot(t *testing.T) {
	redisSlot := keyslotOfRealRedis(t)
	rng := mathrand.New(mathrand.NewPCG(1, 2))
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:@~"
	ids := []string{"a", "alice", "carol@example.com", "...", "~", "user:42", "a.b-c_d@e~f:g",
		strings.Repeat("z", limiter.MaxIDLength), strings.Repeat(":", limiter.MaxIDLength)}
	for range 20000 {
		b := make([]byte, 1+rng.IntN(limiter.MaxIDLength))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		ids = append(ids, string(b))
	}

	// The CRC16 below must be Redis's: compare it on keys of every shape.
	for _, id := range ids[:300] {
		for _, key := range []string{"limiter:{" + id + "}:streams", id, "{}" + id, "x{" + id + "}y{z}"} {
			if got, want := slot(key), redisSlot(key); got != want {
				t.Fatalf("slot(%q) = %d, Redis says %d", key, got, want)
			}
		}
	}

	for _, prefix := range []string{limiter.DefaultKeyPrefix, "svc:prod", "a.b-c_d", "x"} {
		l, err := limiter.New(unreachable{}, limiter.Config{KeyPrefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			streams, keys := l.Keys(id)
			if slot(streams) != slot(keys) {
				t.Fatalf("prefix %q, user %q: %s in slot %d, %s in slot %d",
					prefix, id, streams, slot(streams), keys, slot(keys))
			}
		}
	}

	// Without the hash tag the same check fails at once: it can catch a key
	// schema that loses the braces.
	apart := 0
	for _, id := range ids[:100] {
		if slot("limiter:"+id+":streams") != slot("limiter:"+id+":keys") {
			apart++
		}
	}
	if apart == 0 {
		t.Error("keys without a hash tag all shared a slot: the check proves nothing")
	}
}

// TestClusterRedirectsAreUnavailable answers every script with a Cluster
// error (a MOVED storm, CROSSSLOT, ...) and wants ErrUnavailable from each
// operation within the timeout, through a plain client and a Cluster client
// alike: never a lease, never a hang.
func TestClusterRedirectsAreUnavailable(t *testing.T) {
	closed := redistest.ClosedAddr(t)
	for _, tt := range []struct{ name, reply string }{
		{"MOVED to a closed port", "-MOVED 1234 " + closed},
		{"MOVED back to itself", "-MOVED 1234 SELF"}, // a loop
		{"ASK to a closed port", "-ASK 1234 " + closed},
		{"CROSSSLOT", "-CROSSSLOT Keys in request don't hash to the same slot"},
		{"CLUSTERDOWN", "-CLUSTERDOWN The cluster is down"},
		{"TRYAGAIN", "-TRYAGAIN Multiple keys request during rehashing of slot"},
	} {
		for _, mode := range []string{redisclient.ModeSingle, redisclient.ModeCluster} {
			t.Run(mode+" client/"+tt.name, func(t *testing.T) {
				t.Parallel()
				addr := redistest.FakeClusterNode(t, tt.reply)
				rdb := redistest.NewClient(t, redisclient.Config{Mode: mode, URL: "redis://" + addr, Timeout: testTimeout})
				l, err := limiter.New(rdb, limiter.Config{Timeout: testTimeout})
				if err != nil {
					t.Fatal(err)
				}
				assertScriptsUnavailable(t, l)
			})
		}
	}
}

// assertScriptsUnavailable is assertUnavailable for the operations that run
// scripts (a Fake answers PING).
func assertScriptsUnavailable(t *testing.T, l *limiter.Limiter) {
	t.Helper()
	checkUnavailable(t, l, testTimeout+time.Second, false)
}

// TestMinimalACL runs the limiter as a Redis user that has exactly the
// rights docs/redis-acl.md grants: every operation works and nothing is
// refused along the way, while commands and keys outside them are refused.
// It runs on a server of its own, and on the REDIS_TEST_* topology if set.
func TestMinimalACL(t *testing.T) {
	rule := aclRule(t)
	t.Run("own server", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Start(t)
		admin := redistest.NewClient(t, redisclient.Config{URL: "redis://" + srv.Addr})
		checkACL(t, rule, admin, redisclient.Config{URL: "redis://" + srv.Addr})
	})
	if redistest.Shared() {
		t.Run("REDIS_TEST_"+redistest.Mode(), func(t *testing.T) {
			t.Parallel()
			checkACL(t, rule, redistest.Client(t), redistest.Config(t))
		})
	}
}

// TestMinimalACLHasNoSpareRule drops each command the ACL grants, in turn,
// and wants some operation to fail or some refusal in ACL LOG: every rule is
// needed, and the exercise of TestMinimalACL reaches every command the
// service can send. The rules for a Cluster are checked only on one.
func TestMinimalACLHasNoSpareRule(t *testing.T) {
	rule := aclRule(t)
	t.Run("own server", func(t *testing.T) {
		t.Parallel()
		srv := redistest.Start(t)
		admin := redistest.NewClient(t, redisclient.Config{URL: "redis://" + srv.Addr})
		checkNoSpareRule(t, rule, admin, redisclient.Config{URL: "redis://" + srv.Addr})
	})
	if redistest.Shared() {
		t.Run("REDIS_TEST_"+redistest.Mode(), func(t *testing.T) {
			t.Parallel()
			checkNoSpareRule(t, rule, redistest.Client(t), redistest.Config(t))
		})
	}
}

// clusterOnlyRules are the rules only a Cluster client needs.
var clusterOnlyRules = map[string]bool{"+cluster|slots": true, "+command": true}

func checkNoSpareRule(t *testing.T, rule []string, admin redis.UniversalClient, cfg redisclient.Config) {
	_, cluster := admin.(*redis.ClusterClient)
	for i, field := range rule {
		if !strings.HasPrefix(field, "+") || (clusterOnlyRules[field] && !cluster) {
			continue
		}
		t.Run(field, func(t *testing.T) {
			less := append(append([]string{}, rule[:i]...), rule[i+1:]...)
			user, password := createUser(t, admin, less)
			cfg.Username, cfg.Password = user, password
			svc := redistest.NewClient(t, cfg)
			err := exercise(t, svc, admin)
			if err == nil {
				err = aclRefusals(t, admin, user)
			}
			if err == nil {
				t.Errorf("every operation worked without %s, and nothing was refused: the rule is spare, or the exercise misses a command", field)
			} else {
				t.Logf("without %s: %v", field, err)
			}
		})
	}
}

// aclRule reads the ACL SETUSER line of docs/redis-acl.md, as its fields.
func aclRule(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "docs", "redis-acl.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if strings.HasPrefix(s.Text(), "ACL SETUSER limiterd ") {
			return strings.Fields(s.Text())
		}
	}
	t.Fatal("docs/redis-acl.md has no line starting with \"ACL SETUSER limiterd \"")
	return nil
}

// createUser runs rule with a user name and password of the test's own on
// every data node admin reaches, clears ACL LOG there, and deletes the user
// at the end of the test.
func createUser(t *testing.T, admin redis.UniversalClient, rule []string) (user, password string) {
	t.Helper()
	user, password = "limiterd-"+randomHex(4), randomHex(16)
	args := make([]any, len(rule))
	for i, f := range rule {
		switch {
		case i == 2:
			args[i] = user
		case f == ">CHANGE_ME":
			args[i] = ">" + password
		default:
			args[i] = f
		}
	}
	onEachNode(t, admin, func(ctx context.Context, node *redis.Client) error {
		if err := node.Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("%v on %s: %w", rule, node.Options().Addr, err)
		}
		return node.ACLLogReset(ctx).Err()
	})
	t.Cleanup(func() {
		onEachNode(t, admin, func(ctx context.Context, node *redis.Client) error {
			return node.ACLDelUser(ctx, user).Err()
		})
	})
	return user, password
}

// exercise runs every operation of the limiter through svc, under the
// default key prefix (the one the ACL grants) and a user ID of its own, so
// that each command the scripts can call runs at least once. It returns the
// first failure.
func exercise(t *testing.T, svc, admin redis.UniversalClient) error {
	t.Helper()
	l, err := limiter.New(svc, limiter.Config{Limit: 2, LeaseTTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// A lease that ends at once beside a live one (which keeps the keys from
	// expiring), so that the next call prunes it: ZREMRANGEBYSCORE, HDEL.
	brief, err := limiter.New(svc, limiter.Config{Limit: 2, LeaseTTL: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	alice := "acl-" + randomHex(6)
	t.Cleanup(func() {
		streams, keys := l.Keys(alice)
		admin.Del(context.Background(), streams, keys)
	})

	s1, err := l.Acquire(ctx, alice, "s1")
	if err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	if _, err := brief.Acquire(ctx, alice, "gone"); err != nil {
		return fmt.Errorf("acquire of a brief lease: %w", err)
	}
	time.Sleep(5 * time.Millisecond)
	if lease, err := l.Acquire(ctx, alice, "s2"); err != nil || lease.Active != 2 {
		return fmt.Errorf("acquire after a lease ended = %+v, %v; want 2 active", lease, err)
	}
	if _, err := l.Acquire(ctx, alice, "s3"); !errors.Is(err, limiter.ErrLimitReached) {
		return fmt.Errorf("acquire over the limit: err = %v, want ErrLimitReached", err)
	}
	if _, err := l.Renew(ctx, alice, "s1", s1.StreamKey); err != nil {
		return fmt.Errorf("renew: %w", err)
	}
	if streams, err := l.Active(ctx, alice); err != nil || len(streams) != 2 {
		return fmt.Errorf("active = %s, %v; want s1 and s2", ids(streams), err)
	}
	if r, err := l.Release(ctx, alice, "s1", s1.StreamKey); err != nil || !r.Released {
		return fmt.Errorf("release = %+v, %v", r, err)
	}
	// An empty script cache makes Script.Run fall back from EVALSHA to EVAL.
	onEachNode(t, admin, func(ctx context.Context, node *redis.Client) error {
		info, err := node.Info(ctx, "replication").Result()
		if err != nil || !strings.Contains(info, "role:master") {
			return err // a replica takes SCRIPT FLUSH from its master
		}
		return node.ScriptFlush(ctx).Err()
	})
	if r, err := l.ReleaseSoonest(ctx, alice); err != nil || r.StreamID != "s2" || r.Active != 0 {
		return fmt.Errorf("release soonest after SCRIPT FLUSH = %+v, %v; want s2, none left", r, err)
	}
	if err := l.Ping(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// checkACL creates the user of rule on every data node admin reaches, runs
// the limiter as that user through a client of cfg, and checks what it may
// not do.
func checkACL(t *testing.T, rule []string, admin redis.UniversalClient, cfg redisclient.Config) {
	t.Helper()
	user, password := createUser(t, admin, rule)
	cfg.Username, cfg.Password = user, password
	svc := redistest.NewClient(t, cfg)
	if err := exercise(t, svc, admin); err != nil {
		t.Errorf("as %s: %v", user, err)
	}
	if err := aclRefusals(t, admin, user); err != nil {
		t.Errorf("%v: the rule lacks it", err)
	}

	// Outside the rule: other commands, and the same commands on other keys.
	alice := "acl-" + randomHex(6)
	l, err := limiter.New(svc, limiter.Config{})
	if err != nil {
		t.Fatal(err)
	}
	streams, _ := l.Keys(alice)
	refused := map[string]*redis.Cmd{
		"GET of its own key":     svc.Do(ctx, "GET", streams),
		"SET of another key":     svc.Do(ctx, "SET", "other:"+alice, "x"),
		"FLUSHALL":               svc.Do(ctx, "FLUSHALL"),
		"KEYS":                   svc.Do(ctx, "KEYS", "*"),
		"CONFIG GET":             svc.Do(ctx, "CONFIG", "GET", "maxmemory"),
		"SCRIPT FLUSH":           svc.Do(ctx, "SCRIPT", "FLUSH"),
		"a script on other keys": svc.Do(ctx, "EVAL", "return redis.call('TIME')", 1, "other:{"+alice+"}"),
	}
	for what, cmd := range refused {
		if err := cmd.Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("%s as %s: err = %v, want NOPERM", what, user, err)
		}
	}
	other, err := limiter.New(svc, limiter.Config{KeyPrefix: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Acquire(ctx, alice, "s1"); !errors.Is(err, limiter.ErrUnavailable) {
		t.Errorf("acquire under another prefix: err = %v, want ErrUnavailable (NOPERM)", err)
	}
}

// aclRefusals returns the first refusal of user in ACL LOG on any data node:
// go-redis tolerates some refused commands (CLUSTER SLOTS, COMMAND), which
// the operations then never show.
func aclRefusals(t *testing.T, admin redis.UniversalClient, user string) error {
	t.Helper()
	var (
		mu    sync.Mutex
		found error
	)
	onEachNode(t, admin, func(ctx context.Context, node *redis.Client) error {
		entries, err := node.ACLLog(ctx, 100).Result()
		for _, e := range entries {
			if e.Username == user {
				mu.Lock()
				if found == nil {
					found = fmt.Errorf("%s refused %s its %s %q (reason %s)",
						node.Options().Addr, user, e.Context, e.Object, e.Reason)
				}
				mu.Unlock()
			}
		}
		return err
	})
	return found
}

// onEachNode runs fn on every data node behind rdb: each master and replica
// of a Cluster, or the one node (the master, under Sentinel) of a client.
func onEachNode(t *testing.T, rdb redis.UniversalClient, fn func(context.Context, *redis.Client) error) {
	t.Helper()
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachShard(ctx, fn)
	case *redis.Client:
		err = fn(ctx, c)
	default:
		t.Fatalf("no way to reach the nodes of a %T", rdb)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// clusterClient returns the Cluster client of REDIS_TEST_*, or skips the
// test when the tests do not run against a Cluster.
func clusterClient(t *testing.T) *redis.ClusterClient {
	t.Helper()
	if redistest.Mode() != redisclient.ModeCluster {
		t.Skipf("needs a Redis Cluster: %s=cluster and %s (make test-cluster)", redistest.EnvMode, redistest.EnvURL)
	}
	rdb := redistest.Client(t)
	cluster, ok := rdb.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("%s=cluster gave a %T", redistest.EnvMode, rdb)
	}
	return cluster
}

// keyslotOfRealRedis returns CLUSTER KEYSLOT of a real Redis: the Cluster of
// REDIS_TEST_* when there is one, else a cluster-enabled server of the
// test's own, which answers it without any slot assigned.
func keyslotOfRealRedis(t *testing.T) func(key string) int {
	t.Helper()
	var rdb redis.UniversalClient
	if redistest.Mode() == redisclient.ModeCluster {
		rdb = redistest.Client(t)
	} else {
		srv := redistest.Start(t, "--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(t.TempDir(), "nodes.conf"))
		rdb = redistest.NewClient(t, redisclient.Config{URL: "redis://" + srv.Addr})
	}
	return func(key string) int {
		n, err := rdb.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %q: %v", key, err)
		}
		return int(n)
	}
}

// slot is Redis Cluster's key slot: CRC16 (XMODEM) of the hash tag, the
// text between the first "{" and the next "}" when that is not empty, or
// else of the whole key, modulo 16384.
func slot(key string) int {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			key = key[open+1 : open+1+end]
		}
	}
	return int(crc16(key) % 16384)
}

// crc16 is CRC-16/XMODEM: polynomial 0x1021, initial value 0.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

func TestCRC16(t *testing.T) {
	// The check value of CRC-16/XMODEM, quoted by the Redis Cluster spec.
	if got := crc16("123456789"); got != 0x31c3 {
		t.Errorf("crc16(123456789) = %#x, want 0x31c3", got)
	}
}

func scanAll(ctx context.Context, rdb *redis.Client, match string) ([]string, error) {
	var all []string
	iter := rdb.Scan(ctx, 0, match, 1000).Iterator()
	for iter.Next(ctx) {
		all = append(all, iter.Val())
	}
	return all, iter.Err()
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// TestSentinelFailover asks the Sentinels of REDIS_TEST_* to fail the master
// over to its replica, and wants the limiter to follow: after some 503s at
// most, the lease acquired before the failover is found on the new master,
// with the same key. Other tests on the deployment would fail during the
// failover, so it runs only when REDIS_TEST_SENTINEL_FAILOVER=1, alone (make
// test-sentinel runs it after the suites).
func TestSentinelFailover(t *testing.T) {
	if redistest.Mode() != redisclient.ModeSentinel || os.Getenv("REDIS_TEST_SENTINEL_FAILOVER") != "1" {
		t.Skip("needs REDIS_TEST_MODE=sentinel and REDIS_TEST_SENTINEL_FAILOVER=1, alone on the deployment (make test-sentinel)")
	}
	cfg := redistest.Config(t)
	cfg.Timeout = 500 * time.Millisecond
	rdb := redistest.NewClient(t, cfg)
	l, err := limiter.New(rdb, limiter.Config{Timeout: cfg.Timeout})
	if err != nil {
		t.Fatal(err)
	}
	user := "failover-" + randomHex(6)
	before, err := l.Acquire(ctx, user, "tv")
	if err != nil {
		t.Fatal(err)
	}
	// The lease must be on the replica before it is promoted; after an
	// earlier failover, the replica may still be syncing.
	for deadline := time.Now().Add(30 * time.Second); ; {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		n, err := rdb.Do(wctx, "WAIT", 1, 200).Int()
		cancel()
		if err == nil && n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("WAIT 1: %d replicas, %v", n, err)
		}
	}

	fo, err := redis.ParseFailoverURL(cfg.URL)
	if err != nil {
		t.Fatal(err)
	}
	sentinel := redis.NewSentinelClient(&redis.Options{
		Addr: fo.SentinelAddrs[0], Username: fo.SentinelUsername, Password: fo.SentinelPassword,
	})
	defer sentinel.Close()
	old, err := sentinel.GetMasterAddrByName(ctx, fo.MasterName).Result()
	if err != nil {
		t.Fatal(err)
	}
	// Right after another failover the Sentinels may still be reconfiguring
	// (INPROG) or not yet trust the replica (NOGOODSLAVE): retry a while.
	start := time.Now()
	for {
		err := sentinel.Failover(ctx, fo.MasterName).Err()
		if err == nil {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("SENTINEL FAILOVER: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var now []string
	for { // the Sentinels name the replica
		now, err = sentinel.GetMasterAddrByName(ctx, fo.MasterName).Result()
		if err == nil && strings.Join(now, ":") != strings.Join(old, ":") {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("30s after SENTINEL FAILOVER the master is still %v (%v)", old, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var (
		after    limiter.Lease
		failures int
	)
	for { // and the limiter follows, to the new master
		after, err = l.Acquire(ctx, user, "tv")
		if err == nil {
			info, _ := rdb.Info(ctx, "server").Result()
			if strings.Contains(info, "\ntcp_port:"+now[1]+"\r") {
				break
			}
		} else if !errors.Is(err, limiter.ErrUnavailable) {
			t.Fatalf("during the failover: %v, want ErrUnavailable", err)
		} else {
			failures++
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("30s after SENTINEL FAILOVER the limiter does not use the new master %v: last error %v", now, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("master %v -> %v; the limiter used the new one %v after SENTINEL FAILOVER, after %d calls failed with ErrUnavailable",
		old, now, time.Since(start).Round(100*time.Millisecond), failures)
	if after.StreamKey != before.StreamKey || !after.Renewed || after.Active != 1 {
		t.Errorf("after the failover: %+v; want the lease of before (%s), renewed", after, before.StreamKey)
	}
}
