package jepsen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/google/uuid"
)

// load describes the traffic: few users and streams, so that every user
// sits at the limit most of the time and calls on one lease overlap.
type load struct {
	replicas []string // base URLs of the limiterd processes
	users    []string
	streams  []string // the same stream IDs for every user
	workers  int
	timeout  time.Duration // per request: a hung request ends as ambiguous
}

// meta is what the visualisation shows of a call beyond its input and output.
type meta struct {
	replica int
	route   string // the route taken where a kind has several
	keyNote string // which key the client chose: latest, stale, random, none
}

func (m meta) String() string {
	s := fmt.Sprintf("replica %d", m.replica)
	if m.route != "" {
		s += ", " + m.route
	}
	if m.keyNote != "" {
		s += ", key " + m.keyNote
	}
	return s
}

// surprise is an answer the API does not document for the call: it fails the
// test, and the history models it as ambiguous.
type surprise struct {
	in  input
	why string
}

// worker is one simulated player: its own HTTP client, its own random
// source, and the keys it has been given.
type worker struct {
	load   *load
	rng    *rand.Rand
	client *http.Client
	start  time.Time // history times are nanoseconds since start, on the monotonic clock

	// keys holds, per "user/stream", the keys this worker was handed, the
	// latest last; a few stale ones are kept to send on purpose.
	keys map[string][]string
	// playing holds the streams this worker last acquired, as [user,
	// stream]: like a player, it mostly heartbeats and releases those,
	// which is where the right key is likely.
	playing [][2]string

	clientID  int        // porcupine's client ID for visualisation
	nextID    func() int // a fresh client ID after an ambiguous call
	ops       []porcupine.Operation
	surprises []surprise
}

const (
	keysKept    = 4 // keys remembered per stream
	playingKept = 3 // streams a worker heartbeats and releases by preference
)

// run sends calls made in epoch until ctx ends.
func (w *worker) run(ctx context.Context, epoch int) {
	for ctx.Err() == nil {
		in, m := w.next()
		in.epoch = epoch
		w.record(in, m)
	}
}

// record makes the call, adds it to the worker's history and returns its
// output.
func (w *worker) record(in input, m meta) output {
	callAt := time.Since(w.start).Nanoseconds()
	out, why := w.do(in, m)
	returnAt := time.Since(w.start).Nanoseconds()
	if why != "" {
		w.surprises = append(w.surprises, surprise{in, why})
		out = output{outcome: outAmbiguous, why: "undocumented: " + why}
	}
	w.ops = append(w.ops, porcupine.Operation{ClientId: w.clientID, Input: in, Call: callAt, Output: out, Return: returnAt, Metadata: m})
	if out.outcome == outAmbiguous {
		// It may take effect at any time from now on: runLoad moves its
		// return to after the end of the run. The player carries on as
		// another client, so that its later calls do not overlap its
		// own pending one in the visualisation.
		w.clientID = w.nextID()
	}
	w.remember(in, out)
	return out
}

// reset ends an epoch, with no call in flight: it releases every live
// stream of user, without a key, and lists the user's streams, which must
// then be none. The calls are part of the history, so the check proves that
// the next epoch starts from the empty state.
func (w *worker) reset(user string, epoch int) {
	m := meta{route: "epoch reset"}
	out := w.record(input{kind: opList, user: user, epoch: epoch}, m)
	for _, ls := range out.live {
		m.replica = (m.replica + 1) % len(w.load.replicas)
		w.record(input{kind: opRelease, user: user, stream: ls.stream, epoch: epoch}, m)
	}
	m.replica = (m.replica + 1) % len(w.load.replicas)
	w.record(input{kind: opList, user: user, epoch: epoch}, m)
}

// next picks a call: high contention on few leases, right keys often, stale,
// random and missing keys too.
func (w *worker) next() (input, meta) {
	l := w.load
	in := input{user: l.users[w.rng.IntN(len(l.users))]}
	m := meta{replica: w.rng.IntN(len(l.replicas))}
	stream := l.streams[w.rng.IntN(len(l.streams))]
	p := w.rng.IntN(100)
	if p >= 35 && p < 82 && len(w.playing) > 0 && w.rng.IntN(100) < 70 {
		us := w.playing[w.rng.IntN(len(w.playing))]
		in.user, stream = us[0], us[1]
	}
	switch {
	case p < 35:
		in.kind, in.stream = opAcquire, stream
	case p < 60:
		in.kind, in.stream = opHeartbeat, stream
		in.key, m.keyNote = w.pickKey(in.user, stream, false)
	case p < 82:
		in.kind, in.stream = opRelease, stream
		in.key, m.keyNote = w.pickKey(in.user, stream, true)
		m.route = "DELETE /api/streams"
		if p >= 77 {
			m.route = "PATCH /api/users?stream_id" // the legacy route, naming the stream
		}
	case p < 85:
		in.kind = opReleaseSoonest
	default:
		in.kind = opList
	}
	return in, m
}

// pickKey chooses the key to send: mostly the latest one this worker was
// given for the stream, sometimes an older one, a random one, or (for a
// release, which then frees unconditionally) none.
func (w *worker) pickKey(user, stream string, mayOmit bool) (key, note string) {
	known := w.keys[user+"/"+stream]
	p := w.rng.IntN(100)
	switch {
	case mayOmit && p < 20:
		return "", "none"
	case p < 30:
		return uuid.NewString(), "random"
	case p < 45 && len(known) > 1:
		return known[w.rng.IntN(len(known)-1)], "stale"
	case len(known) > 0:
		return known[len(known)-1], "latest"
	}
	return uuid.NewString(), "random"
}

// remember keeps a key the service handed out.
func (w *worker) remember(in input, out output) {
	if out.outcome != outOK || (in.kind != opAcquire && in.kind != opHeartbeat) {
		return
	}
	if in.kind == opAcquire {
		us := [2]string{in.user, in.stream}
		w.playing = slices.DeleteFunc(w.playing, func(p [2]string) bool { return p == us })
		if len(w.playing) == playingKept {
			w.playing = w.playing[1:]
		}
		w.playing = append(w.playing, us)
	}
	id := in.user + "/" + in.stream
	known := w.keys[id]
	if len(known) > 0 && known[len(known)-1] == out.key {
		return
	}
	if len(known) == keysKept {
		known = known[1:]
	}
	w.keys[id] = append(known, out.key)
}

// reply holds every field of the bodies the calls can get back.
type reply struct {
	Error          string          `json:"error"`
	StreamKey      string          `json:"stream_key"`
	UserID         string          `json:"user_id"`
	StreamID       string          `json:"stream_id"`
	ActiveStreams  json.RawMessage `json:"active_streams"` // a count, or a list in a list or a 403
	LeaseExpiresAt time.Time       `json:"lease_expires_at"`
	Released       *bool           `json:"released"`
	Degraded       bool            `json:"degraded"`
}

// do sends the call to the chosen replica and reads its answer. A non-empty
// why is an answer the API does not give to that call.
func (w *worker) do(in input, m meta) (out output, why string) {
	req, err := w.request(in, m)
	if err != nil {
		return output{}, "building the request: " + err.Error()
	}
	resp, err := w.client.Do(req)
	if err != nil {
		// No answer: the call may or may not have reached Redis.
		return output{outcome: outAmbiguous, why: "transport: " + err.Error()}, ""
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return output{outcome: outAmbiguous, why: "reading the body: " + err.Error()}, ""
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		// A Redis timeout: the script may still have run.
		return output{outcome: outAmbiguous, why: "503: " + strings.TrimSpace(string(data))}, ""
	}
	var r reply
	if err := json.Unmarshal(data, &r); err != nil {
		return output{}, fmt.Sprintf("%d with a body that is not JSON: %q", resp.StatusCode, data)
	}
	out, ok := interpret(in, resp.StatusCode, r)
	if !ok {
		return output{}, fmt.Sprintf("%s answered %d %s", m, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	return out, ""
}

func (w *worker) request(in input, m meta) (*http.Request, error) {
	base := w.load.replicas[m.replica]
	user, stream := url.PathEscape(in.user), url.PathEscape(in.stream)
	switch in.kind {
	case opAcquire:
		return http.NewRequest(http.MethodGet, base+"/api/streams/"+user+"/"+stream, nil)
	case opHeartbeat:
		body, _ := json.Marshal(map[string]string{"stream_key": in.key})
		req, err := http.NewRequest(http.MethodPost, base+"/api/streams/"+user+"/"+stream+"/heartbeat", strings.NewReader(string(body)))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
		}
		return req, err
	case opRelease:
		q := url.Values{}
		if in.key != "" {
			q.Set("stream_key", in.key)
		}
		target := base + "/api/streams/" + user + "/" + stream
		method := http.MethodDelete
		if strings.HasPrefix(m.route, "PATCH") {
			q.Set("stream_id", in.stream)
			target, method = base+"/api/users/"+user, http.MethodPatch
		}
		if len(q) > 0 {
			target += "?" + q.Encode()
		}
		return http.NewRequest(method, target, nil)
	case opReleaseSoonest:
		return http.NewRequest(http.MethodPatch, base+"/api/users/"+user, nil)
	case opList:
		return http.NewRequest(http.MethodGet, base+"/api/users/"+user+"/streams", nil)
	}
	return nil, errors.New("unknown call")
}

// interpret turns a documented answer into the model's output; false for any
// other answer.
func interpret(in input, status int, r reply) (output, bool) {
	var out output
	switch {
	case status == http.StatusOK && (in.kind == opAcquire || in.kind == opHeartbeat):
		// degraded leases are fail-open answers without Redis: never
		// expected here, since the replicas run with REDIS_FAILURE_MODE=closed.
		if r.Degraded || r.StreamKey == "" || r.StreamID != in.stream || r.UserID != in.user || r.LeaseExpiresAt.IsZero() ||
			json.Unmarshal(r.ActiveStreams, &out.active) != nil {
			return output{}, false
		}
		out.outcome, out.key, out.expiry = outOK, r.StreamKey, r.LeaseExpiresAt.UnixMilli()
		return out, true
	case status == http.StatusOK && (in.kind == opRelease || in.kind == opReleaseSoonest):
		if r.Released == nil || json.Unmarshal(r.ActiveStreams, &out.active) != nil {
			return output{}, false
		}
		out.outcome, out.released, out.stream = outOK, *r.Released, r.StreamID
		return out, true
	case status == http.StatusOK && in.kind == opList,
		status == http.StatusForbidden && in.kind == opAcquire && r.Error == "stream_limit_reached":
		var live []struct {
			StreamID       string    `json:"stream_id"`
			LeaseExpiresAt time.Time `json:"lease_expires_at"`
		}
		if err := json.Unmarshal(r.ActiveStreams, &live); err != nil || live == nil {
			return output{}, false
		}
		out.outcome = outOK
		if status == http.StatusForbidden {
			out.outcome = outRefused
		}
		out.live = make([]liveStream, len(live))
		for i, ls := range live {
			out.live[i] = liveStream{stream: ls.StreamID, expiry: ls.LeaseExpiresAt.UnixMilli()}
		}
		return out, true
	case status == http.StatusConflict && r.Error == "stream_key_mismatch" && (in.kind == opHeartbeat || in.kind == opRelease) && in.key != "":
		return output{outcome: outMismatch}, true
	case status == http.StatusGone && r.Error == "lease_expired" && in.kind == opHeartbeat:
		return output{outcome: outInactive}, true
	}
	return output{}, false
}

// resultLabel names a call's result for the tally the test logs.
func resultLabel(in input, out output) string {
	switch {
	case out.outcome == outAmbiguous:
		why, _, _ := strings.Cut(out.why, ":")
		return "ambiguous (" + why + ")"
	case out.outcome == outOK && (in.kind == opRelease || in.kind == opReleaseSoonest) && out.released:
		return "released"
	case out.outcome == outOK && (in.kind == opRelease || in.kind == opReleaseSoonest):
		return "nothing live"
	}
	return out.outcome.String()
}
