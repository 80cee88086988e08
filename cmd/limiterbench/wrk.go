package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// wrkScript makes wrk ask for random users and streams (as row c's vegeta
// targeter does), count the answers that are neither 200 nor 403, and print
// what limiterbench reads. wrk calls request() and response() in each
// thread's own Lua state; done() reads the threads' globals.
const wrkScript = `
local users, streams, tag = %d, %d, %q
local threads = {}
errors = 0
function setup(thread) table.insert(threads, thread) end
function init(args) math.randomseed(os.time() + math.floor(os.clock() * 1e6)) end
function request()
  return wrk.format("GET", string.format("/api/streams/%%s%%010d/s%%012d", tag,
    math.random(0, users - 1), math.random(0, streams - 1)))
end
function response(status, headers, body)
  if status ~= 200 and status ~= 403 then errors = errors + 1 end
end
function done(summary, latency, requests)
  local e = summary.errors
  local errs = e.connect + e.read + e.write + e.timeout
  for _, t in ipairs(threads) do errs = errs + t:get("errors") end
  io.write(string.format("limiterbench requests=%%d duration_us=%%d errors=%%d\n",
    summary.requests, summary.duration, errs))
  for _, p in ipairs({%s}) do
    io.write(string.format("limiterbench pct=%%g us=%%d\n", p, latency:percentile(p)))
  end
end
`

type wrkOutput struct {
	requests, errors int64
	duration         time.Duration
	dist             []pctPoint
}

// wrk runs wrk for d against base with conns connections on one thread (one
// epoll loop is plenty, and leaves the cores to the service).
func (b *bench) wrk(ctx context.Context, base, tag string, conns int, d time.Duration) (wrkOutput, time.Duration, error) {
	var pcts []string
	for _, p := range append([]float64{50, 99, 99.9}, curvePercentiles...) {
		pcts = append(pcts, strconv.FormatFloat(p, 'g', -1, 64))
	}
	dir, err := os.MkdirTemp("", "limiterbench-wrk-")
	if err != nil {
		return wrkOutput{}, 0, err
	}
	defer os.RemoveAll(dir)
	script := filepath.Join(dir, "acquire.lua")
	src := fmt.Sprintf(wrkScript, b.cfg.users, b.cfg.streamsPerUser, tag, strings.Join(pcts, ", "))
	if err := os.WriteFile(script, []byte(src), 0o644); err != nil {
		return wrkOutput{}, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	secs := max(1, int(d.Round(time.Second)/time.Second))
	cmd := exec.CommandContext(ctx, b.cfg.wrk, "-t", "1", "-c", strconv.Itoa(conns),
		"-d", strconv.Itoa(secs)+"s", "--timeout", "5s", "-s", script, base)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr tailBuffer
	stderr.max = 8 << 10
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return wrkOutput{}, 0, fmt.Errorf("%s: %w: %s", b.cfg.wrk, err, stderr.String())
	}
	var cpu time.Duration
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu = rusageCPU(ru)
	}
	w, err := parseWrk(string(out))
	return w, cpu, err
}

// parseWrk reads the lines wrkScript's done() prints.
func parseWrk(out string) (wrkOutput, error) {
	var w wrkOutput
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "limiterbench ")
		if !ok {
			continue
		}
		kv := map[string]string{}
		for _, f := range strings.Fields(rest) {
			k, v, _ := strings.Cut(f, "=")
			kv[k] = v
		}
		if v, ok := kv["requests"]; ok {
			w.requests, _ = strconv.ParseInt(v, 10, 64)
			us, _ := strconv.ParseInt(kv["duration_us"], 10, 64)
			w.duration = time.Duration(us) * time.Microsecond
			w.errors, _ = strconv.ParseInt(kv["errors"], 10, 64)
		}
		if v, ok := kv["pct"]; ok {
			p, err1 := strconv.ParseFloat(v, 64)
			us, err2 := strconv.ParseInt(kv["us"], 10, 64)
			if err1 == nil && err2 == nil {
				w.dist = append(w.dist, pctPoint{p, time.Duration(us) * time.Microsecond})
			}
		}
	}
	if w.requests == 0 || w.duration == 0 || len(w.dist) == 0 {
		return w, fmt.Errorf("wrk: unexpected output: %q", lastLines(out, 20))
	}
	return w, nil
}

func (w wrkOutput) latency() latencySummary {
	at := func(p float64) time.Duration {
		for _, d := range w.dist {
			if d.pct == p {
				return d.lat
			}
		}
		return 0
	}
	s := latencySummary{p50: at(50), p99: at(99), p999: at(99.9)}
	for _, p := range curvePercentiles {
		s.curve = append(s.curve, pctPoint{p, at(p)})
	}
	return s
}
