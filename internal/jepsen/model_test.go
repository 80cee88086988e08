package jepsen

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// The sequential model of the API, one state per user (the history is
// partitioned by user, since the service never lets one user's calls affect
// another's).
//
// A user's state is the set of live leases: stream -> (key, expiry). Keys and
// expiries are whatever the service answered: the model takes a new key from
// an admitted acquire and an expiry from every acquire or heartbeat, and then
// checks every later answer against them. Expiries are modelled exactly, from
// the lease_expires_at of those answers, rather than guessed from the order
// of linearization points: two renewals in the same Redis millisecond get the
// same expiry, and Redis then orders them by stream ID, which no order of
// calls could predict. With exact expiries the model can demand that the
// legacy release frees precisely the lease that expires soonest (ties by
// stream ID, as ZRANGE orders them), that lists come soonest first with the
// right expiries, and that a renewal never shortens a lease.
//
// An ambiguous call (transport error, 503, an answer the test did not
// expect) may or may not have taken effect, so the model is
// nondeterministic: such a call leads to every state it could have left. A
// key or expiry it may have written is unknown ("" and 0) until a later
// answer reveals it; unknown values match anything.

// opKind is what a call asked for.
type opKind uint8

const (
	opAcquire        opKind = iota // GET /api/streams/{u}/{s}
	opHeartbeat                    // POST /api/streams/{u}/{s}/heartbeat
	opRelease                      // DELETE /api/streams/{u}/{s}, or PATCH /api/users/{u}?stream_id=s
	opReleaseSoonest               // PATCH /api/users/{u} without a stream: the lease that expires soonest
	opList                         // GET /api/users/{u}/streams
)

var opNames = [...]string{"acquire", "heartbeat", "release", "release-soonest", "list"}

func (k opKind) String() string { return opNames[k] }

// input is one call, as porcupine's Operation.Input.
type input struct {
	kind   opKind
	user   string
	stream string // "" for opReleaseSoonest and opList
	key    string // heartbeat and release: the stream_key sent, "" for none
	// epoch is the stretch of the run the call was made in. Between
	// epochs no call is in flight and every user is emptied by checked
	// calls, so each user's epoch starts from the empty state and can be
	// checked alone (see partitionByUser).
	epoch int
}

// outcome is how a call ended.
type outcome uint8

const (
	outOK        outcome = iota // 200
	outRefused                  // 403 stream_limit_reached
	outMismatch                 // 409 stream_key_mismatch
	outInactive                 // 410 lease_expired
	outAmbiguous                // no answer, a 503 or an unexpected one: it may or may not have taken effect
)

var outcomeNames = [...]string{"ok", "refused", "mismatch", "inactive", "ambiguous"}

func (o outcome) String() string { return outcomeNames[o] }

// liveStream is one entry of a list or of a 403's active_streams.
type liveStream struct {
	stream string
	expiry int64 // Unix ms
}

// output is what a call returned, as porcupine's Operation.Output.
type output struct {
	outcome  outcome
	key      string       // acquire and heartbeat 200: stream_key
	expiry   int64        // acquire and heartbeat 200: lease_expires_at, Unix ms
	stream   string       // release 200: stream_id ("" when the legacy release found none)
	released bool         // release 200
	active   int          // acquire, heartbeat and release 200: active_streams
	live     []liveStream // list 200 and acquire 403: active_streams, in the order sent
	why      string       // outAmbiguous: what happened, for people
}

// lease is one live lease of the model. key "" and expiry 0 mean unknown:
// written by a call whose answer was lost.
type lease struct {
	stream string
	key    string
	expiry int64 // Unix ms
}

// userState is a user's live leases sorted by stream ID. A state is never
// changed once made: every step builds a new one.
type userState []lease

func (st userState) find(stream string) (int, bool) {
	return slices.BinarySearchFunc(st, stream, func(l lease, s string) int { return strings.Compare(l.stream, s) })
}

// with returns st with l added, or put in place of the lease of its stream.
func (st userState) with(l lease) userState {
	i, found := st.find(l.stream)
	next := slices.Clone(st)
	if found {
		next[i] = l
		return next
	}
	return slices.Insert(next, i, l)
}

// without returns st without the lease of stream.
func (st userState) without(stream string) userState {
	i, found := st.find(stream)
	if !found {
		return st
	}
	return slices.Delete(slices.Clone(st), i, i+1)
}

// keyMatches says whether key can be the live lease's key.
func (l lease) keyMatches(key string) bool { return l.key == "" || l.key == key }

// notShortened says whether expiry can follow l's: leases never shrink.
func (l lease) notShortened(expiry int64) bool { return l.expiry == 0 || expiry >= l.expiry }

// expiresBefore says whether l comes before m in Redis's order of the sorted
// set (score, then member); true when either expiry is unknown.
func (l lease) expiresBefore(m lease) bool {
	if l.expiry == 0 || m.expiry == 0 {
		return true
	}
	return cmp.Or(cmp.Compare(l.expiry, m.expiry), strings.Compare(l.stream, m.stream)) < 0
}

// mayBeSoonest says whether the lease of stream can be the one that expires
// soonest.
func (st userState) mayBeSoonest(stream string) bool {
	i, found := st.find(stream)
	if !found {
		return false
	}
	for j, other := range st {
		if j != i && !st[i].expiresBefore(other) {
			return false
		}
	}
	return true
}

// observeLive checks a listed set of live streams against st: the same
// streams, soonest expiry first (ties by stream ID), with the expiries st
// knows. It returns st with the expiries it did not know.
func (st userState) observeLive(live []liveStream) (userState, bool) {
	if len(live) != len(st) {
		return nil, false
	}
	next := st
	for n, ls := range live {
		if n > 0 && cmp.Or(cmp.Compare(live[n-1].expiry, ls.expiry), strings.Compare(live[n-1].stream, ls.stream)) >= 0 {
			return nil, false
		}
		i, found := st.find(ls.stream)
		switch {
		case !found:
			return nil, false
		case st[i].expiry == 0:
			next = next.with(lease{stream: ls.stream, key: st[i].key, expiry: ls.expiry})
		case st[i].expiry != ls.expiry:
			return nil, false
		}
	}
	return next, true
}

// step returns every state st can move to by the call in with answer out;
// none when the answer is impossible from st.
func step(limit int, st userState, in input, out output) []userState {
	if out.outcome == outAmbiguous {
		return stepAmbiguous(limit, st, in)
	}
	i, live := st.find(in.stream)
	switch in.kind {
	case opAcquire:
		switch {
		case out.outcome == outOK && live: // renewed: same key, same count, never shorter
			l := st[i]
			if l.keyMatches(out.key) && out.key != "" && out.active == len(st) && l.notShortened(out.expiry) {
				return []userState{st.with(lease{stream: in.stream, key: out.key, expiry: out.expiry})}
			}
		case out.outcome == outOK: // admitted, under the limit, with the key it returned
			if len(st) < limit && out.key != "" && out.active == len(st)+1 {
				return []userState{st.with(lease{stream: in.stream, key: out.key, expiry: out.expiry})}
			}
		case out.outcome == outRefused: // at the limit, nothing written
			if !live && len(st) >= limit {
				if next, ok := st.observeLive(out.live); ok {
					return []userState{next}
				}
			}
		}
	case opHeartbeat:
		switch out.outcome {
		case outOK:
			if live && st[i].keyMatches(in.key) && out.key == in.key && out.active == len(st) && st[i].notShortened(out.expiry) {
				return []userState{st.with(lease{stream: in.stream, key: in.key, expiry: out.expiry})}
			}
		case outMismatch:
			if live && st[i].key != in.key {
				return []userState{st}
			}
		case outInactive:
			if !live {
				return []userState{st}
			}
		}
	case opRelease:
		switch {
		case out.outcome == outOK && out.released:
			if live && (in.key == "" || st[i].keyMatches(in.key)) && out.stream == in.stream && out.active == len(st)-1 {
				return []userState{st.without(in.stream)}
			}
		case out.outcome == outOK:
			if !live && out.stream == in.stream && out.active == len(st) {
				return []userState{st}
			}
		case out.outcome == outMismatch:
			if live && in.key != "" && st[i].key != in.key {
				return []userState{st}
			}
		}
	case opReleaseSoonest:
		switch {
		case out.outcome == outOK && out.released:
			if st.mayBeSoonest(out.stream) && out.active == len(st)-1 {
				return []userState{st.without(out.stream)}
			}
		case out.outcome == outOK:
			if len(st) == 0 && out.stream == "" && out.active == 0 {
				return []userState{st}
			}
		}
	case opList:
		if out.outcome == outOK {
			if next, ok := st.observeLive(out.live); ok {
				return []userState{next}
			}
		}
	}
	return nil
}

// stepAmbiguous returns st (the call did nothing) and every state the call
// could have left had it run.
func stepAmbiguous(limit int, st userState, in input) []userState {
	next := []userState{st}
	i, live := st.find(in.stream)
	switch in.kind {
	case opAcquire:
		switch {
		case live: // renewed to an unknown expiry
			next = append(next, st.with(lease{stream: in.stream, key: st[i].key}))
		case len(st) < limit: // admitted with a key nobody saw
			next = append(next, st.with(lease{stream: in.stream}))
		}
	case opHeartbeat:
		if live && st[i].keyMatches(in.key) {
			next = append(next, st.with(lease{stream: in.stream, key: in.key}))
		}
	case opRelease:
		if live && (in.key == "" || st[i].keyMatches(in.key)) {
			next = append(next, st.without(in.stream))
		}
	case opReleaseSoonest:
		for _, l := range st {
			if st.mayBeSoonest(l.stream) {
				next = append(next, st.without(l.stream))
			}
		}
	}
	return next
}

// newModel is the porcupine model of a service with the given STREAM_LIMIT.
func newModel(limit int) porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Partition:      partitionByUser,
		PartitionEvent: partitionEventsByUser,
		Init:           func() []any { return []any{userState(nil)} },
		Step: func(state, in, out any) []any {
			var next []any
			for _, st := range step(limit, state.(userState), in.(input), out.(output)) {
				next = append(next, st)
			}
			return next
		},
		Equal: func(a, b any) bool {
			return slices.Equal(a.(userState), b.(userState))
		},
		Hash: func(state any) uint64 {
			h := fnv.New64a()
			for _, l := range state.(userState) {
				fmt.Fprintf(h, "%s\x00%s\x00%d\x00", l.stream, l.key, l.expiry)
			}
			return h.Sum64()
		},
		DescribeOperation: func(in, out any) string { return describeOperation(in.(input), out.(output)) },
		DescribeState:     func(state any) string { return describeState(state.(userState)) },
		DescribeOperationMetadata: func(meta any) string {
			if meta == nil {
				return ""
			}
			return fmt.Sprint(meta)
		},
	}
	return nm.ToModel()
}

// part names a partition: one user's calls in one epoch, or, from the
// user's first ambiguous call on, in every later epoch too.
type part struct {
	user  string
	epoch int
}

// partOf returns the partition of each call given whether any of a user's
// calls are ambiguous. Users share nothing, so their calls are checked
// apart. Each epoch starts with no call in flight and every user's leases
// released (see runLoad), so a user's epochs are checked apart too, each from
// the empty state; but an ambiguous call may take effect in any later epoch,
// so a user's epochs from its first ambiguous call on stay together.
func partOf(calls []input, ambiguous []bool) []part {
	first := map[string]int{} // user -> epoch of the user's first ambiguous call
	for i, in := range calls {
		if e, seen := first[in.user]; ambiguous[i] && (!seen || in.epoch < e) {
			first[in.user] = in.epoch
		}
	}
	parts := make([]part, len(calls))
	for i, in := range calls {
		p := part{in.user, in.epoch}
		if e, seen := first[in.user]; seen && e < p.epoch {
			p.epoch = e
		}
		parts[i] = p
	}
	return parts
}

// partitionByUser splits a history into partOf's partitions.
func partitionByUser(history []porcupine.Operation) [][]porcupine.Operation {
	calls, ambiguous := make([]input, len(history)), make([]bool, len(history))
	for i, op := range history {
		calls[i], ambiguous[i] = op.Input.(input), op.Output.(output).outcome == outAmbiguous
	}
	index := map[part]int{}
	var parts [][]porcupine.Operation
	for i, p := range partOf(calls, ambiguous) {
		n, ok := index[p]
		if !ok {
			n = len(parts)
			index[p] = n
			parts = append(parts, nil)
		}
		parts[n] = append(parts[n], history[i])
	}
	return parts
}

// partitionEventsByUser is partitionByUser for the event form of a history,
// where a return event finds its call through its Id.
func partitionEventsByUser(history []porcupine.Event) [][]porcupine.Event {
	callOf := map[int]int{} // event Id -> index in calls
	var calls []input
	var ambiguous []bool
	for _, ev := range history {
		if ev.Kind == porcupine.CallEvent {
			callOf[ev.Id] = len(calls)
			calls, ambiguous = append(calls, ev.Value.(input)), append(ambiguous, false)
		}
	}
	for _, ev := range history {
		if ev.Kind == porcupine.ReturnEvent && ev.Value.(output).outcome == outAmbiguous {
			ambiguous[callOf[ev.Id]] = true
		}
	}
	partOfCall := partOf(calls, ambiguous)
	index := map[part]int{}
	var parts [][]porcupine.Event
	for _, ev := range history {
		p := partOfCall[callOf[ev.Id]]
		n, ok := index[p]
		if !ok {
			n = len(parts)
			index[p] = n
			parts = append(parts, nil)
		}
		parts[n] = append(parts[n], ev)
	}
	return parts
}

// describeCall shows a call as "heartbeat(u0/s1 key=1a2b3c4d)".
func describeCall(in input) string {
	switch in.kind {
	case opAcquire:
		return fmt.Sprintf("%s(%s/%s)", in.kind, in.user, in.stream)
	case opHeartbeat, opRelease:
		return fmt.Sprintf("%s(%s/%s key=%s)", in.kind, in.user, in.stream, short(in.key))
	}
	return fmt.Sprintf("%s(%s)", in.kind, in.user)
}

func describeOperation(in input, out output) string {
	call := describeCall(in)
	var ret string
	switch {
	case out.outcome == outAmbiguous:
		ret = "ambiguous: " + out.why
	case out.outcome == outOK && (in.kind == opAcquire || in.kind == opHeartbeat):
		ret = fmt.Sprintf("key=%s until %s, %d live", short(out.key), clock(out.expiry), out.active)
	case out.outcome == outOK && (in.kind == opRelease || in.kind == opReleaseSoonest):
		ret = fmt.Sprintf("released=%t %s, %d live", out.released, out.stream, out.active)
	case out.outcome == outOK || out.outcome == outRefused:
		parts := make([]string, len(out.live))
		for i, ls := range out.live {
			parts[i] = ls.stream + " until " + clock(ls.expiry)
		}
		ret = fmt.Sprintf("%s [%s]", out.outcome, strings.Join(parts, ", "))
	default:
		ret = out.outcome.String()
	}
	return call + " -> " + ret
}

func describeState(st userState) string {
	parts := make([]string, len(st))
	for i, l := range st {
		parts[i] = fmt.Sprintf("%s: key=%s until %s", l.stream, short(l.key), clock(l.expiry))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// short is the start of a stream key: enough to tell keys apart on screen.
func short(key string) string {
	switch {
	case key == "":
		return "?"
	case len(key) > 8:
		return key[:8]
	}
	return key
}

// clock shows a Unix ms expiry as a time of day to the millisecond.
func clock(ms int64) string {
	if ms == 0 {
		return "?"
	}
	return time.UnixMilli(ms).UTC().Format("15:04:05.000")
}
