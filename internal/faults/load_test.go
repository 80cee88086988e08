package faults

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// loadConfig shapes a steady, bounded load: a fixed number of players, each
// the only client of its own users, so that each user's calls are sequential
// and the player's view of its leases can be compared with Redis's.
type loadConfig struct {
	players        int
	usersPerPlayer int
	streamsPerUser int           // more than streamLimit, so that some acquires are refused
	pace           time.Duration // pause between a player's calls
	replica        func(player int) int

	// reliable: Redis keeps every lease for the whole test, so a held stream
	// must never come back with another key, as expired, or as unknown.
	reliable bool
	// park: a call answered 503 is parked, with its user, until
	// allowRetries; the player then retries that same call until it gets an
	// answer, as a player honouring Retry-After does. Needs rdb.
	park bool
	rdb  *redis.Client
	// stopOnTransportError: a player stops at its first transport error
	// (its replica is gone).
	stopOnTransportError bool
}

// load runs the players until stop.
type load struct {
	t       *testing.T
	cfg     loadConfig
	c       *caller
	players []*player

	stopped  chan struct{}
	haltOnce sync.Once
	retries  chan struct{} // closed by allowRetries
	wg       sync.WaitGroup

	mu       sync.Mutex
	outcomes []outcome
	retried  []retryRecord
}

// player is one simulated video player with its own users.
type player struct {
	id       int
	replica  int
	users    []string
	held     map[string]map[string]string // user -> stream -> key, as the player believes
	parked   map[string]parkedCall        // user -> the call to retry
	rng      *rand.Rand
	inFlight atomic.Bool // a request is written and not yet answered
}

type parkedCall struct{ op, stream, key string }

// retryRecord is a parked call's retry and what Redis held around it.
type retryRecord struct {
	// keyBefore: for an acquire, the stream's key in Redis just before the
	// retry ("" when Redis did not hold the stream); heldBefore: whether the
	// player already held the stream before the call that got the 503.
	keyBefore  string
	heldBefore bool
	final      outcome  // the retry that got an answer other than 503
	members    []string // the user's set right after the retry, sorted
	fields     []string // the user's hash fields right after the retry, sorted
}

func startLoad(t *testing.T, c *caller, cfg loadConfig) *load {
	l := &load{t: t, cfg: cfg, c: c, stopped: make(chan struct{}), retries: make(chan struct{})}
	seed := uint64(time.Now().UnixNano())
	for i := range cfg.players {
		p := &player{
			id: i, replica: cfg.replica(i),
			held: map[string]map[string]string{}, parked: map[string]parkedCall{},
			rng: rand.New(rand.NewPCG(seed, uint64(i))),
		}
		for u := range cfg.usersPerPlayer {
			user := fmt.Sprintf("p%d-u%d", i, u)
			p.users = append(p.users, user)
			p.held[user] = map[string]string{}
		}
		l.players = append(l.players, p)
	}
	for _, p := range l.players {
		l.wg.Add(1)
		go l.play(p)
	}
	t.Cleanup(l.halt)
	return l
}

// stop ends the load, once every parked call has been resolved if retries
// are allowed, and returns every exchange made.
func (l *load) stop() []outcome {
	l.halt()
	return l.all()
}

// halt stops the players and waits for them; only the first call stops.
func (l *load) halt() {
	l.haltOnce.Do(func() { close(l.stopped) })
	l.wg.Wait()
}

// allowRetries lets players retry their parked calls.
func (l *load) allowRetries() { close(l.retries) }

func (l *load) all() []outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.outcomes)
}

func (l *load) retryRecords() []retryRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.retried)
}

func (l *load) record(o outcome) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.outcomes = append(l.outcomes, o)
}

func isOpen(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (l *load) play(p *player) {
	defer l.wg.Done()
	for {
		if isOpen(l.retries) && len(p.parked) > 0 {
			l.resolveParked(p)
			continue
		}
		if isOpen(l.stopped) {
			return
		}
		user, ok := p.freeUser()
		if !ok { // every user parked: wait for retries to be allowed
			select {
			case <-l.stopped:
				return
			case <-l.retries:
			}
			continue
		}
		op, stream, key := p.nextCall(user, l.cfg.streamsPerUser)
		o := l.do(p, op, user, stream, key, false)
		switch {
		case o.err != nil && l.cfg.stopOnTransportError:
			return
		case o.status == http.StatusServiceUnavailable && l.cfg.park:
			p.parked[user] = parkedCall{op, stream, key}
		default:
			l.apply(p, o)
		}
		select {
		case <-l.stopped:
		case <-time.After(l.cfg.pace):
		}
	}
}

func (l *load) do(p *player, op, user, stream, key string, retry bool) outcome {
	o := l.c.call(p.replica, op, user, stream, key, func() { p.inFlight.Store(true) })
	p.inFlight.Store(false)
	o.player, o.retry = p.id, retry
	l.record(o)
	return o
}

// freeUser picks one of the player's users that has no parked call.
func (p *player) freeUser() (string, bool) {
	var free []string
	for _, u := range p.users {
		if _, parked := p.parked[u]; !parked {
			free = append(free, u)
		}
	}
	if len(free) == 0 {
		return "", false
	}
	return free[p.rng.IntN(len(free))], true
}

// nextCall picks what the player does for user: mostly heartbeats of the
// streams it holds, some releases, and acquires of any stream (a stream it
// holds included: a re-acquire).
func (p *player) nextCall(user string, streams int) (op, stream, key string) {
	held := p.held[user]
	r := p.rng.Float64()
	if len(held) > 0 && r < 0.65 {
		ids := slices.Sorted(maps.Keys(held))
		stream = ids[p.rng.IntN(len(ids))]
		if r < 0.45 {
			return opHeartbeat, stream, held[stream]
		}
		return opRelease, stream, held[stream]
	}
	stream = fmt.Sprintf("s%d", p.rng.IntN(streams))
	return opAcquire, stream, held[stream]
}

// apply updates what the player believes it holds from an answer, and
// reports answers that break the API's promises.
func (l *load) apply(p *player, o outcome) {
	held := p.held[o.user]
	key, had := held[o.stream]
	// After a 503 the first call may have done its work: a retried release
	// may find nothing left to release.
	strict := l.cfg.reliable && !o.retry
	switch {
	case o.err != nil || o.status == http.StatusServiceUnavailable:
		// Unknown: an acquire may have been admitted, a release done. Keep
		// the belief; the next heartbeat tells.
	case !o.expected():
		// wantAnswers, called by each test on every exchange, reports it.
	case o.op == opAcquire && o.status == http.StatusOK:
		if had && l.cfg.reliable && o.key != key {
			l.t.Errorf("re-acquire of a live stream returned key %s, want its key %s: %v", o.key, key, o)
		}
		held[o.stream] = o.key
	case o.op == opAcquire: // 403
		if had && l.cfg.reliable {
			l.t.Errorf("acquire of a stream the player holds was refused: %v", o)
		}
		delete(held, o.stream)
	case o.op == opHeartbeat && o.status == http.StatusOK:
		if o.key != o.sentKey {
			l.t.Errorf("heartbeat answered key %s, want the key sent %s: %v", o.key, o.sentKey, o)
		}
	case o.op == opHeartbeat: // 409, 410
		if l.cfg.reliable {
			l.t.Errorf("heartbeat of a live lease with its key refused: %v", o)
		}
		delete(held, o.stream)
	case o.op == opRelease && o.status == http.StatusOK:
		if strict && !o.released {
			l.t.Errorf("release of a live lease with its key freed nothing: %v", o)
		}
		delete(held, o.stream)
	default: // release 409
		if l.cfg.reliable {
			l.t.Errorf("release of a live lease with its key refused: %v", o)
		}
		delete(held, o.stream)
	}
}

// resolveParked retries each parked call until it gets an answer other
// than 503.
func (l *load) resolveParked(p *player) {
	for _, user := range slices.Sorted(maps.Keys(p.parked)) {
		pc := p.parked[user]
		delete(p.parked, user)
		l.retry(p, user, pc)
	}
}

// retry resolves one parked call and records what Redis holds around it.
// Only this player calls for user, so nothing else changes the user's keys
// in between.
func (l *load) retry(p *player, user string, pc parkedCall) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec := retryRecord{}
	_, rec.heldBefore = p.held[user][pc.stream]
	if pc.op == opAcquire {
		key, err := l.cfg.rdb.HGet(ctx, keysKey(user), pc.stream).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			l.t.Errorf("HGET %s %s before a retry: %v", keysKey(user), pc.stream, err)
		}
		rec.keyBefore = key
	}
	var o outcome
	for attempt := 0; ; attempt++ {
		o = l.do(p, pc.op, user, pc.stream, pc.key, true)
		if o.status != http.StatusServiceUnavailable {
			break
		}
		if attempt == 20 {
			l.t.Errorf("still 503 after %d retries: %v", attempt, o)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.apply(p, o)
	rec.final = o
	members, err := l.cfg.rdb.ZRange(ctx, streamsKey(user), 0, -1).Result()
	if err != nil {
		l.t.Errorf("ZRANGE %s after a retry: %v", streamsKey(user), err)
	}
	fields, err := l.cfg.rdb.HKeys(ctx, keysKey(user)).Result()
	if err != nil {
		l.t.Errorf("HKEYS %s after a retry: %v", keysKey(user), err)
	}
	slices.Sort(members)
	slices.Sort(fields)
	rec.members, rec.fields = members, fields
	l.mu.Lock()
	defer l.mu.Unlock()
	l.retried = append(l.retried, rec)
}
