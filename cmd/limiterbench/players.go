package main

import (
	"container/heap"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// mixLease is row d's LEASE_TTL: short, so that renew_after_seconds is 1
// and a player's session of heartbeats fits in seconds (time compressed
// thirty-fold from the default 90s lease).
const mixLease = 3 * time.Second

// players runs row d: a limiterd with a short lease, and vegeta at a fixed
// rate whose every request is the next thing some player has to do.
func (b *bench) players(ctx context.Context, rate float64) (result, error) {
	srv, base, err := startLimiterd(ctx, b.cfg.limiterd, b.addr, append([]string{
		"STREAM_LIMIT=" + strconv.Itoa(b.cfg.limit), "LEASE_TTL=" + mixLease.String(),
	}, b.cfg.limiterdEnv...))
	if err != nil {
		return result{}, err
	}
	defer srv.stop()
	mix := newPlayerMix(base, "d0", b.cfg.users)
	var st attackStats
	cpu, cmds, err := b.measure(ctx, cpuMeter{redisPID: b.redis.pid(), limiterdPID: srv.pid()}, func() error {
		st = b.attack(ctx, mix.next, vegeta.Rate{Freq: max(1, int(rate)), Per: time.Second}, b.cfg.mixDuration,
			uint64(b.cfg.clients), 0, -1, mix.expected, mix.observe)
		return ctx.Err()
	})
	if err != nil {
		return result{}, err
	}
	if err := srv.alive(); err != nil {
		return result{}, err
	}
	if st.ops == 0 || st.errors == st.ops {
		return result{}, fmt.Errorf("every request failed, first: %s", st.firstErr)
	}
	if st.errors > 0 {
		b.progress("d: %d errors, first: %s", st.errors, st.firstErr)
	}
	return result{
		id:      "d",
		load:    fmt.Sprintf("player mix, open loop, %d users, LEASE_TTL=%v", b.cfg.users, mixLease),
		ops:     st.ops,
		wall:    st.wall,
		rate:    float64(st.ops) / st.wall.Seconds(),
		offered: float64(max(1, int(rate))),
		lat:     summarize(&st.metrics.Latencies),
		errors:  st.errors,
		mix:     mix.summary(),
		calls:   float64(cmds.scriptCalls()) / float64(st.ops),
		cpu:     cpu,
	}, nil
}

// playerMix plays many video players against the service. A new player
// picks a user (most often any of users; one time in five one of a few
// households that watch on many screens, so some acquires are refused) and
// one of six devices, acquires, heartbeats every renew_after_seconds one to
// six times, then releases (nine in ten) or vanishes and lets its lease run
// out. Due heartbeats and releases go first; a new player starts only when
// nothing is due, so the rate stays what vegeta paces.
type playerMix struct {
	base, tag  string
	users      int
	households int
	jsonHeader http.Header

	mu       sync.Mutex
	due      eventQueue
	sessions map[string]*session // by user + "/" + stream
	n        mixCounts
}

type session struct {
	user, stream, key string
	every             time.Duration // renew_after_seconds of the acquire
	left              int           // heartbeats still to send
}

type mixCounts struct {
	acquires, refused, heartbeats, late, releases, abandoned int64
}

func newPlayerMix(base, tag string, users int) *playerMix {
	return &playerMix{
		base: base, tag: tag, users: users, households: max(1, users/500),
		jsonHeader: http.Header{"Content-Type": []string{"application/json"}},
		sessions:   map[string]*session{},
	}
}

const devicesPerUser = 6

// next is the vegeta.Targeter: it is called by vegeta's workers at once.
func (p *playerMix) next(t *vegeta.Target) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if len(p.due) > 0 && !p.due[0].at.After(now) {
		e := heap.Pop(&p.due).(event)
		path := p.base + "/api/streams/" + e.s.user + "/" + e.s.stream
		if e.release {
			t.Method, t.URL = http.MethodDelete, path+"?stream_key="+e.s.key
		} else {
			t.Method, t.URL = http.MethodPost, path+"/heartbeat"
			t.Body, t.Header = []byte(`{"stream_key":"`+e.s.key+`"}`), p.jsonHeader
		}
		return nil
	}
	user := rand.IntN(p.users)
	if rand.IntN(5) == 0 {
		user = rand.IntN(p.households)
	}
	t.Method = http.MethodGet
	t.URL = p.base + "/api/streams/" + userID(p.tag, user) + "/" + streamID(rand.IntN(devicesPerUser))
	return nil
}

func (p *playerMix) expected(code uint16) bool {
	return code == http.StatusOK || code == http.StatusForbidden || code == http.StatusGone
}

// observe reads each answer and schedules what that player does next.
func (p *playerMix) observe(res *vegeta.Result) {
	rest, ok := strings.CutPrefix(res.URL, p.base+"/api/streams/")
	if !ok {
		return
	}
	rest, _, _ = strings.Cut(rest, "?")
	parts := strings.Split(rest, "/")
	if len(parts) < 2 {
		return
	}
	id := parts[0] + "/" + parts[1]
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	switch res.Method {
	case http.MethodGet:
		p.n.acquires++
		if res.Code == http.StatusForbidden {
			p.n.refused++
			return
		}
		var body struct {
			StreamKey  string `json:"stream_key"`
			RenewAfter int    `json:"renew_after_seconds"`
		}
		if res.Code != http.StatusOK || json.Unmarshal(res.Body, &body) != nil || body.StreamKey == "" {
			return
		}
		if s := p.sessions[id]; s != nil && s.key == body.StreamKey {
			return // this device was already playing: same lease, renewed
		}
		s := &session{user: parts[0], stream: parts[1], key: body.StreamKey,
			every: time.Duration(max(body.RenewAfter, 1)) * time.Second, left: 1 + rand.IntN(6)}
		p.sessions[id] = s
		heap.Push(&p.due, event{at: now.Add(s.every), s: s})
	case http.MethodPost:
		p.n.heartbeats++
		s := p.sessions[id]
		if res.Code == http.StatusGone {
			p.n.late++ // the lease ran out first: the player must acquire again
			delete(p.sessions, id)
			return
		}
		if res.Code != http.StatusOK || s == nil {
			return
		}
		s.left--
		switch {
		case s.left > 0:
			heap.Push(&p.due, event{at: now.Add(s.every), s: s})
		case rand.IntN(10) == 0:
			p.n.abandoned++
			delete(p.sessions, id)
		default:
			heap.Push(&p.due, event{at: now, s: s, release: true})
		}
	case http.MethodDelete:
		p.n.releases++
		delete(p.sessions, id)
	}
}

func (p *playerMix) summary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.n
	total := n.acquires + n.heartbeats + n.releases
	if total == 0 {
		return "?"
	}
	pct := func(a, b int64) string {
		if b == 0 {
			return "0"
		}
		return strconv.FormatFloat(100*float64(a)/float64(b), 'f', 0, 64)
	}
	return fmt.Sprintf("acq %s%% (%s%% refused) · hb %s%% (%s%% late) · rel %s%%",
		pct(n.acquires, total), pct(n.refused, n.acquires),
		pct(n.heartbeats, total), pct(n.late, n.heartbeats), pct(n.releases, total))
}

// event is a heartbeat or a release a player will send at a given time.
type event struct {
	at      time.Time
	s       *session
	release bool
}

// eventQueue is a min-heap of events by time.
type eventQueue []event

func (q eventQueue) Len() int           { return len(q) }
func (q eventQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q eventQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)        { *q = append(*q, x.(event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}
