package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/limiterd/limiterd/limiter"
	"github.com/limiterd/limiterd/scripts"
)

// result is one row of the table as measured once.
type result struct {
	id      string // "a", "b", "c-max", "c-50", "d"
	load    string // what the row sends, for people
	ops     int64  // operations completed
	wall    time.Duration
	rate    float64 // ops per second
	offered float64 // open-loop target rate; 0 for closed loop
	lat     latencySummary
	errors  int64   // transport errors, 5xx and unexpected statuses
	mix     string  // what the operations decided
	calls   float64 // Redis script calls (EVALSHA + EVAL) per operation; <0 unknown
	cpu     cpuUse
}

// latencySummary is a row's latency: three percentiles for the table and a
// curve for the picture.
type latencySummary struct {
	p50, p99, p999 time.Duration
	curve          []pctPoint
}

type pctPoint struct {
	pct float64 // 0 to 100
	lat time.Duration
}

// curvePercentiles are where the picture samples each latency distribution.
var curvePercentiles = []float64{50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99}

// summarize reads vegeta's latency estimator (a t-digest over every sample).
func summarize(l *vegeta.LatencyMetrics) latencySummary {
	s := latencySummary{p50: l.Quantile(0.50), p99: l.Quantile(0.99), p999: l.Quantile(0.999)}
	for _, p := range curvePercentiles {
		s.curve = append(s.curve, pctPoint{p, l.Quantile(p / 100)})
	}
	return s
}

// runResult is everything one run measured.
type runResult struct {
	rows   []result
	memory memoryResult
	check  checkResult
	redis  string // redis_version
	// load is /proc/loadavg's one-minute figure at the start and the end of
	// the run: on a shared machine, what else was running.
	loadStart, loadEnd string
}

// bench is the environment of one run: its redis-server and a client of it.
type bench struct {
	cfg        config
	log        io.Writer
	redis      *process
	addr       string
	rdb        *redis.Client
	acquireSHA string
}

// Key spaces: every row uses user IDs of 12 characters (as redis-benchmark's
// 12-digit __rand_int__) whose first two name the row, so rows never share
// a user and each row starts from empty users.
func userID(tag string, n int) string { return fmt.Sprintf("%s%010d", tag, n) }

// streamID is 13 characters, as redis-benchmark's "s" + 12 digits.
func streamID(n int) string { return fmt.Sprintf("s%012d", n) }

// longLease keeps the leases of rows a to c alive until the final check.
const longLease = 10 * time.Minute

func runOnce(ctx context.Context, cfg config, log io.Writer) (runResult, error) {
	dir, err := os.MkdirTemp("", "limiterbench-")
	if err != nil {
		return runResult{}, err
	}
	defer os.RemoveAll(dir)
	srv, addr, err := startRedis(ctx, cfg.redisServer, dir)
	if err != nil {
		return runResult{}, err
	}
	defer srv.stop()
	b := &bench{cfg: cfg, log: log, redis: srv, addr: addr,
		rdb: redis.NewClient(&redis.Options{Addr: addr, PoolSize: 4 * cfg.clients, ReadTimeout: 30 * time.Second})}
	defer b.rdb.Close()

	out := runResult{loadStart: loadAverage()}
	info, err := b.rdb.Info(ctx, "server").Result()
	if err != nil {
		return out, err
	}
	out.redis = infoField(info, "redis_version")
	src, err := scripts.Source("acquire.lua")
	if err != nil {
		return out, err
	}
	if b.acquireSHA, err = b.rdb.ScriptLoad(ctx, src).Result(); err != nil {
		return out, err
	}

	// Memory first, on an empty server, so the delta holds nothing else.
	b.progress("e. memory: %d users x 3 streams", cfg.memUsers)
	if out.memory, err = b.memory(ctx); err != nil {
		return out, fmt.Errorf("memory row: %w", err)
	}

	b.progress("a. redis-benchmark EVALSHA acquire, %d clients", cfg.clients)
	a, err := b.ceiling(ctx)
	if err != nil {
		return out, fmt.Errorf("row a: %w", err)
	}
	out.rows = append(out.rows, a)

	b.progress("b. package limiter, %d goroutines", cfg.clients)
	rb, err := b.direct(ctx)
	if err != nil {
		return out, fmt.Errorf("row b: %w", err)
	}
	out.rows = append(out.rows, rb)

	rc, err := b.httpRows(ctx)
	if err != nil {
		return out, fmt.Errorf("row c: %w", err)
	}
	out.rows = append(out.rows, rc...)

	maxRate := rc[0].rate
	b.progress("d. player mix at %.0f%% of %.0f/s", 100*cfg.mixFraction, maxRate)
	rd, err := b.players(ctx, cfg.mixFraction*maxRate)
	if err != nil {
		return out, fmt.Errorf("row d: %w", err)
	}
	out.rows = append(out.rows, rd)

	b.progress("final state check")
	if out.check, err = b.checkState(ctx); err != nil {
		return out, fmt.Errorf("final check: %w", err)
	}
	out.loadEnd = loadAverage()
	return out, nil
}

func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.log, "  "+time.Now().Format("15:04:05")+" "+format+"\n", args...)
}

// measure runs work between two CPU samples and commandstats snapshots.
func (b *bench) measure(ctx context.Context, m cpuMeter, work func() error) (cpuUse, cmdDelta, error) {
	before, err := commandStats(ctx, b.rdb)
	if err != nil {
		return cpuUse{}, nil, err
	}
	c0 := m.sample()
	werr := work()
	c1 := m.sample()
	after, err := commandStats(ctx, b.rdb)
	if err != nil {
		return cpuUse{}, nil, err
	}
	return cpuBetween(c0, c1), delta(before, after), werr
}

// ---- a. the ceiling: redis-benchmark ----------------------------------------

// ceiling runs redis-benchmark with EVALSHA of the acquire script. In
// redis-benchmark 7.0 every __rand_int__ of a command gets its own random
// number, so the streams key and the keys hash name two different users
// (see docs/BENCHMARKS.md); the commands Redis runs per call are the same as
// for one user. Its keys use their own prefix, so the final check does not
// compare that hash with that set.
func (b *bench) ceiling(ctx context.Context) (result, error) {
	_, port, _ := strings.Cut(b.addr, ":")
	argv := func(n int, prefix string) []string {
		return []string{
			"-h", "127.0.0.1", "-p", port, "-c", strconv.Itoa(b.cfg.clients), "-P", "1",
			"-r", strconv.Itoa(b.cfg.users), "-n", strconv.Itoa(n),
			"evalsha", b.acquireSHA, "2",
			prefix + ":{__rand_int__}:streams", prefix + ":{__rand_int__}:keys",
			"s__rand_int__",                        // stream ID, "s" + 12 digits
			"00000000-0000-4000-8000-__rand_int__", // a stream key shaped like a UUID
			strconv.Itoa(b.cfg.limit), strconv.FormatInt(longLease.Milliseconds(), 10),
		}
	}
	// A short calibration tells how many requests fill the duration; it also
	// warms the server up.
	calib := 5 * b.cfg.clients * 20
	out, _, err := b.redisBenchmark(ctx, argv(calib, "ceiling-warmup"))
	if err != nil {
		return result{}, err
	}
	rb, err := parseRedisBenchmark(out)
	if err != nil {
		return result{}, err
	}
	n := int(rb.rps * b.cfg.duration.Seconds())
	n = min(max(n, 10*b.cfg.clients), 20_000_000)

	m := cpuMeter{redisPID: b.redis.pid()}
	var clientCPU time.Duration
	start := time.Now()
	cpu, cmds, err := b.measure(ctx, m, func() error {
		out, clientCPU, err = b.redisBenchmark(ctx, argv(n, "ceiling"))
		return err
	})
	wall := time.Since(start)
	if err != nil {
		return result{}, err
	}
	if rb, err = parseRedisBenchmark(out); err != nil {
		return result{}, err
	}
	cpu.client = clientCPU // redis-benchmark is the load generator here, not this process
	calls := cmds.scriptCalls()
	return result{
		id:     "a",
		load:   fmt.Sprintf("redis-benchmark -c %d -P 1: EVALSHA acquire, %d users", b.cfg.clients, b.cfg.users),
		ops:    int64(n),
		wall:   wall,
		rate:   rb.rps,
		lat:    rb.lat,
		errors: cmds.scriptErrors(),
		mix:    cmds.acquireMix(),
		calls:  float64(calls) / float64(n),
		cpu:    cpu,
	}, nil
}

// redisBenchmark runs redis-benchmark, bounded in time, and returns its
// output and the CPU time it used.
func (b *bench) redisBenchmark(ctx context.Context, args []string) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*b.cfg.duration+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.cfg.redisBenchmark, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr tailBuffer
	stderr.max = 8 << 10
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w: %s", b.cfg.redisBenchmark, err, stderr.String())
	}
	var cpu time.Duration
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu = rusageCPU(ru)
	}
	return string(out), cpu, nil
}

type redisBenchmarkOutput struct {
	rps float64
	lat latencySummary
}

// parseRedisBenchmark reads redis-benchmark 7's default output: the
// "Latency by percentile distribution" lines and the "Summary" block.
// p99.9 is the first distribution line at or above 99.9%, an upper bound.
func parseRedisBenchmark(out string) (redisBenchmarkOutput, error) {
	var r redisBenchmarkOutput
	var dist []pctPoint
	var inDist, inSummaryLatency bool
	// Progress lines end in \r, not \n.
	for _, line := range strings.FieldsFunc(out, func(c rune) bool { return c == '\n' || c == '\r' }) {
		line = strings.TrimSpace(line)
		switch {
		case line == "Latency by percentile distribution:":
			inDist = true
			continue
		case strings.HasPrefix(line, "Cumulative distribution"), line == "Summary:":
			inDist = false
		case strings.HasPrefix(line, "throughput summary:"):
			f := strings.Fields(line)
			if len(f) >= 3 {
				r.rps, _ = strconv.ParseFloat(f[2], 64)
			}
		case strings.HasPrefix(line, "avg") && strings.Contains(line, "p50"):
			inSummaryLatency = true
			continue
		}
		if inDist {
			// 99.902% <= 5.879 milliseconds (cumulative count 49952)
			f := strings.Fields(line)
			if len(f) >= 3 && strings.HasSuffix(f[0], "%") {
				p, err1 := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
				ms, err2 := strconv.ParseFloat(f[2], 64)
				if err1 == nil && err2 == nil {
					dist = append(dist, pctPoint{p, msToDuration(ms)})
				}
			}
		}
		if inSummaryLatency {
			inSummaryLatency = false
			// avg min p50 p95 p99 max
			f := strings.Fields(line)
			if len(f) == 6 {
				p50, _ := strconv.ParseFloat(f[2], 64)
				p99, _ := strconv.ParseFloat(f[4], 64)
				r.lat.p50, r.lat.p99 = msToDuration(p50), msToDuration(p99)
			}
		}
	}
	if r.rps == 0 || r.lat.p50 == 0 || len(dist) == 0 {
		return r, fmt.Errorf("redis-benchmark: unexpected output: %q", lastLines(out, 20))
	}
	r.lat.p999 = atOrAbove(dist, 99.9)
	for _, p := range curvePercentiles {
		r.lat.curve = append(r.lat.curve, pctPoint{p, atOrAbove(dist, p)})
	}
	return r, nil
}

// atOrAbove returns the latency of the first point at or above percentile p.
func atOrAbove(dist []pctPoint, p float64) time.Duration {
	for _, d := range dist {
		if d.pct >= p {
			return d.lat
		}
	}
	return dist[len(dist)-1].lat
}

func msToDuration(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// ---- b. package limiter from Go -------------------------------------------

func (b *bench) direct(ctx context.Context) (result, error) {
	rdb := redis.NewClient(&redis.Options{Addr: b.addr, PoolSize: b.cfg.clients})
	defer rdb.Close()
	lim, err := limiter.New(rdb, limiter.Config{Limit: b.cfg.limit, LeaseTTL: longLease, Timeout: 5 * time.Second})
	if err != nil {
		return result{}, err
	}
	if _, err := b.directLoop(ctx, lim, "bw", b.cfg.warmup); err != nil {
		return result{}, err
	}
	var st directStats
	start := time.Now()
	cpu, cmds, err := b.measure(ctx, cpuMeter{redisPID: b.redis.pid()}, func() error {
		st, err = b.directLoop(ctx, lim, "b0", b.cfg.duration)
		return err
	})
	wall := time.Since(start)
	if err != nil {
		return result{}, err
	}
	return result{
		id:     "b",
		load:   fmt.Sprintf("Limiter.Acquire from %d goroutines, %d users x %d streams", b.cfg.clients, b.cfg.users, b.cfg.streamsPerUser),
		ops:    st.ops,
		wall:   wall,
		rate:   float64(st.ops) / wall.Seconds(),
		lat:    summarize(&st.lat),
		errors: st.errors,
		mix:    cmds.acquireMix(),
		calls:  float64(cmds.scriptCalls()) / float64(st.ops),
		cpu:    cpu, // the client side here is this process: goroutines and package limiter
	}, nil
}

type directStats struct {
	ops, errors int64
	lat         vegeta.LatencyMetrics
	firstErr    error
}

// directLoop calls Acquire from cfg.clients goroutines until d has passed:
// a closed loop, as redis-benchmark's clients.
func (b *bench) directLoop(ctx context.Context, lim *limiter.Limiter, tag string, d time.Duration) (directStats, error) {
	if d <= 0 {
		return directStats{}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	lats := make([][]time.Duration, b.cfg.clients)
	errs := make([]int64, b.cfg.clients)
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for w := range b.cfg.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				user, stream := userID(tag, rand.IntN(b.cfg.users)), streamID(rand.IntN(b.cfg.streamsPerUser))
				t0 := time.Now()
				_, err := lim.Acquire(context.Background(), user, stream)
				lats[w] = append(lats[w], time.Since(t0))
				if err != nil && !errors.Is(err, limiter.ErrLimitReached) {
					errs[w]++
					once.Do(func() { firstErr = err })
				}
			}
		}()
	}
	wg.Wait()
	var st directStats
	for w := range lats {
		st.ops += int64(len(lats[w]))
		st.errors += errs[w]
		for _, l := range lats[w] {
			st.lat.Add(l)
		}
	}
	st.firstErr = firstErr
	if st.ops > 0 && st.errors == st.ops {
		return st, fmt.Errorf("every call failed: %w", firstErr)
	}
	return st, nil
}

// ---- c. limiterd over HTTP --------------------------------------------------

// httpRows runs limiterd, finds its closed-loop maximum, then offers fixed
// rates below it (open loop: requests leave on schedule whether or not
// earlier ones have answered, so queueing shows in the latency).
func (b *bench) httpRows(ctx context.Context) ([]result, error) {
	srv, base, err := startLimiterd(ctx, b.cfg.limiterd, b.addr, append([]string{
		"STREAM_LIMIT=" + strconv.Itoa(b.cfg.limit), "LEASE_TTL=" + longLease.String(),
	}, b.cfg.limiterdEnv...))
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	m := cpuMeter{redisPID: b.redis.pid(), limiterdPID: srv.pid()}
	acquires := func(tag string) vegeta.Targeter {
		return func(t *vegeta.Target) error {
			t.Method = http.MethodGet
			t.URL = base + "/api/streams/" + userID(tag, rand.IntN(b.cfg.users)) + "/" + streamID(rand.IntN(b.cfg.streamsPerUser))
			return nil
		}
	}
	expected := func(code uint16) bool { return code == http.StatusOK || code == http.StatusForbidden }
	closed := vegeta.Rate{Freq: 0} // as fast as the workers go
	workers := uint64(b.cfg.clients)

	b.progress("c. HTTP closed loop, %d connections (warm-up %v)", b.cfg.clients, b.cfg.warmup)
	if b.cfg.warmup > 0 {
		b.attack(ctx, acquires("cw"), closed, b.cfg.warmup, workers, workers, 0, expected, nil)
	}
	var rows []result
	if b.cfg.maxWith == "wrk" {
		r, err := b.wrkRow(ctx, m, base)
		if err != nil {
			return nil, err
		}
		rows = append(rows, r)
		b.progress("c. HTTP closed loop with vegeta, %d connections", b.cfg.clients)
	}
	id := "c-max"
	if b.cfg.maxWith == "wrk" {
		id = "c-max-vegeta"
	}
	r, err := b.httpRow(ctx, m, id, fmt.Sprintf("GET acquire, closed loop, %d connections, vegeta", b.cfg.clients),
		acquires("c0"), closed, workers, workers, expected)
	if err != nil {
		return nil, err
	}
	rows = append(rows, r)
	maxRate := rows[0].rate
	for i, f := range b.cfg.fractions {
		rate := int(f * maxRate)
		if rate < 1 {
			continue
		}
		b.progress("c. HTTP open loop, %d/s (%.0f%% of max)", rate, 100*f)
		r, err := b.httpRow(ctx, m, fmt.Sprintf("c-%.0f", 100*f),
			fmt.Sprintf("GET acquire, open loop at %.0f%% of c-max", 100*f),
			acquires(fmt.Sprintf("c%d", i+1)), vegeta.Rate{Freq: rate, Per: time.Second}, workers, 0, expected)
		if err != nil {
			return nil, err
		}
		r.offered = float64(rate)
		rows = append(rows, r)
	}
	if err := srv.alive(); err != nil {
		return nil, err
	}
	return rows, nil
}

// wrkRow measures the closed-loop maximum with wrk, whose C event loop
// takes less of the shared cores than vegeta does.
func (b *bench) wrkRow(ctx context.Context, m cpuMeter, base string) (result, error) {
	var w wrkOutput
	var clientCPU time.Duration
	cpu, cmds, err := b.measure(ctx, m, func() error {
		var err error
		w, clientCPU, err = b.wrk(ctx, base, "cx", b.cfg.clients, b.cfg.duration)
		return err
	})
	if err != nil {
		return result{}, err
	}
	cpu.client = clientCPU // wrk is the load generator here
	return result{
		id: "c-max", load: fmt.Sprintf("GET acquire, closed loop, %d connections, wrk -t 1", b.cfg.clients),
		ops: w.requests, wall: w.duration, rate: float64(w.requests) / w.duration.Seconds(),
		lat: w.latency(), errors: w.errors,
		mix: cmds.acquireMix(), calls: float64(cmds.scriptCalls()) / float64(w.requests), cpu: cpu,
	}, nil
}

func (b *bench) httpRow(ctx context.Context, m cpuMeter, id, load string, tr vegeta.Targeter, pacer vegeta.Pacer,
	workers, maxWorkers uint64, expected func(uint16) bool) (result, error) {
	var st attackStats
	cpu, cmds, err := b.measure(ctx, m, func() error {
		st = b.attack(ctx, tr, pacer, b.cfg.duration, workers, maxWorkers, 0, expected, nil)
		return ctx.Err()
	})
	if err != nil {
		return result{}, err
	}
	if st.ops == 0 || st.errors == st.ops {
		return result{}, fmt.Errorf("%s: every request failed, first: %s", id, st.firstErr)
	}
	if st.errors > 0 {
		b.progress("%s: %d errors, first: %s", id, st.errors, st.firstErr)
	}
	return result{
		id: id, load: load, ops: st.ops, wall: st.wall, rate: float64(st.ops) / st.wall.Seconds(),
		lat: summarize(&st.metrics.Latencies), errors: st.errors,
		mix: cmds.acquireMix(), calls: float64(cmds.scriptCalls()) / float64(st.ops), cpu: cpu,
	}, nil
}

type attackStats struct {
	metrics  vegeta.Metrics
	ops      int64
	errors   int64
	firstErr string
	wall     time.Duration // first request sent to last answer
}

// attack runs vegeta for d. maxWorkers 0 leaves vegeta free to add workers
// (open loop); maxBody 0 reads no body. onResult, when set, sees every
// result (row d learns stream keys from it).
func (b *bench) attack(ctx context.Context, tr vegeta.Targeter, pacer vegeta.Pacer, d time.Duration,
	workers, maxWorkers uint64, maxBody int64, expected func(uint16) bool, onResult func(*vegeta.Result)) attackStats {
	opts := []func(*vegeta.Attacker){
		vegeta.Workers(workers), vegeta.Timeout(5 * time.Second), vegeta.KeepAlive(true),
		vegeta.MaxBody(maxBody), vegeta.Redirects(vegeta.NoFollow),
	}
	if maxWorkers > 0 {
		opts = append(opts, vegeta.MaxWorkers(maxWorkers))
	}
	atk := vegeta.NewAttacker(opts...)
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()
	var st attackStats
	for res := range atk.Attack(tr, pacer, d, "") {
		st.metrics.Add(res)
		st.ops++
		if res.Code == 0 || !expected(res.Code) {
			st.errors++
			if st.firstErr == "" {
				st.firstErr = fmt.Sprintf("%d %s", res.Code, res.Error)
			}
		}
		if onResult != nil {
			onResult(res)
		}
	}
	st.metrics.Close()
	st.wall = st.metrics.Duration + st.metrics.Wait
	if st.wall <= 0 {
		st.wall = d
	}
	return st
}

// ---- e. memory ---------------------------------------------------------------

type memoryResult struct {
	users, streams int
	bytes          int64 // used_memory after less before
}

func (m memoryResult) perStream() float64 { return float64(m.bytes) / float64(m.streams) }

// memory fills memUsers users with 3 streams each through the acquire
// script (EVALSHA in pipelines: the script is loaded, and this is a fill, not
// the service's path) and reads INFO memory's used_memory before and after.
func (b *bench) memory(ctx context.Context) (memoryResult, error) {
	perUser := min(3, b.cfg.limit)
	before, err := usedMemory(ctx, b.rdb)
	if err != nil {
		return memoryResult{}, err
	}
	lease := strconv.FormatInt(longLease.Milliseconds(), 10)
	limit := strconv.Itoa(b.cfg.limit)
	const batch = 500
	admitted := 0
	for first := 0; first < b.cfg.memUsers; first += batch {
		pipe := b.rdb.Pipeline()
		var cmds []*redis.Cmd
		for u := first; u < min(first+batch, b.cfg.memUsers); u++ {
			user := userID("m0", u)
			for s := range perUser {
				cmds = append(cmds, pipe.EvalSha(ctx, b.acquireSHA,
					[]string{"limiter:{" + user + "}:streams", "limiter:{" + user + "}:keys"},
					streamID(s), uuid.NewString(), limit, lease))
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return memoryResult{}, err
		}
		for _, c := range cmds {
			if reply, ok := c.Val().([]any); ok && len(reply) > 0 && reply[0] == "admitted" {
				admitted++
			}
		}
	}
	if want := b.cfg.memUsers * perUser; admitted != want {
		return memoryResult{}, fmt.Errorf("admitted %d streams, want %d", admitted, want)
	}
	after, err := usedMemory(ctx, b.rdb)
	if err != nil {
		return memoryResult{}, err
	}
	return memoryResult{users: b.cfg.memUsers, streams: admitted, bytes: after - before}, nil
}

func usedMemory(ctx context.Context, rdb *redis.Client) (int64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(infoField(info, "used_memory"), 10, 64)
}

// infoField returns the value of "name:value" in an INFO reply.
func infoField(info, name string) string {
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), name+":"); ok {
			return v
		}
	}
	return ""
}

// ---- the final check -----------------------------------------------------------

type checkResult struct {
	users      int // streams sets seen
	streams    int64
	maxPerUser int64
	violations int // users above the limit
	mismatched int // users whose keys hash does not hold one key per stream
}

// checkState scans every streams set left by the run: none may hold more
// than the limit. For the service's prefix it also checks that the keys
// hash holds as many entries as the set (row a's keys name two users, so its
// hashes are not comparable).
func (b *bench) checkState(ctx context.Context) (checkResult, error) {
	var c checkResult
	iter := b.rdb.Scan(ctx, 0, "*:streams", 1000).Iterator()
	var batch []string
	flush := func() error {
		pipe := b.rdb.Pipeline()
		cards := make([]*redis.IntCmd, len(batch))
		hlens := make([]*redis.IntCmd, len(batch))
		for i, k := range batch {
			cards[i] = pipe.ZCard(ctx, k)
			if strings.HasPrefix(k, limiter.DefaultKeyPrefix+":") {
				hlens[i] = pipe.HLen(ctx, strings.TrimSuffix(k, "streams")+"keys")
			}
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		for i := range batch {
			n := cards[i].Val()
			c.users++
			c.streams += n
			c.maxPerUser = max(c.maxPerUser, n)
			if n > int64(b.cfg.limit) {
				c.violations++
			}
			// A key that expired between the two reads shows as 0 and 0.
			if hlens[i] != nil && hlens[i].Val() != n && hlens[i].Val() != 0 && n != 0 {
				c.mismatched++
			}
		}
		batch = batch[:0]
		return nil
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			if err := flush(); err != nil {
				return c, err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return c, err
	}
	return c, flush()
}

// ---- INFO commandstats -----------------------------------------------------------

// cmdStat is one line of INFO commandstats.
type cmdStat struct{ calls, failed, rejected int64 }

type cmdDelta map[string]cmdStat

func commandStats(ctx context.Context, rdb *redis.Client) (map[string]cmdStat, error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	return parseCommandStats(info), nil
}

// parseCommandStats reads lines such as
// cmdstat_evalsha:calls=3,usec=71,usec_per_call=23.67,rejected_calls=0,failed_calls=0
func parseCommandStats(info string) map[string]cmdStat {
	out := map[string]cmdStat{}
	for _, line := range strings.Split(info, "\n") {
		name, fields, ok := strings.Cut(strings.TrimSpace(strings.TrimPrefix(line, "cmdstat_")), ":")
		if !ok || !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		var s cmdStat
		for _, kv := range strings.Split(fields, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				s.calls = n
			case "failed_calls":
				s.failed = n
			case "rejected_calls":
				s.rejected = n
			}
		}
		out[name] = s
	}
	return out
}

func delta(before, after map[string]cmdStat) cmdDelta {
	d := cmdDelta{}
	for name, a := range after {
		bs := before[name]
		d[name] = cmdStat{a.calls - bs.calls, a.failed - bs.failed, a.rejected - bs.rejected}
	}
	return d
}

// scriptCalls is the number of scripts the clients ran: each is one round
// trip (the commands a script runs inside Redis are counted under their own
// names and are not round trips).
func (d cmdDelta) scriptCalls() int64 { return d["evalsha"].calls + d["eval"].calls }

func (d cmdDelta) scriptErrors() int64 {
	return d["evalsha"].failed + d["evalsha"].rejected + d["eval"].failed + d["eval"].rejected
}

// acquireMix tells what the acquires decided, from the commands acquire.lua
// runs inside Redis (rows of acquires only): ZCARD runs for an admitted or a
// refused stream, ZADD for an admitted or a renewed one.
func (d cmdDelta) acquireMix() string {
	total := d.scriptCalls()
	zadd, zcard := d["zadd"].calls, d["zcard"].calls
	refused := total - zadd
	admitted := zcard - refused
	renewed := zadd - admitted
	if total <= 0 || refused < 0 || admitted < 0 || renewed < 0 {
		return "?"
	}
	pct := func(n int64) string { return strconv.FormatFloat(100*float64(n)/float64(total), 'f', 0, 64) }
	return "adm " + pct(admitted) + "% · ren " + pct(renewed) + "% · ref " + pct(refused) + "%"
}

// median is the middle of xs (the mean of the two middle values when even).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
