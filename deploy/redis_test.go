package deploy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer finds redis-server, or ends the test: skipped on a developer's
// machine, failed when CI is set (as the service's internal/redistest does).
func redisServer(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err == nil {
		return bin
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("redis-server is required in CI and was not found: %v", err)
	}
	t.Skipf("redis-server not installed (apt-get install -y redis-server; CI installs it): %v", err)
	return ""
}

// redisProc is a redis-server started by a test on a free loopback port.
type redisProc struct {
	Addr   string
	args   []string
	output *lockedBuffer
	cmd    *exec.Cmd
	done   chan struct{}
}

// startRedis runs redis-server with args (a config file first, then
// overrides), on a free loopback port and in dir, and stops it at the end of
// the test. password, if set, is used to wait until it answers.
func startRedis(t *testing.T, dir, password string, args ...string) *redisProc {
	t.Helper()
	bin := redisServer(t)
	var lastErr error
	for range 5 { // another process may take the free port first
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		r := &redisProc{
			Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
			// Arguments after the file override it: loopback only, a port of
			// the test's own, the test's directory, logs to the test.
			args: append(slices.Clone(args), "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
				"--dir", dir, "--daemonize", "no", "--logfile", ""),
		}
		if lastErr = r.start(bin, password); lastErr == nil {
			t.Cleanup(r.kill)
			return r
		}
	}
	t.Fatalf("redis-server %q did not start: %v", args, lastErr)
	return nil
}

func (r *redisProc) start(bin, password string) error {
	r.output = &lockedBuffer{}
	r.cmd = exec.Command(bin, r.args...)
	r.cmd.Stdout, r.cmd.Stderr = r.output, r.output
	if err := r.cmd.Start(); err != nil {
		return err
	}
	r.done = make(chan struct{})
	go func() { r.cmd.Wait(); close(r.done) }()
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, Password: password, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-r.done:
			return fmt.Errorf("redis-server exited:\n%s", r.output)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.kill()
	return fmt.Errorf("redis-server on %s did not answer within 10s:\n%s", r.Addr, r.output)
}

// kill stops the server as a crash would (SIGKILL) and waits for it.
func (r *redisProc) kill() {
	select {
	case <-r.done:
		return
	default:
	}
	r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
}

func (r *redisProc) client(t *testing.T, password string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, Password: password, MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// The file loads in a real redis-server (an unknown or misspelt directive
// stops it at startup) and the values limiterd depends on are in force.
func TestRedisConfLoadsWithTheLimiterSettings(t *testing.T) {
	r := startRedis(t, t.TempDir(), "", "redis.conf")
	rdb := r.client(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct{ name, want string }{
		{"maxmemory-policy", "noeviction"},
		{"appendonly", "yes"},
		{"appendfsync", "everysec"},
		{"aof-use-rdb-preamble", "yes"},
		{"no-appendfsync-on-rewrite", "no"},
		{"save", ""},
		{"protected-mode", "yes"},
		{"maxmemory", "1073741824"},
		{"enable-debug-command", "no"},
		{"lazyfree-lazy-expire", "yes"},
	}
	for _, tc := range tests {
		got, err := rdb.ConfigGet(ctx, tc.name).Result()
		if err != nil {
			t.Fatalf("CONFIG GET %s: %v", tc.name, err)
		}
		if v, ok := got[tc.name]; !ok || v != tc.want {
			t.Errorf("CONFIG GET %s = %q, want %q", tc.name, got, tc.want)
		}
	}
	info, err := rdb.Info(ctx, "persistence").Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info, "aof_enabled:1") {
		t.Errorf("INFO persistence does not say aof_enabled:1:\n%s", info)
	}
}

// A directive Redis does not know must stop the server: that is what makes
// the test above a test of the file.
func TestRedisRefusesABrokenConf(t *testing.T) {
	bin := redisServer(t)
	conf, err := os.ReadFile("redis.conf")
	if err != nil {
		t.Fatal(err)
	}
	const good, bad = "maxmemory-policy noeviction", "maxmemory-policy no-eviction"
	if !strings.Contains(string(conf), good) {
		t.Fatalf("redis.conf no longer contains %q: update the test", good)
	}
	broken := filepath.Join(t.TempDir(), "redis.conf")
	if err := os.WriteFile(broken, []byte(strings.Replace(string(conf), good, bad, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, broken, "--port", "0", "--dir", t.TempDir()).CombinedOutput()
	// Redis names the line it cannot read; with --port 0 a file it could read
	// would stop later, for want of a listener, without that line.
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(string(out), bad) {
		t.Fatalf("redis-server on a misspelt policy: err %v, output:\n%s", err, out)
	}
}

// Full memory must refuse writes, never free leases: with an evicting policy
// a user's lease set could vanish and the user be admitted past the limit.
func TestRedisConfRefusesWritesInsteadOfEvicting(t *testing.T) {
	// 4mb instead of the file's 1gb, so that the test fills it quickly.
	r := startRedis(t, t.TempDir(), "", "redis.conf", "--maxmemory", "4mb")
	rdb := r.client(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Keys like limiterd's: each with an expiry (volatile-* policies would
	// pick exactly these) and a sorted set of leases.
	value := strings.Repeat("x", 1024)
	var oom error
	for batch := 0; batch < 100 && oom == nil; batch++ { // 100 x 100 KiB: far past 4mb
		cmds, _ := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := range 100 {
				key := fmt.Sprintf("limiter:{user-%d-%d}:streams", batch, i)
				p.ZAdd(ctx, key, redis.Z{Score: 1, Member: value})
				p.PExpire(ctx, key, time.Hour)
			}
			return nil
		})
		for _, c := range cmds {
			if err := c.Err(); err != nil {
				oom = err
				break
			}
		}
	}
	if oom == nil || !strings.Contains(oom.Error(), "OOM") {
		t.Fatalf("writing past maxmemory: err %v, want an OOM error", oom)
	}
	// The first lease set is still there, and nothing was evicted.
	if n, err := rdb.Exists(ctx, "limiter:{user-0-0}:streams").Result(); err != nil || n != 1 {
		t.Errorf("EXISTS of the first key = %d, %v: it was evicted", n, err)
	}
	stats, err := rdb.Info(ctx, "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stats, "evicted_keys:0\r\n") {
		t.Errorf("INFO stats reports evictions:\n%s", stats)
	}
	// limiterd writes through Lua scripts: they are refused the same way,
	// which limiterd answers with 503 redis_unavailable.
	err = rdb.Eval(ctx, "return redis.call('ZADD', KEYS[1], 1, 'stream')", []string{"limiter:{late}:streams"}).Err()
	if err == nil || !strings.Contains(err.Error(), "OOM") {
		t.Errorf("a writing script past maxmemory: %v, want an OOM error", err)
	}
}

// With the AOF on, leases survive a crash of the process (SIGKILL). The
// everysec window only matters if the machine itself goes down: written data
// is already in the kernel's page cache when a client has its reply.
func TestRedisConfKeepsLeasesAcrossACrash(t *testing.T) {
	dir := t.TempDir()
	r := startRedis(t, dir, "", "redis.conf")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb := r.client(t, "")
	if err := rdb.ZAdd(ctx, "limiter:{alice}:streams", redis.Z{Score: 1796399406582, Member: "movie-1"}).Err(); err != nil {
		t.Fatal(err)
	}
	r.kill()

	r2 := startRedis(t, dir, "", "redis.conf")
	got, err := r2.client(t, "").ZRangeWithScores(ctx, "limiter:{alice}:streams", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Member != "movie-1" || got[0].Score != 1796399406582 {
		t.Fatalf("after SIGKILL and restart: %v, want the lease movie-1", got)
	}
}

// The compose file's redis command, run for real: redis-server on the mounted
// redis.conf with the compose password, which the replicas' REDIS_URL carries.
func TestComposeRedisCommandRuns(t *testing.T) {
	p, err := loadCompose(t, readCompose(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd, password := redisCommand(p.Services["redis"])
	args := slices.Clone(cmd[1:])
	// The container path of the config file is the mounted host file.
	for _, v := range p.Services["redis"].Volumes {
		if i := slices.Index(args, v.Target); i >= 0 {
			args[i] = v.Source
		}
	}
	if _, err := os.Stat(args[0]); err != nil {
		t.Fatalf("the redis command's config file %s is not a mounted host file: %v", cmd[1], err)
	}
	r := startRedis(t, t.TempDir(), password, args...)

	replica := limiterdServices(p)[0]
	u, err := url.Parse(*replica.Environment["REDIS_URL"])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	urlPassword, _ := u.User.Password()
	if err := r.client(t, urlPassword).Ping(ctx).Err(); err != nil {
		t.Errorf("PING with %s's REDIS_URL password: %v", replica.Name, err)
	}
	// Without the password nothing but AUTH is allowed.
	if err := r.client(t, "").Set(ctx, "k", "v", 0).Err(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Errorf("SET without a password: %v, want NOAUTH", err)
	}
}
