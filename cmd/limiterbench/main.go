// Command limiterbench measures limiterd on this machine, on loopback only,
// and prints one Markdown table. It starts its own redis-server (persistence
// off, free loopback port) and runs the real limiterd binary, then runs one
// row after another, each bounded in time:
//
//	a. redis-benchmark sending EVALSHA of the acquire script (common.lua +
//	   acquire.lua, loaded with SCRIPT LOAD) over many users: the ceiling;
//	b. package limiter called from Go by many goroutines;
//	c. limiterd over HTTP: closed-loop maximum, then open-loop latency at
//	   fractions of that maximum (vegeta, so queueing is not hidden);
//	d. a player mix (acquire, heartbeats every renew_after_seconds with a
//	   short LEASE_TTL, release, refusals) across many users;
//	e. Redis bytes per active stream (INFO memory delta).
//
// It ends with a check of the final Redis state: no user above the limit.
// Every row reports throughput, latency, errors, the Redis calls per
// operation, and the CPU time redis-server, limiterd and the load generator
// used per operation. See docs/BENCHMARKS.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "limiterbench:", err)
		os.Exit(1)
	}
}

// config holds the flags.
type config struct {
	limiterd       string
	redisServer    string
	redisBenchmark string
	wrk            string
	maxWith        string // "wrk" or "vegeta": what measures row c's closed-loop maximum
	limiterdEnv    envList

	users, memUsers int
	limit           int
	streamsPerUser  int
	clients         int

	duration, mixDuration, warmup, maxTotal time.Duration
	fractions                               []float64
	mixFraction                             float64
	runs                                    int

	svg, update string
	quick       bool
	args        []string // as given, for the report
}

// envList is a repeatable NAME=VALUE flag.
type envList []string

func (e *envList) String() string { return strings.Join(*e, " ") }
func (e *envList) Set(v string) error {
	if !strings.Contains(v, "=") {
		return fmt.Errorf("%q is not NAME=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	cfg := config{args: args}
	fs := flag.NewFlagSet("limiterbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.limiterd, "limiterd", "bin/limiterd", "limiterd binary to run (`make build` makes bin/limiterd)")
	fs.StringVar(&cfg.redisServer, "redis-server", "redis-server", "redis-server binary")
	fs.StringVar(&cfg.redisBenchmark, "redis-benchmark", "redis-benchmark", "redis-benchmark binary")
	fs.StringVar(&cfg.wrk, "wrk", "wrk", "wrk binary")
	fs.StringVar(&cfg.maxWith, "max-with", "wrk", "load generator of row c's closed-loop maximum: wrk (C, light on the shared cores) or vegeta")
	fs.Var(&cfg.limiterdEnv, "limiterd-env", "extra NAME=VALUE for limiterd (repeatable; wins over the tool's own)")
	fs.IntVar(&cfg.users, "users", 100_000, "users the load is spread over")
	fs.IntVar(&cfg.memUsers, "mem-users", 100_000, "users holding 3 streams each for the memory row")
	fs.IntVar(&cfg.limit, "limit", 3, "STREAM_LIMIT")
	fs.IntVar(&cfg.streamsPerUser, "streams-per-user", 5, "distinct stream IDs each user asks for in rows b and c (above the limit, so some are refused)")
	fs.IntVar(&cfg.clients, "clients", 50, "connections (redis-benchmark -c, HTTP) and goroutines (row b) of the closed-loop rows")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "length of each measured step of rows a, b and c")
	fs.DurationVar(&cfg.mixDuration, "mix-duration", 20*time.Second, "length of row d")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "unmeasured load before rows b and c")
	fs.DurationVar(&cfg.maxTotal, "max-total", 10*time.Minute, "the whole run is stopped after this long")
	fractions := fs.String("fractions", "0.25,0.5,0.75", "open-loop rates of row c, as fractions of its closed-loop maximum")
	fs.Float64Var(&cfg.mixFraction, "mix-fraction", 0.5, "open-loop rate of row d, as a fraction of row c's closed-loop maximum")
	fs.IntVar(&cfg.runs, "runs", 1, "repeat rows a to d this many times and report the median of each figure")
	fs.StringVar(&cfg.svg, "svg", "", "write the latency picture to this SVG file")
	fs.StringVar(&cfg.update, "update", "", "replace the part of this Markdown file between the limiterbench markers with the report")
	fs.BoolVar(&cfg.quick, "quick", false, "smoke test: 10k users, 2s steps (figures are not meaningful)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, f := range strings.Split(*fractions, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 || v > 1 {
			return cfg, fmt.Errorf("-fractions: %q is not a fraction in (0, 1]", f)
		}
		cfg.fractions = append(cfg.fractions, v)
	}
	if cfg.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quick := map[string]func(){
			"users":        func() { cfg.users = 10_000 },
			"mem-users":    func() { cfg.memUsers = 10_000 },
			"duration":     func() { cfg.duration = 2 * time.Second },
			"mix-duration": func() { cfg.mixDuration = 4 * time.Second },
			"warmup":       func() { cfg.warmup = 500 * time.Millisecond },
		}
		for name, apply := range quick {
			if !set[name] { // an explicit flag beats -quick
				apply()
			}
		}
	}
	switch {
	case cfg.users < 1 || cfg.memUsers < 1:
		return cfg, errors.New("-users and -mem-users must be positive")
	case cfg.limit < 1 || cfg.streamsPerUser < 1 || cfg.clients < 1 || cfg.runs < 1:
		return cfg, errors.New("-limit, -streams-per-user, -clients and -runs must be positive")
	case cfg.duration <= 0 || cfg.mixDuration <= 0 || cfg.warmup < 0:
		return cfg, errors.New("durations must be positive")
	case cfg.maxWith != "wrk" && cfg.maxWith != "vegeta":
		return cfg, fmt.Errorf("-max-with %q: want wrk or vegeta", cfg.maxWith)
	case cfg.mixFraction <= 0 || cfg.mixFraction > 1:
		return cfg, errors.New("-mix-fraction must be in (0, 1]")
	}
	return cfg, nil
}

// run measures and reports; progress goes to stderr, the report to stdout.
// It fails when the final state check finds a user above the limit.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.maxTotal)
	defer cancel()

	var runs []runResult
	for i := 0; i < cfg.runs; i++ {
		fmt.Fprintf(stderr, "run %d of %d\n", i+1, cfg.runs)
		r, err := runOnce(ctx, cfg, stderr)
		if err != nil {
			return err
		}
		runs = append(runs, r)
	}
	rep := newReport(cfg, runs)
	text := rep.markdown()
	fmt.Fprint(stdout, text)
	if cfg.svg != "" {
		if err := os.WriteFile(cfg.svg, []byte(latencySVG(rep)), 0o644); err != nil {
			return err
		}
	}
	if cfg.update != "" {
		if err := updateMarkdown(cfg.update, text); err != nil {
			return err
		}
	}
	for _, r := range runs {
		if r.check.violations > 0 {
			return fmt.Errorf("final state: %d users above the limit of %d", r.check.violations, cfg.limit)
		}
	}
	return nil
}

// Markers around the generated part of a Markdown file (-update).
const (
	beginMarker = "<!-- limiterbench:begin -->"
	endMarker   = "<!-- limiterbench:end -->"
)

func updateMarkdown(path, section string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	doc := string(raw)
	begin, end := strings.Index(doc, beginMarker), strings.Index(doc, endMarker)
	if begin < 0 || end < begin {
		return fmt.Errorf("%s: no %s ... %s section to replace", path, beginMarker, endMarker)
	}
	doc = doc[:begin+len(beginMarker)] + "\n" + section + doc[end:]
	return os.WriteFile(path, []byte(doc), 0o644)
}
