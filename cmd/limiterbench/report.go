package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// row is one line of the table: the median of each figure over the runs.
type row struct {
	id, load, mix                   string
	rate, offered                   float64
	p50, p99, p999                  float64 // milliseconds
	p999Bound                       bool    // p99.9 is an upper bound (redis-benchmark's distribution)
	errors                          float64
	calls                           float64
	redisCPU, serviceCPU, clientCPU float64 // µs per operation
	hasService                      bool
	cores                           float64 // CPU of all three over wall time
	curve                           []pctPoint
}

func rowOf(r result) row {
	ops := float64(max(r.ops, 1))
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / ops }
	return row{
		id: r.id, load: r.load, mix: r.mix, rate: r.rate, offered: r.offered,
		p50: ms(r.lat.p50), p99: ms(r.lat.p99), p999: ms(r.lat.p999), p999Bound: r.id == "a",
		errors: float64(r.errors), calls: r.calls,
		redisCPU: us(r.cpu.redis), serviceCPU: us(r.cpu.service), clientCPU: us(r.cpu.client),
		hasService: r.cpu.hasService,
		cores:      float64(r.cpu.redis+r.cpu.service+r.cpu.client) / float64(max(r.wall, 1)),
		curve:      r.lat.curve,
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

type report struct {
	cfg      config
	runs     int
	rows     []row
	memBytes float64 // median bytes per stream
	mem      memoryResult
	checks   []checkResult
	loads    []string // "start→end" one-minute load average of each run
	redis    string
	when     time.Time
}

// newReport takes, for every figure of every row, the median over the runs.
func newReport(cfg config, runs []runResult) report {
	rep := report{cfg: cfg, runs: len(runs), when: time.Now().UTC(), redis: runs[0].redis, mem: runs[0].memory}
	var memPer []float64
	for _, r := range runs {
		memPer = append(memPer, r.memory.perStream())
		rep.checks = append(rep.checks, r.check)
		rep.loads = append(rep.loads, r.loadStart+"→"+r.loadEnd)
	}
	rep.memBytes = median(memPer)
	for i := range runs[0].rows {
		var all []row
		for _, r := range runs {
			if i < len(r.rows) {
				all = append(all, rowOf(r.rows[i]))
			}
		}
		rep.rows = append(rep.rows, medianRow(all))
	}
	return rep
}

func medianRow(all []row) row {
	pick := func(f func(row) float64) float64 {
		xs := make([]float64, len(all))
		for i, r := range all {
			xs[i] = f(r)
		}
		return median(xs)
	}
	// Text (load, outcomes) and the latency curve come from the run whose
	// p99 is nearest the median: for open-loop rows every run has about the
	// same throughput, and the picture is about latency.
	out := all[0]
	p99 := pick(func(r row) float64 { return r.p99 })
	for _, r := range all {
		if abs(r.p99-p99) < abs(out.p99-p99) {
			out = r
		}
	}
	rate := pick(func(r row) float64 { return r.rate })
	out.rate = rate
	out.offered = pick(func(r row) float64 { return r.offered })
	out.p50 = pick(func(r row) float64 { return r.p50 })
	out.p99 = pick(func(r row) float64 { return r.p99 })
	out.p999 = pick(func(r row) float64 { return r.p999 })
	out.errors = pick(func(r row) float64 { return r.errors })
	out.calls = pick(func(r row) float64 { return r.calls })
	out.redisCPU = pick(func(r row) float64 { return r.redisCPU })
	out.serviceCPU = pick(func(r row) float64 { return r.serviceCPU })
	out.clientCPU = pick(func(r row) float64 { return r.clientCPU })
	out.cores = pick(func(r row) float64 { return r.cores })
	return out
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func (rep report) row(id string) (row, bool) {
	for _, r := range rep.rows {
		if r.id == id {
			return r, true
		}
	}
	return row{}, false
}

// markdown is the whole report: machine, command, table, check, targets.
func (rep report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	figures := "each figure is from one run"
	if rep.runs > 1 {
		figures = fmt.Sprintf("each figure is the median of %d runs", rep.runs)
	}
	w("Measured %s on %s; %s.\n\n", rep.when.Format("2006-01-02"), machine(rep.redis), figures)
	w("Command: `limiterbench %s`. One-minute load average at the start and end of each run (other work on the machine): %s.\n\n",
		strings.Join(rep.cfg.args, " "), strings.Join(rep.loads, ", "))

	w("| row | load | ops/s | × (a) | p50 ms | p99 ms | p99.9 ms | errors | outcomes | scripts per op | CPU µs per op: Redis · limiterd · load generator (cores busy) |\n")
	w("|---|---|--:|--:|--:|--:|--:|--:|---|--:|---|\n")
	a, _ := rep.row("a")
	for _, r := range rep.rows {
		load := r.load
		if r.offered > 0 {
			load += fmt.Sprintf(" (%s/s offered)", thousands(r.offered))
		}
		p999 := fmt.Sprintf("%.2f", r.p999)
		if r.p999Bound {
			p999 = "≤ " + p999
		}
		service := "–"
		if r.hasService {
			service = fmt.Sprintf("%.0f", r.serviceCPU)
		}
		ratio := "–"
		if a.rate > 0 {
			ratio = fmt.Sprintf("%.2f", r.rate/a.rate)
		}
		w("| %s | %s | %s | %s | %.2f | %.2f | %s | %s | %s | %.3f | %.0f · %s · %.0f (%.1f) |\n",
			r.id, load, thousands(r.rate), ratio, r.p50, r.p99, p999, thousands(r.errors), r.mix,
			r.calls, r.redisCPU, service, r.clientCPU, r.cores)
	}
	w("| e | memory: %s users × 3 streams, acquire script | | | | | | | | | **%.0f bytes per active stream** (INFO used_memory +%.1f MB for %s streams) |\n\n",
		thousands(float64(rep.mem.users)), rep.memBytes, float64(rep.mem.bytes)/1e6, thousands(float64(rep.mem.streams)))

	for i, c := range rep.checks {
		verdict := "no user above the limit"
		if c.violations > 0 {
			verdict = fmt.Sprintf("**%d users above the limit**", c.violations)
		}
		run := ""
		if len(rep.checks) > 1 {
			run = fmt.Sprintf(" (run %d)", i+1)
		}
		w("Final Redis state%s: %s streams sets scanned holding %s streams, at most %d per user (limit %d): %s; %d keys hashes out of step with their set.\n",
			run, thousands(float64(c.users)), thousands(float64(c.streams)), c.maxPerUser, rep.cfg.limit, verdict, c.mismatched)
	}
	w("\nTargets (measured, not asserted):\n\n")
	if c, ok := rep.row("c-max"); ok && a.rate > 0 {
		ratio := c.rate / a.rate
		w("- HTTP acquire throughput ≥ 0.7 × ceiling: c-max / a = %s / %s = **%.2f**: %s.\n",
			thousands(c.rate), thousands(a.rate), ratio, met(ratio >= 0.7))
	}
	if c, ok := rep.row("c-50"); ok {
		w("- p99 at 50%% of the maximum rate < 2 ms: c-50 p99 = **%.2f ms**: %s.\n", c.p99, met(c.p99 < 2))
	}
	var calls []string
	for _, r := range rep.rows {
		calls = append(calls, fmt.Sprintf("%s %.3f", r.id, r.calls))
	}
	w("- One Redis round trip per API call: scripts run per operation (INFO commandstats EVALSHA + EVAL deltas) %s; `limiter/roundtrip_test.go` asserts exactly one per call.\n",
		strings.Join(calls, ", "))
	w("- Redis memory ≤ 150 bytes per active stream: **%.0f bytes**: %s.\n", rep.memBytes, met(rep.memBytes <= 150))
	return b.String()
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

// thousands formats a figure rounded to a whole number with thin groups.
func thousands(x float64) string {
	s := strconv.FormatInt(int64(x+0.5), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

// machine describes where the run happened.
func machine(redisVersion string) string {
	model := "unknown CPU"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := ""
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = " " + strings.TrimSpace(string(raw))
	}
	return fmt.Sprintf("%s, %d cores, Linux%s, %s, redis-server %s, everything on loopback",
		model, runtime.NumCPU(), kernel, runtime.Version(), redisVersion)
}
