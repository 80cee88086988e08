package jepsen

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/limiterd/limiterd/internal/redistest"
	"github.com/limiterd/limiterd/internal/servicetest"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

const (
	streamLimit = 3
	replicas    = 3
	workers     = 24
)

// TestLinearizability drives several limiterd processes sharing one Redis
// with concurrent players and checks that everything they saw could have
// happened, one call at a time, on the sequential model of the API.
func TestLinearizability(t *testing.T) {
	duration := envDuration(t, "LINEARIZABILITY_DURATION", 3*time.Second)
	checkTimeout := envDuration(t, "LINEARIZABILITY_CHECK_TIMEOUT", 2*time.Minute)
	outDir := cmp.Or(os.Getenv("LINEARIZABILITY_OUT"), os.TempDir())

	redis := redistest.Start(t)
	l := &load{
		users:   []string{"u0", "u1", "u2"},
		streams: []string{"s0", "s1", "s2", "s3", "s4", "s5"},
		workers: workers,
		timeout: 10 * time.Second,
	}
	for range replicas {
		// A lease outlives the run, so expiry never interleaves with the
		// calls: the model has no clock. Closed failure mode, because a
		// fail-open lease is no decision of Redis's and the model could
		// not explain it.
		svc := servicetest.Start(t, "REDIS_URL=redis://"+redis.Addr, "LEASE_TTL=1h",
			fmt.Sprintf("STREAM_LIMIT=%d", streamLimit), "REDIS_FAILURE_MODE=closed")
		l.replicas = append(l.replicas, svc.URL)
	}

	seed := rand.Uint64()
	t.Logf("load: %d workers on %d replicas for %v; %d users x %d streams, STREAM_LIMIT=%d; seed %d",
		l.workers, len(l.replicas), duration, len(l.users), len(l.streams), streamLimit, seed)
	history, surprises := runLoad(l, duration, seed)

	for i, s := range surprises {
		if i == 10 {
			t.Errorf("... and %d more undocumented answers", len(surprises)-10)
			break
		}
		t.Errorf("undocumented answer to %s: %s", describeCall(s.in), s.why)
	}
	logTally(t, history)

	began := time.Now()
	result, vs := checkHistory(newModel(streamLimit), history, checkTimeout, outDir)
	t.Logf("porcupine: %s for %d operations in %v (timeout %v)", result, len(history), time.Since(began).Round(time.Millisecond), checkTimeout)
	switch result {
	case porcupine.Ok:
	case porcupine.Unknown:
		// A search cut short proves nothing, and a broken service can
		// make the search explode rather than end: never a pass.
		t.Errorf("porcupine gave up after %v (LINEARIZABILITY_CHECK_TIMEOUT): %s", checkTimeout, describe(vs))
	default:
		t.Errorf("the history is not linearizable: %s", describe(vs))
	}
}

// epoch is how long the workers run between two resets (see worker.reset):
// it bounds the length of a partition, which porcupine needs memory for in
// proportion to the square of its length.
const epoch = time.Second

// runLoad runs the workers for d, in epochs, and returns the history
// (ambiguous calls returning after every other call) and the undocumented
// answers.
func runLoad(l *load, d time.Duration, seed uint64) ([]porcupine.Operation, []surprise) {
	var (
		mu       sync.Mutex
		clientID = l.workers + 1 // 0 to workers-1 are the workers, workers the resetter
	)
	nextID := func() int {
		mu.Lock()
		defer mu.Unlock()
		clientID++
		return clientID - 1
	}
	start := time.Now()
	newWorker := func(i int) *worker {
		return &worker{
			load:     l,
			rng:      rand.New(rand.NewPCG(seed, uint64(i))),
			client:   &http.Client{Timeout: l.timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 4}},
			start:    start,
			keys:     map[string][]string{},
			clientID: i,
			nextID:   nextID,
		}
	}
	ws := make([]*worker, l.workers+1)
	for i := range ws {
		ws[i] = newWorker(i)
		defer ws[i].client.CloseIdleConnections()
	}
	players, resetter := ws[:l.workers], ws[l.workers]

	for e := 0; time.Since(start) < d; e++ {
		ctx, cancel := context.WithTimeout(context.Background(), min(epoch, d-time.Since(start)))
		var wg sync.WaitGroup
		for _, w := range players {
			wg.Go(func() { w.run(ctx, e) })
		}
		wg.Wait()
		cancel()
		for _, user := range l.users {
			resetter.reset(user, e)
		}
	}

	// An ambiguous call may take effect at any time after its call, so it
	// returns after everything else: porcupine's way with a crashed call.
	end := time.Since(start).Nanoseconds() + 1
	var history []porcupine.Operation
	var surprises []surprise
	for _, w := range ws {
		for _, op := range w.ops {
			if op.Output.(output).outcome == outAmbiguous {
				op.Return = end
			}
			history = append(history, op)
		}
		surprises = append(surprises, w.surprises...)
	}
	return history, surprises
}

// checkHistory checks history against model, partition by partition, at
// most GOMAXPROCS at a time: porcupine would check them all at once, and a
// long run has hundreds. timeout bounds the whole check. It writes
// porcupine's visualisation, in outDir, of the first few partitions that do
// not pass.
func checkHistory(model porcupine.Model, history []porcupine.Operation, timeout time.Duration, outDir string) (porcupine.CheckResult, []visualisation) {
	deadline := time.Now().Add(timeout)
	parts := model.Partition(history)
	results := make([]porcupine.CheckResult, len(parts))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(parts); i = int(next.Add(1) - 1) {
				results[i] = porcupine.Unknown
				if left := time.Until(deadline); left > 0 {
					results[i] = porcupine.CheckOperationsTimeout(model, parts[i], left)
				}
			}
		})
	}
	wg.Wait()

	result := porcupine.Ok
	var vs []visualisation
	for i, res := range results {
		switch {
		case res == porcupine.Ok:
			continue
		case res == porcupine.Illegal:
			result = porcupine.Illegal
		case result == porcupine.Ok:
			result = porcupine.Unknown
		}
		if len(vs) < maxVisualisations {
			vs = append(vs, visualise(model, parts[i], min(timeout, visualiseTimeout), outDir))
		}
	}
	return result, vs
}

const (
	maxVisualisations = 3                // files a failing run writes at most
	visualiseTimeout  = 30 * time.Second // longest search for one picture: a cut-short search still draws what it found
)

// visualise checks part again, keeping what porcupine learns, and writes
// porcupine's HTML visualisation of it in outDir.
func visualise(model porcupine.Model, part []porcupine.Operation, timeout time.Duration, outDir string) visualisation {
	res, info := porcupine.CheckOperationsVerbose(model, part, timeout)
	first := part[0].Input.(input)
	v := visualisation{user: first.user, epoch: first.epoch, result: res}
	f, err := os.CreateTemp(outDir, fmt.Sprintf("limiterd-linearizability-%s-epoch%d-*.html", v.user, v.epoch))
	if err == nil {
		v.path = f.Name()
		f.Close()
		err = porcupine.VisualizePath(model, info, v.path)
	}
	v.err = err
	return v
}

// visualisation is porcupine's HTML picture of one user's calls that did not
// pass the check.
type visualisation struct {
	user   string
	epoch  int // the partition's first epoch
	result porcupine.CheckResult
	path   string
	err    error // the picture could not be written
}

func (v visualisation) String() string {
	if v.err != nil {
		return fmt.Sprintf("user %s from epoch %d: %s (no visualisation: %v)", v.user, v.epoch, v.result, v.err)
	}
	return fmt.Sprintf("user %s from epoch %d: %s, see %s", v.user, v.epoch, v.result, v.path)
}

func describe(vs []visualisation) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = v.String()
	}
	return strings.Join(s, "; ")
}

// logTally logs how many calls of each kind ended each way, and how many
// were ambiguous, so a run shows what it exercised.
func logTally(t *testing.T, history []porcupine.Operation) {
	t.Helper()
	counts := map[string]int{}
	ambiguous := 0
	for _, op := range history {
		in, out, m := op.Input.(input), op.Output.(output), op.Metadata.(meta)
		kind := in.kind.String()
		switch {
		case m.route == "epoch reset":
			kind += " (epoch reset)"
		case m.keyNote != "":
			kind += " key=" + m.keyNote
		}
		counts[kind+": "+resultLabel(in, out)]++
		if out.outcome == outAmbiguous {
			ambiguous++
		}
	}
	lines := make([]string, 0, len(counts))
	for k, n := range counts {
		lines = append(lines, fmt.Sprintf("  %-40s %7d", k, n))
	}
	slices.Sort(lines)
	t.Logf("%d operations in %d partitions (user x epoch), %d ambiguous:\n%s", len(history), len(newModel(streamLimit).Partition(history)), ambiguous, strings.Join(lines, "\n"))

	// The check proves little unless the load reached every branch.
	for _, want := range []string{"acquire: ok", "acquire: refused", "heartbeat key=latest: ok", "heartbeat key=random: mismatch",
		"heartbeat key=latest: inactive", "release key=latest: released", "release key=none: released", "release-soonest: released", "list: ok"} {
		if counts[want] == 0 {
			t.Errorf("the load never produced %q: the check did not cover it", want)
		}
	}
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive Go duration such as 60s", name, v)
	}
	return d
}
