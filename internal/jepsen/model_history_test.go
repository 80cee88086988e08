package jepsen

import (
	"cmp"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// Hand-made histories for user a (and b) under STREAM_LIMIT=3: the checker
// must accept the possible ones and reject the impossible ones, or the load
// test's "Ok" would mean nothing.

const never = 1 << 40 // the return time of an ambiguous call: after everything else

func call(client int, callAt, returnAt int64, in input, out output) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: callAt, Output: out, Return: returnAt}
}

func acq(user, stream string) input { return input{kind: opAcquire, user: user, stream: stream} }
func hb(user, stream, key string) input {
	return input{kind: opHeartbeat, user: user, stream: stream, key: key}
}
func rel(user, stream, key string) input {
	return input{kind: opRelease, user: user, stream: stream, key: key}
}
func soonest(user string) input { return input{kind: opReleaseSoonest, user: user} }
func list(user string) input    { return input{kind: opList, user: user} }

func leased(key string, expiry int64, active int) output {
	return output{outcome: outOK, key: key, expiry: expiry, active: active}
}
func released(stream string, active int) output {
	return output{outcome: outOK, stream: stream, released: true, active: active}
}
func notReleased(stream string, active int) output {
	return output{outcome: outOK, stream: stream, active: active}
}
func listed(live ...liveStream) output  { return output{outcome: outOK, live: live} }
func refused(live ...liveStream) output { return output{outcome: outRefused, live: live} }

var (
	mismatch  = output{outcome: outMismatch}
	inactive  = output{outcome: outInactive}
	ambiguous = output{outcome: outAmbiguous, why: "transport: hand-made"}
)

func TestModelAcceptsPossibleHistories(t *testing.T) {
	tests := []struct {
		name    string
		history []porcupine.Operation
	}{
		{"a lease's life, one call at a time", []porcupine.Operation{
			call(0, 0, 1, acq("a", "s1"), leased("k1", 1000, 1)),
			call(0, 2, 3, hb("a", "s1", "k1"), leased("k1", 1100, 1)),
			call(0, 4, 5, list("a"), listed(liveStream{"s1", 1100})),
			call(0, 6, 7, rel("a", "s1", "k1"), released("s1", 0)),
			call(0, 8, 9, hb("a", "s1", "k1"), inactive),
			call(0, 10, 11, rel("a", "s1", ""), notReleased("s1", 0)),
			call(0, 12, 13, soonest("a"), notReleased("", 0)),
		}},
		{"overlapping acquires of one stream: one admits, the other renews with the same key", []porcupine.Operation{
			call(0, 0, 10, acq("a", "s1"), leased("k1", 1001, 1)),
			call(1, 1, 9, acq("a", "s1"), leased("k1", 1000, 1)),
		}},
		{"three overlapping admissions, then a refusal listing them", []porcupine.Operation{
			call(0, 0, 10, acq("a", "s1"), leased("k1", 1000, 3)),
			call(1, 0, 10, acq("a", "s2"), leased("k2", 1000, 1)),
			call(2, 0, 10, acq("a", "s3"), leased("k3", 1000, 2)),
			call(0, 20, 30, acq("a", "s4"), refused(liveStream{"s1", 1000}, liveStream{"s2", 1000}, liveStream{"s3", 1000})),
		}},
		{"an admission overlapping a release at the limit", []porcupine.Operation{
			call(0, 0, 1, acq("a", "s1"), leased("k1", 1000, 1)),
			call(0, 2, 3, acq("a", "s2"), leased("k2", 1001, 2)),
			call(0, 4, 5, acq("a", "s3"), leased("k3", 1002, 3)),
			call(0, 10, 20, rel("a", "s1", "k1"), released("s1", 2)),
			call(1, 11, 19, acq("a", "s4"), leased("k4", 1011, 3)),
		}},
		{"wrong and stale keys change nothing", []porcupine.Operation{
			call(0, 0, 1, acq("a", "s1"), leased("k1", 1000, 1)),
			call(0, 2, 3, rel("a", "s1", "k1"), released("s1", 0)),
			call(0, 4, 5, acq("a", "s1"), leased("k2", 1004, 1)),
			call(0, 6, 7, hb("a", "s1", "k1"), mismatch),
			call(0, 8, 9, rel("a", "s1", "k1"), mismatch),
			call(0, 10, 11, list("a"), listed(liveStream{"s1", 1004})),
		}},
		{"the legacy release frees the lease that expires soonest, ties by stream ID", []porcupine.Operation{
			call(0, 0, 1, acq("a", "s1"), leased("k1", 1000, 1)),
			call(0, 2, 3, acq("a", "s3"), leased("k3", 1010, 2)),
			call(0, 4, 5, acq("a", "s2"), leased("k2", 1010, 3)),
			call(0, 6, 7, hb("a", "s1", "k1"), leased("k1", 1020, 3)),
			call(0, 8, 9, soonest("a"), released("s2", 2)),
			call(0, 10, 11, soonest("a"), released("s3", 1)),
		}},
		{"an ambiguous acquire that took effect", []porcupine.Operation{
			call(0, 0, never, acq("a", "s1"), ambiguous),
			call(1, 5, 6, list("a"), listed(liveStream{"s1", 1000})),
			call(1, 7, 8, acq("a", "s1"), leased("k1", 1007, 1)),
		}},
		{"an ambiguous acquire that did not", []porcupine.Operation{
			call(0, 0, never, acq("a", "s1"), ambiguous),
			call(1, 5, 6, list("a"), listed()),
		}},
		{"users do not share the limit", []porcupine.Operation{
			call(0, 0, 10, acq("a", "s1"), leased("k1", 1000, 1)),
			call(1, 0, 10, acq("a", "s2"), leased("k2", 1000, 2)),
			call(2, 0, 10, acq("a", "s3"), leased("k3", 1000, 3)),
			call(3, 0, 10, acq("b", "s1"), leased("k4", 1000, 1)),
			call(4, 0, 10, acq("b", "s2"), leased("k5", 1000, 2)),
			call(5, 0, 10, acq("b", "s3"), leased("k6", 1000, 3)),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkHandMade(t, tt.history, porcupine.Ok)
		})
	}
}

func TestModelRejectsImpossibleHistories(t *testing.T) {
	tests := []struct {
		name    string
		history []porcupine.Operation
	}{
		{"four overlapping admissions under a limit of 3", []porcupine.Operation{
			call(0, 0, 10, acq("a", "s1"), leased("k1", 1000, 1)),
			call(1, 0, 10, acq("a", "s2"), leased("k2", 1000, 2)),
			call(2, 0, 10, acq("a", "s3"), leased("k3", 1000, 3)),
			call(3, 0, 10, acq("a", "s4"), leased("k4", 1000, 3)),
		}},
		{"a heartbeat succeeds after the release returned", []porcupine.Operation{
			call(0, 0, 1, acq("a", "s1"), leased("k1", 1000, 1)),
			call(0, 10, 20, rel("a", "s1", "k1"), released("s1", 0)),
			call(1, 30, 40, hb("a", "s1", "k1"), leased("k1", 1030, 1)),
		}},
		{"two keys for one live stream", []porcupine.Operation{
			call(0, 0, 10, acq("a", "s1"), leased("k1", 1000, 1)),
			call(1, 5, 15, acq("a", "s1"), leased("k2", 1005, 1)),
		}},
		{"a release with a wrong key frees the stream", []porcupine.Operation{
			call(0, 0, 1, acq("a", "s1"), leased("k1", 1000, 1)),
			call(0, 2, 3, rel("a", "s1", "k9"), released("s1", 0)),
		}},
		{"a heartbeat with a wrong key succeeds", []porcupine.Operation{
			call(0, 0, 1, acq("a", "s1"), leased("k1", 1000, 1)),
			call(0, 2, 3, hb("a", "s1", "k9"), leased("k9", 1002, 1)),
		}},
		{"a mismatch on a stream nobody holds", []porcupine.Operation{
			call(0, 0, 1, hb("a", "s1", "k1"), mismatch),
		}},
		{"a wrong active count", []porcupine.Operation{
			call(0, 0, 1, acq("a", "s1"), leased("k1", 1000, 1)),
			call(0, 2, 3, acq("a", "s2"), leased("k2", 1002, 1)),
		}},
		{"a list misses a live stream", []porcupine.Operation{
			call(0, 0, 1, acq("a", "s1"), leased("k1", 1000, 1)),
			call(0, 2, 3, acq("a", "s2"), leased("k2", 1002, 2)),
			call(0, 4, 5, list("a"), listed(liveStream{"s1", 1000})),
		}},
		{"a list out of expiry order", []porcupine.Operation{
			call(0, 0, 1, acq("a", "s1"), leased("k1", 1000, 1)),
			call(0, 2, 3, acq("a", "s2"), leased("k2", 1002, 2)),
			call(0, 4, 5, list("a"), listed(liveStream{"s2", 1002}, liveStream{"s1", 1000})),
		}},
		{"a refusal below the limit", []porcupine.Operation{
			call(0, 0, 1, acq("a", "s1"), leased("k1", 1000, 1)),
			call(0, 2, 3, acq("a", "s2"), refused(liveStream{"s1", 1000})),
		}},
		{"the legacy release frees a lease that does not expire soonest", []porcupine.Operation{
			call(0, 0, 1, acq("a", "s1"), leased("k1", 1000, 1)),
			call(0, 2, 3, acq("a", "s2"), leased("k2", 1002, 2)),
			call(0, 4, 5, soonest("a"), released("s2", 1)),
		}},
		{"a heartbeat shortens the lease", []porcupine.Operation{
			call(0, 0, 1, acq("a", "s1"), leased("k1", 1000, 1)),
			call(0, 2, 3, hb("a", "s1", "k1"), leased("k1", 990, 1)),
		}},
		{"an ambiguous acquire cannot pass the limit", []porcupine.Operation{
			call(0, 0, 1, acq("a", "s1"), leased("k1", 1000, 1)),
			call(0, 2, 3, acq("a", "s2"), leased("k2", 1002, 2)),
			call(0, 4, 5, acq("a", "s3"), leased("k3", 1004, 3)),
			call(1, 6, never, acq("a", "s4"), ambiguous),
			call(0, 8, 9, list("a"), listed(liveStream{"s1", 1000}, liveStream{"s2", 1002}, liveStream{"s3", 1004}, liveStream{"s4", 1006})),
		}},
		{"one user's bad history among good ones", []porcupine.Operation{
			call(0, 0, 10, acq("a", "s1"), leased("k1", 1000, 1)),
			call(1, 0, 10, acq("b", "s1"), leased("k2", 1000, 1)),
			call(1, 20, 30, acq("b", "s1"), leased("k3", 1020, 1)),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vs := checkHandMade(t, tt.history, porcupine.Illegal)
			// The failure report must point at a visualisation there is.
			if len(vs) != 1 || vs[0].result != porcupine.Illegal || vs[0].err != nil {
				t.Fatalf("visualisations %s, want one for the user with the impossible history", describe(vs))
			}
			if info, err := os.Stat(vs[0].path); err != nil || info.Size() == 0 {
				t.Errorf("visualisation %s: %v", vs[0].path, err)
			}
		})
	}
}

// checkHandMade checks history with the load test's checker, in its
// operation form and in its event form (the other partition function), and
// fails unless both give want. It returns the visualisations written.
func checkHandMade(t *testing.T, history []porcupine.Operation, want porcupine.CheckResult) []visualisation {
	t.Helper()
	model := newModel(streamLimit)
	got, vs := checkHistory(model, history, 10*time.Second, t.TempDir())
	if got != want {
		t.Errorf("operations: %s, want %s", got, want)
	}
	if got := porcupine.CheckEventsTimeout(model, events(history), 10*time.Second); got != want {
		t.Errorf("events: %s, want %s", got, want)
	}
	return vs
}

// events is history in porcupine's event form: calls and returns in time
// order, calls first on a tie (porcupine's intervals are closed).
func events(history []porcupine.Operation) []porcupine.Event {
	type timed struct {
		at int64
		ev porcupine.Event
	}
	var all []timed
	for id, op := range history {
		all = append(all,
			timed{op.Call, porcupine.Event{ClientId: op.ClientId, Kind: porcupine.CallEvent, Value: op.Input, Id: id}},
			timed{op.Return, porcupine.Event{ClientId: op.ClientId, Kind: porcupine.ReturnEvent, Value: op.Output, Id: id}})
	}
	slices.SortStableFunc(all, func(a, b timed) int {
		switch {
		case a.at != b.at:
			return cmp.Compare(a.at, b.at)
		case a.ev.Kind == b.ev.Kind:
			return 0
		case a.ev.Kind == porcupine.CallEvent:
			return -1
		}
		return 1
	})
	evs := make([]porcupine.Event, len(all))
	for i, x := range all {
		evs[i] = x.ev
	}
	return evs
}
