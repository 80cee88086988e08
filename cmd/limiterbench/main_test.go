package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/limiterd/limiterd/internal/servicetest"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

// redisBenchmarkSample is redis-benchmark 7.0.15's output, trimmed, with a
// progress line ending in \r as it prints them.
const redisBenchmarkSample = "evalsha x: rps=6930.2 (overall: 6930.2) avg_msec=6.816 (overall: 6.816)\r" + `
====== evalsha x ======
  50000 requests completed in 0.65 seconds
  50 parallel clients

Latency by percentile distribution:
0.000% <= 0.079 milliseconds (cumulative count 1)
50.000% <= 0.295 milliseconds (cumulative count 29325)
99.219% <= 1.279 milliseconds (cumulative count 49616)
99.805% <= 3.935 milliseconds (cumulative count 49903)
99.902% <= 5.879 milliseconds (cumulative count 49952)
100.000% <= 6.439 milliseconds (cumulative count 50000)

Cumulative distribution of latencies:
0.002% <= 0.103 milliseconds (cumulative count 1)
100.000% <= 7.103 milliseconds (cumulative count 50000)

Summary:
  throughput summary: 77399.38 requests per second
  latency summary (msec):
          avg       min       p50       p95       p99       max
        0.360     0.072     0.295     0.823     1.199     6.439
`

func TestParseRedisBenchmark(t *testing.T) {
	got, err := parseRedisBenchmark(redisBenchmarkSample)
	if err != nil {
		t.Fatal(err)
	}
	if got.rps != 77399.38 {
		t.Errorf("rps = %v, want 77399.38", got.rps)
	}
	// p50 and p99 from the summary; p99.9 is the first distribution line at
	// or above 99.9%: 99.902%, an upper bound.
	want := latencySummary{p50: 295 * time.Microsecond, p99: 1199 * time.Microsecond, p999: 5879 * time.Microsecond}
	if got.lat.p50 != want.p50 || got.lat.p99 != want.p99 || got.lat.p999 != want.p999 {
		t.Errorf("latency = %v %v %v, want %v %v %v", got.lat.p50, got.lat.p99, got.lat.p999, want.p50, want.p99, want.p999)
	}
	if len(got.lat.curve) != len(curvePercentiles) {
		t.Errorf("curve has %d points, want %d", len(got.lat.curve), len(curvePercentiles))
	}

	if _, err := parseRedisBenchmark("ERR unknown command\n"); err == nil {
		t.Error("output without a summary parsed without error")
	}
}

func TestParseWrk(t *testing.T) {
	out := `Running 10s test @ http://127.0.0.1:1
  1 threads and 50 connections
limiterbench requests=120000 duration_us=10000000 errors=3
limiterbench pct=50 us=900
limiterbench pct=99 us=4100
limiterbench pct=99.9 us=9000
`
	w, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if w.requests != 120000 || w.errors != 3 || w.duration != 10*time.Second {
		t.Errorf("got %+v", w)
	}
	lat := w.latency()
	if lat.p50 != 900*time.Microsecond || lat.p99 != 4100*time.Microsecond || lat.p999 != 9*time.Millisecond {
		t.Errorf("latency = %v %v %v", lat.p50, lat.p99, lat.p999)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Error("output without figures parsed without error")
	}
}

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name, stat string
		want       time.Duration
		wantErr    bool
	}{
		{"plain", "42 (redis-server) S 1 42 42 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 4 0 1 0 0", 3800 * time.Millisecond, false},
		{"name with spaces and parentheses", "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 1", 110 * time.Millisecond, false},
		{"truncated", "7 (x) R 1 2 3", 0, true},
		{"no name", "garbage", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStat(tt.stat)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseProcStat = %v, %v; want %v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestProcCPUOfThisProcess(t *testing.T) {
	if _, err := procCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

func TestAcquireMix(t *testing.T) {
	tests := []struct {
		name  string
		delta cmdDelta
		want  string
	}{
		// 10 calls: 2 refused (no ZADD), 5 admitted (ZCARD and ZADD), 3
		// renewed (ZADD only): ZADD 8, ZCARD 7.
		{"mixed", cmdDelta{"evalsha": {calls: 10}, "zadd": {calls: 8}, "zcard": {calls: 7}}, "adm 50% · ren 30% · ref 20%"},
		{"eval counts as a call", cmdDelta{"evalsha": {calls: 3}, "eval": {calls: 1}, "zadd": {calls: 4}, "zcard": {calls: 4}}, "adm 100% · ren 0% · ref 0%"},
		{"nothing ran", cmdDelta{}, "?"},
		{"not acquires", cmdDelta{"evalsha": {calls: 10}, "zadd": {calls: 2}, "zcard": {calls: 0}}, "?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.delta.acquireMix(); got != tt.want {
				t.Errorf("acquireMix = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseCommandStats(t *testing.T) {
	info := "# Commandstats\r\n" +
		"cmdstat_evalsha:calls=200000,usec=4728220,usec_per_call=23.64,rejected_calls=1,failed_calls=2\r\n" +
		"cmdstat_config|resetstat:calls=1,usec=40,usec_per_call=40.00,rejected_calls=0,failed_calls=0\r\n"
	got := parseCommandStats(info)
	if got["evalsha"] != (cmdStat{200000, 2, 1}) || got["config|resetstat"].calls != 1 || len(got) != 2 {
		t.Errorf("parseCommandStats = %+v", got)
	}
	d := delta(map[string]cmdStat{"evalsha": {calls: 5}}, got)
	if d.scriptCalls() != 199995 || d.scriptErrors() != 3 {
		t.Errorf("delta: %d calls, %d errors", d.scriptCalls(), d.scriptErrors())
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999.4: "999", 1000: "1,000", 1234567.6: "1,234,568"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestUpdateMarkdown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	doc := "# Benchmarks\n\nbefore\n" + beginMarker + "\nold table\n" + endMarker + "\nafter\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := updateMarkdown(path, "new table\n"); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := "# Benchmarks\n\nbefore\n" + beginMarker + "\nnew table\n" + endMarker + "\nafter\n"
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if err := os.WriteFile(path, []byte("no markers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := updateMarkdown(path, "x"); err == nil {
		t.Error("a file without markers was updated")
	}
}

func TestLatencySVGIsWellFormed(t *testing.T) {
	curve := func(base time.Duration) []pctPoint {
		var c []pctPoint
		for i, p := range curvePercentiles {
			c = append(c, pctPoint{p, base * time.Duration(i+1)})
		}
		return c
	}
	rep := report{cfg: config{args: []string{"-quick", "<&>"}}, when: time.Now(), rows: []row{
		{id: "a", rate: 30000, p50: 1, p99: 3, p999: 5, curve: curve(time.Millisecond)},
		{id: "c-max", rate: 10000, curve: curve(2 * time.Millisecond)},
		{id: "c-50", rate: 5000, offered: 5000, p50: 0.4, p99: 1.5, p999: 4, curve: curve(300 * time.Microsecond)},
	}}
	svg := latencySVG(rep)
	dec := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, svg)
		}
	}
	for _, want := range []string{"c-50: 5,000/s offered", "2 ms target", "&lt;&amp;&gt;"} {
		if !strings.Contains(svg, want) {
			t.Errorf("the picture lacks %q", want)
		}
	}
}

// TestPlayerMixFollowsEachPlayer feeds the mix the answers a player gets
// and checks what it asks next.
func TestPlayerMixFollowsEachPlayer(t *testing.T) {
	base := "http://127.0.0.1:1"
	p := newPlayerMix(base, "d0", 1)
	var tgt vegeta.Target
	if err := p.next(&tgt); err != nil {
		t.Fatal(err)
	}
	if tgt.Method != http.MethodGet || !strings.HasPrefix(tgt.URL, base+"/api/streams/d00000000000/s") {
		t.Fatalf("first request %s %s, want an acquire of the only user", tgt.Method, tgt.URL)
	}
	acquireURL := tgt.URL
	p.observe(&vegeta.Result{Method: http.MethodGet, URL: acquireURL, Code: 200,
		Body: []byte(`{"stream_key":"k1","renew_after_seconds":1}`)})
	if len(p.due) != 1 || p.due[0].release || time.Until(p.due[0].at) < 900*time.Millisecond {
		t.Fatalf("after an admission: due %+v, want one heartbeat in a second", p.due)
	}
	// The same device acquiring again is the same lease: no second player.
	p.observe(&vegeta.Result{Method: http.MethodGet, URL: acquireURL, Code: 200,
		Body: []byte(`{"stream_key":"k1","renew_after_seconds":1}`)})
	if len(p.due) != 1 || len(p.sessions) != 1 {
		t.Fatalf("a renewed acquire started another player: due %d, sessions %d", len(p.due), len(p.sessions))
	}
	// Make the heartbeat due now: it is what next sends.
	p.due[0].at = time.Now().Add(-time.Millisecond)
	tgt = vegeta.Target{}
	if err := p.next(&tgt); err != nil {
		t.Fatal(err)
	}
	if tgt.Method != http.MethodPost || tgt.URL != acquireURL+"/heartbeat" || string(tgt.Body) != `{"stream_key":"k1"}` ||
		tgt.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("due heartbeat sent as %s %s %s %v", tgt.Method, tgt.URL, tgt.Body, tgt.Header)
	}
	// A heartbeat that finds the lease gone ends the player.
	p.observe(&vegeta.Result{Method: http.MethodPost, URL: tgt.URL, Code: http.StatusGone})
	if len(p.sessions) != 0 || p.n.late != 1 {
		t.Errorf("after a 410: sessions %d, late %d; want 0 and 1", len(p.sessions), p.n.late)
	}
	p.observe(&vegeta.Result{Method: http.MethodGet, URL: acquireURL, Code: http.StatusForbidden})
	if p.n.refused != 1 || len(p.due) != 0 {
		t.Errorf("after a 403: refused %d, due %d; want 1 and 0", p.n.refused, len(p.due))
	}
}

// TestQuickRun runs the whole tool on tiny settings against the real
// limiterd and checks that it reports every row and a clean final state.
// The figures of such a run mean nothing.
//
// It keeps both cores busy for half a minute, which would disturb the
// timing bounds of tests running beside it, so it runs only when asked:
// .ci/run runs it on its own, after make test.
func TestQuickRun(t *testing.T) {
	if os.Getenv("LIMITERBENCH_QUICK") == "" {
		t.Skip("set LIMITERBENCH_QUICK=1: runs the whole benchmark on tiny settings for about 30s")
	}
	for _, bin := range []string{"redis-server", "redis-benchmark"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is required in CI: %v", bin, err)
			}
			t.Skipf("%s not installed: %v", bin, err)
		}
	}
	maxWith := "wrk"
	if _, err := exec.LookPath("wrk"); err != nil {
		maxWith = "vegeta" // wrk is only for `make bench`, which installs it
	}
	dir := t.TempDir()
	svg, md := filepath.Join(dir, "latency.svg"), filepath.Join(dir, "BENCHMARKS.md")
	if err := os.WriteFile(md, []byte(beginMarker+"\n"+endMarker+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{
		"-quick", "-limiterd", servicetest.Binary(t), "-max-with", maxWith,
		"-users", "2000", "-mem-users", "2000", "-clients", "10",
		"-duration", "1s", "-mix-duration", "2s", "-warmup", "200ms",
		"-svg", svg, "-update", md,
	}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"| a |", "| b |", "| c-max |", "| c-25 |", "| c-50 |", "| c-75 |", "| d |", "| e |",
		"no user above the limit", "0 keys hashes out of step", "bytes per active stream"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if doc, _ := os.ReadFile(md); !strings.Contains(string(doc), "| c-max |") {
		t.Errorf("-update did not write the table:\n%s", doc)
	}
	if pic, err := os.ReadFile(svg); err != nil || !strings.HasPrefix(string(pic), "<svg") {
		t.Errorf("-svg: %v", err)
	}
}
