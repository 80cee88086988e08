package failover

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// interval is a span of time [start, end) in Unix nanoseconds.
type interval struct{ start, end int64 }

// excess is a stretch of time in which one user's players together held
// more leases than the limit: by is the most over the limit in the stretch.
type excess struct {
	interval
	by int
}

// overAdmitted returns the stretches in which more than limit of the leases
// overlap. A lease that ends at the very moment another starts does not
// overlap it.
func overAdmitted(leases []interval, limit int) []excess {
	type event struct {
		at    int64
		delta int
	}
	events := make([]event, 0, 2*len(leases))
	for _, l := range leases {
		if l.end > l.start {
			events = append(events, event{l.start, +1}, event{l.end, -1})
		}
	}
	// Ends before starts at the same moment.
	slices.SortFunc(events, func(a, b event) int {
		return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.delta, b.delta))
	})
	var (
		out   []excess
		open  *excess
		count int
	)
	for _, e := range events {
		count += e.delta
		switch {
		case count > limit && open == nil:
			out = append(out, excess{interval: interval{start: e.at}, by: count - limit})
			open = &out[len(out)-1]
		case count > limit:
			open.by = max(open.by, count-limit)
		case open != nil:
			open.end, open = e.at, nil
		}
	}
	return out
}

// healthyAt returns the first moment, from the first bad one on, that is
// followed by window without any bad moment (a failed request, a /readyz
// that is not 200) before until. bad must be sorted. It reports false when
// there is no such moment; with no bad moment at all it returns 0, true.
func healthyAt(bad []int64, until int64, window time.Duration) (int64, bool) {
	for i, b := range bad {
		next := until
		if i+1 < len(bad) {
			next = bad[i+1]
		}
		if next-b > int64(window) || (i+1 == len(bad) && until-b >= int64(window)) {
			return b, true
		}
	}
	if len(bad) == 0 {
		return 0, true
	}
	return 0, false
}

// percentile returns the p-th percentile (0 to 100) of ds, nearest rank.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

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

// observation is everything one failover run recorded.
type observation struct {
	limit    int
	kill     int64 // when the victim was sent SIGKILL
	stopped  int64 // when the load stopped
	players  []*player
	affected []bool // by user: its keys lived on the killed master
	ready    []readiness
}

// figures are what a run measured; durations are from the kill.
type figures struct {
	// The load in the 10 s before the kill.
	rate          float64       // exchanges answered per second
	p50, p99      time.Duration // latency of the exchanges answered without failure
	usersAffected int
	heldAtKill    int // leases held at the kill by the users of the killed master
	failedBefore  int // failed exchanges from the start of the load to the kill

	// The outage.
	exchangesAfter int            // exchanges sent after the kill
	failures       int            // failed exchanges answered after the kill
	failedBy       map[string]int // by kind: "503 redis_unavailable", "transport", ...
	failedByOp     map[string]int
	failedOthers   int // of users whose keys were not on the killed master
	firstFailure   time.Duration
	lastFailure    time.Duration
	firstOK        time.Duration // the first 200 to a user of the killed master, for a request sent after the kill
	healthy        time.Duration // a full second without a failed exchange or a /readyz other than 200 starts
	healthyFound   bool

	// The leases.
	lost          int // leases granted before the kill that the service later said it did not hold, before their expiry
	lostBy410     int
	lostRecent    int // of lost, granted in the last second before the kill: acquisitions the failover lost (older ones lost a renewal)
	lostAfterKill int // the same for leases granted after the kill
	lapsed        int // leases the players let lapse after the kill: no heartbeat answered in time

	// Over-admission: users holding more than the limit.
	overBefore  int // stretches that started before the kill: none may
	overUsers   int // users over the limit at some moment after the kill
	overMax     int // most over the limit
	overLongest time.Duration
	overTotal   time.Duration // summed over users
	overFirst   time.Duration
	overLast    time.Duration
	overSample  []string // a few stretches, for the log
	// Refusals (403) of a user whose players held fewer leases than the
	// limit when they asked: the service counted a lease no player held (a
	// release the failover lost, an acquire that failed but stood).
	spuriousBefore, spuriousAfter int
	// timeline counts, for each second from the kill to the last failure,
	// the failed exchanges of users of the killed master, of the others,
	// and the 200s of users of the killed master.
	timeline    [][3]int
	unexpected  map[string]int
	outOfWindow int // answered after the kill, sent before it
}

// analyze turns what a run recorded into its figures.
func analyze(o observation) figures {
	f := figures{failedBy: map[string]int{}, failedByOp: map[string]int{}, unexpected: map[string]int{}, firstOK: -1}
	rel := func(t int64) time.Duration { return time.Duration(t - o.kill) }
	var (
		lat      []time.Duration
		answered int
		bad      []int64
	)
	windowStart := o.kill - int64(10*time.Second)
	for i, p := range o.players {
		if o.affected[i] {
			f.usersAffected++
		}
		for _, e := range p.exchanges {
			switch {
			case e.failed():
			case e.status == 200, e.status == 403 && e.code == "stream_limit_reached",
				e.status == 410 && e.code == "lease_expired":
			default:
				f.unexpected[e.op.String()+" "+e.kind()]++
			}
			if e.start >= windowStart && e.end < o.kill {
				answered++
				if !e.failed() {
					lat = append(lat, time.Duration(e.end-e.start))
				}
			}
			if e.end < o.kill {
				if e.failed() {
					f.failedBefore++
				}
				continue
			}
			if e.start >= o.kill {
				f.exchangesAfter++
			} else {
				f.outOfWindow++
			}
			if e.status == 200 && o.affected[i] && e.start >= o.kill && (f.firstOK < 0 || rel(e.end) < f.firstOK) {
				f.firstOK = rel(e.end)
			}
			if sec := int(rel(e.end) / time.Second); sec < 120 {
				for len(f.timeline) <= sec {
					f.timeline = append(f.timeline, [3]int{})
				}
				switch {
				case e.failed() && o.affected[i]:
					f.timeline[sec][0]++
				case e.failed():
					f.timeline[sec][1]++
				case e.status == 200 && o.affected[i]:
					f.timeline[sec][2]++
				}
			}
			if !e.failed() {
				continue
			}
			f.failures++
			f.failedBy[e.kind()]++
			f.failedByOp[e.op.String()]++
			if !o.affected[i] {
				f.failedOthers++
			}
			bad = append(bad, e.end)
		}
		for _, l := range p.leases {
			if o.affected[i] && l.start < o.kill && l.end >= o.kill {
				f.heldAtKill++
			}
			if l.lostAt != 0 {
				if l.start < o.kill {
					f.lost++
					if l.how == gone {
						f.lostBy410++
					}
					if l.start >= o.kill-int64(time.Second) {
						f.lostRecent++
					}
				} else {
					f.lostAfterKill++
				}
			}
			if l.how == lapsed && l.end >= o.kill {
				f.lapsed++
			}
		}
	}
	f.rate = float64(answered) / 10
	f.p50, f.p99 = percentile(lat, 50), percentile(lat, 99)

	if len(bad) > 0 {
		f.firstFailure, f.lastFailure = rel(slices.Min(bad)), rel(slices.Max(bad))
	}
	for _, r := range o.ready {
		if !r.ok && r.at >= o.kill {
			bad = append(bad, r.at)
		}
	}
	slices.Sort(bad)
	var at int64
	at, f.healthyFound = healthyAt(bad, o.stopped, time.Second)
	if f.healthyFound && at != 0 {
		f.healthy = rel(at)
	}

	if n := int(f.lastFailure/time.Second) + 2; len(f.timeline) > n {
		f.timeline = f.timeline[:n]
	}

	for _, p := range o.players {
		for _, e := range p.exchanges {
			if e.op != opAcquire || e.status != 403 {
				continue
			}
			held := 0
			for _, l := range p.leases {
				if l.start < e.start && l.end > e.start {
					held++
				}
			}
			if held >= o.limit {
				continue
			}
			if e.start < o.kill {
				f.spuriousBefore++
			} else {
				f.spuriousAfter++
			}
		}
	}

	f.overFirst = -1
	for _, p := range o.players {
		ivs := make([]interval, len(p.leases))
		for j, l := range p.leases {
			ivs[j] = interval{l.start, l.end}
		}
		var total time.Duration
		by := 0
		for _, x := range overAdmitted(ivs, o.limit) {
			if x.start < o.kill {
				f.overBefore++
				continue
			}
			total += time.Duration(x.end - x.start)
			by = max(by, x.by)
			if f.overFirst < 0 || rel(x.start) < f.overFirst {
				f.overFirst = rel(x.start)
			}
			f.overLast = max(f.overLast, rel(x.end))
			if len(f.overSample) < 5 {
				f.overSample = append(f.overSample, fmt.Sprintf("%s +%s..+%s by %d", p.user, secs(rel(x.start)), secs(rel(x.end)), x.by))
			}
		}
		if total > 0 {
			f.overUsers++
			f.overMax = max(f.overMax, by)
			f.overTotal += total
			f.overLongest = max(f.overLongest, total)
		}
	}
	return f
}

// timelineString shows f.timeline as "+0s 310/95/0 +1s ...".
func (f figures) timelineString() string {
	var b strings.Builder
	for sec, c := range f.timeline {
		fmt.Fprintf(&b, " +%ds %d/%d/%d", sec, c[0], c[1], c[2])
	}
	return strings.TrimSpace(b.String())
}

// secs formats a duration in seconds with two decimals.
func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

// counts formats a map of counts as "a 3, b 1", largest first.
func counts(m map[string]int) string {
	keys := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		return cmp.Or(cmp.Compare(m[b], m[a]), cmp.Compare(a, b))
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func TestOverAdmitted(t *testing.T) {
	iv := func(start, end int64) interval { return interval{start, end} }
	tests := []struct {
		name   string
		leases []interval
		limit  int
		want   []excess
	}{
		{"none", nil, 3, nil},
		{"at the limit", []interval{iv(0, 10), iv(0, 10), iv(0, 10)}, 3, nil},
		{"one over", []interval{iv(0, 10), iv(0, 10), iv(0, 10), iv(5, 20)}, 3, []excess{{iv(5, 10), 1}}},
		{"an end and a start at the same moment do not overlap",
			[]interval{iv(0, 10), iv(0, 10), iv(0, 10), iv(10, 20)}, 3, nil},
		{"deepest in the stretch", []interval{iv(0, 10), iv(1, 9), iv(2, 8), iv(3, 7)}, 1, []excess{{iv(1, 9), 3}}},
		{"two stretches", []interval{iv(0, 100), iv(10, 20), iv(50, 60)}, 1, []excess{{iv(10, 20), 1}, {iv(50, 60), 1}}},
		{"empty and reversed leases count for nothing", []interval{iv(0, 10), iv(5, 5), iv(8, 3)}, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := overAdmitted(tt.leases, tt.limit); !slices.Equal(got, tt.want) {
				t.Errorf("overAdmitted(%v, %d) = %v, want %v", tt.leases, tt.limit, got, tt.want)
			}
		})
	}
}

func TestHealthyAt(t *testing.T) {
	s := int64(time.Second)
	tests := []struct {
		name   string
		bad    []int64
		until  int64
		want   int64
		wantOK bool
	}{
		{"no failure", nil, 10 * s, 0, true},
		{"one burst", []int64{1 * s, s + s/2, 2 * s}, 10 * s, 2 * s, true},
		{"gaps under a second do not count", []int64{1 * s, 1*s + 9*s/10, 2*s + 8*s/10, 5 * s}, 10 * s, 2*s + 8*s/10, true},
		{"a gap over a second does", []int64{1 * s, 2*s + 1, 5 * s}, 10 * s, 1 * s, true},
		{"failing to the end", []int64{1 * s, 1*s + s/2, 2 * s, 2*s + s/2, 3 * s}, 3*s + s/2, 0, false},
		{"a last second not yet over", []int64{1 * s}, 1*s + s/2, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := healthyAt(tt.bad, tt.until, time.Second)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("healthyAt(%v, %d) = %d, %v; want %d, %v", tt.bad, tt.until, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// TestAnalyzeLostLease checks the figures on a made-up run: a lease granted
// before the kill, lost by the failover, and a new stream admitted in its
// place before the lost one's heartbeat answered 410.
func TestAnalyzeLostLease(t *testing.T) {
	s := int64(time.Second)
	kill := 100 * s
	p := &player{user: "u1"}
	for i := range 3 {
		p.leases = append(p.leases, &lease{stream: fmt.Sprint("s", i), start: 90 * s, expires: 120 * s, end: 130 * s, how: stillHeld})
	}
	p.leases[2].how, p.leases[2].end, p.leases[2].lostAt = gone, 110*s, 110*s
	p.leases = append(p.leases, &lease{stream: "s3", start: 108 * s, expires: 123 * s, end: 130 * s, how: stillHeld})
	p.exchanges = []exchange{
		{start: 99 * s, end: 99*s + 1, op: opAcquire, status: 200},
		{start: 101 * s, end: 101*s + s/2, op: opHeartbeat, status: 503, code: "redis_unavailable"},
		{start: 102 * s, end: 102*s + 3*s/10, op: opHeartbeat, status: 0},
		{start: 108 * s, end: 108 * s, op: opAcquire, status: 200},
		{start: 110 * s, end: 110 * s, op: opHeartbeat, status: 410, code: "lease_expired"},
	}
	f := analyze(observation{limit: 3, kill: kill, stopped: 130 * s, players: []*player{p}, affected: []bool{true}})
	checks := []struct {
		name      string
		got, want any
	}{
		{"failures", f.failures, 2},
		{"failedBy", counts(f.failedBy), "503 redis_unavailable 1, transport 1"},
		{"firstFailure", f.firstFailure, 1500 * time.Millisecond},
		{"lastFailure", f.lastFailure, 2300 * time.Millisecond},
		{"healthy", f.healthy, 2300 * time.Millisecond},
		{"firstOK", f.firstOK, 8 * time.Second},
		{"lost", f.lost, 1},
		{"overUsers", f.overUsers, 1},
		{"overMax", f.overMax, 1},
		{"overLongest", f.overLongest, 2 * time.Second},
		{"overFirst", f.overFirst, 8 * time.Second},
		{"overBefore", f.overBefore, 0},
		{"heldAtKill", f.heldAtKill, 3},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}
