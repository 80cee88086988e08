package failover

import (
	"encoding/json"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// op is what a player asks the service.
type op uint8

const (
	opAcquire op = iota
	opHeartbeat
	opRelease
)

func (o op) String() string { return [...]string{"acquire", "heartbeat", "release"}[o] }

// exchange is one HTTP exchange of the load, as its player saw it. Times are
// Unix nanoseconds of the wall clock, which is also Redis's clock here (the
// same machine), so that they compare with lease_expires_at.
type exchange struct {
	start, end int64
	user       int32
	op         op
	status     int16  // 0: a transport error (no answer)
	code       string // the "error" field of an error body
}

// failed reports whether the service failed to decide: no answer, or a 5xx.
func (e exchange) failed() bool { return e.status == 0 || e.status >= 500 }

// kind names how an exchange failed, for the figure lines.
func (e exchange) kind() string {
	if e.status == 0 {
		return "transport"
	}
	return strconv.Itoa(int(e.status)) + " " + e.code
}

// ending says how a player stopped holding a lease.
type ending uint8

const (
	stillHeld ending = iota // held when the load stopped
	released                // the player ended the stream and sent a release
	gone                    // the service answered a heartbeat with 410 (or 409)
	lapsed                  // no heartbeat was answered in time: the lease's expiry passed
)

// lease is one lease as its player saw it: from the 200 that granted it to
// the moment the player stopped holding it. The players of a user together
// hold every lease of the user whose interval covers a moment.
type lease struct {
	user    int32
	stream  string
	key     string
	start   int64 // when the 200 granting it arrived
	expires int64 // lease_expires_at of the last 200 (acquire or heartbeat)
	end     int64 // when the player stopped holding it; 0 while it holds it
	how     ending
	// lostAt is when the service answered, before expires, that it held no
	// such lease (a heartbeat's 410, a release's released:false): the lease
	// was lost although no one ended it. 0 if that never happened.
	lostAt int64
}

// loadConfig shapes the players.
type loadConfig struct {
	users        int
	attemptEvery time.Duration // mean pause between a user's attempts at a new stream (exponential)
	playMin      time.Duration // each stream plays for a uniform time in [playMin, playMax]
	playMax      time.Duration
	retryAfter   time.Duration // pause before retrying a call that failed, as Retry-After says
	giveUp       time.Duration // a player stops retrying an acquire after this long
	// beatMargin: no heartbeat is sent later than this before the lease's
	// expiry, so that a 410 that arrives before the expiry can only mean
	// that the service lost a live lease.
	beatMargin time.Duration
}

// load is a set of players, one per user, each making its user's calls one
// at a time against a random replica.
type load struct {
	cfg     loadConfig
	urls    []string
	client  *http.Client
	players []*player

	lastFailure atomic.Int64 // answer time of the latest failed exchange
	stop        chan struct{}
	wg          sync.WaitGroup
	stoppedAt   int64
}

// player is the client side of one user: every device that user watches on.
type player struct {
	idx       int32
	user      string
	rng       *rand.Rand
	exchanges []exchange
	leases    []*lease // every lease it ever held
	held      []*holding
	seq       int // streams tried so far, for new stream IDs
}

// holding is a lease the player holds now, with what it does next.
type holding struct {
	*lease
	nextBeat int64
	playEnd  int64
}

func now() int64 { return time.Now().UnixNano() }

// startLoad starts one player per user against the services at urls.
func startLoad(cfg loadConfig, urls []string, users []string, seed uint64) *load {
	tr := &http.Transport{
		MaxIdleConns:        2 * len(users),
		MaxIdleConnsPerHost: len(users), // every player keeps its connections
		IdleConnTimeout:     time.Minute,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
	}
	l := &load{cfg: cfg, urls: urls, client: &http.Client{Transport: tr, Timeout: 5 * time.Second}, stop: make(chan struct{})}
	for i, u := range users {
		p := &player{idx: int32(i), user: u, rng: rand.New(rand.NewPCG(seed, uint64(i)))}
		l.players = append(l.players, p)
		l.wg.Add(1)
		go l.play(p)
	}
	return l
}

// halt stops the players, waits for their calls in flight, and closes the
// leases they still hold at the time they stopped (or at their expiry).
func (l *load) halt() {
	close(l.stop)
	l.wg.Wait()
	l.stoppedAt = now()
	for _, p := range l.players {
		for _, h := range p.held {
			h.end, h.how = min(h.expires, l.stoppedAt), stillHeld
		}
		p.held = nil
	}
	l.client.CloseIdleConnections()
}

// Actions of a player.
const (
	actAttempt = iota // try a new stream
	actRetry          // retry an acquire that failed
	actBeat           // heartbeat a held stream
	actRelease        // the viewer stops a stream
	actWake           // a lease's expiry: drop it
)

func (l *load) play(p *player) {
	defer l.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	cfg := l.cfg
	// Start the users at random moments, not all at once.
	nextAttempt := now() + int64(p.rng.Float64()*float64(2*cfg.attemptEvery))
	var retry struct {
		stream      string
		first, next int64
	}
	for {
		t := now()
		p.dropLapsed(t)
		due, act, which := nextAttempt, actAttempt, -1
		if retry.stream != "" {
			due, act = retry.next, actRetry
		}
		for i, h := range p.held {
			if h.playEnd < due {
				due, act, which = h.playEnd, actRelease, i
			}
			if h.nextBeat < due {
				due, act, which = h.nextBeat, actBeat, i
			}
			if h.expires < due {
				due, act, which = h.expires, actWake, i
			}
		}
		if wait := due - t; wait > 0 {
			timer.Reset(time.Duration(wait))
			select {
			case <-l.stop:
				return
			case <-timer.C:
			}
		} else {
			select {
			case <-l.stop:
				return
			default:
			}
		}
		t = now()
		switch act {
		case actAttempt:
			p.seq++
			stream := "s" + strconv.Itoa(p.seq)
			nextAttempt = t + int64(p.rng.ExpFloat64()*float64(cfg.attemptEvery))
			if l.acquire(p, stream) {
				retry.stream, retry.first, retry.next = stream, t, now()+int64(cfg.retryAfter)
			}
		case actRetry:
			if !l.acquire(p, retry.stream) || now()-retry.first > int64(cfg.giveUp) {
				retry.stream = ""
			} else {
				retry.next = now() + int64(cfg.retryAfter)
			}
		case actBeat:
			h := p.held[which]
			if t >= h.expires-int64(cfg.beatMargin) {
				h.nextBeat = math.MaxInt64 // too late to be sure of an answer: let it lapse
				continue
			}
			l.heartbeat(p, h)
		case actRelease:
			h := p.held[which]
			p.held = append(p.held[:which], p.held[which+1:]...)
			l.release(p, h)
		case actWake: // dropLapsed drops it at the top of the loop
		}
	}
}

// dropLapsed lets go of the leases whose expiry has passed without a
// heartbeat being answered: the player stops the stream then.
func (p *player) dropLapsed(t int64) {
	kept := p.held[:0]
	for _, h := range p.held {
		if h.expires <= t {
			h.end, h.how = h.expires, lapsed
			continue
		}
		kept = append(kept, h)
	}
	clear(p.held[len(kept):])
	p.held = kept
}

// answer is what the service said, decoded.
type answer struct {
	exchange
	key        string
	expires    int64
	renewAfter time.Duration
	released   bool
}

// acquire asks for stream and, on a 200, starts holding it. It reports
// whether the call should be retried (no decision was made).
func (l *load) acquire(p *player, stream string) (retry bool) {
	a := l.call(p, opAcquire, http.MethodGet, "/api/streams/"+p.user+"/"+stream, nil)
	switch {
	case a.status == http.StatusOK:
		le := &lease{user: p.idx, stream: stream, key: a.key, start: a.end, expires: a.expires}
		p.leases = append(p.leases, le)
		play := l.cfg.playMin + time.Duration(p.rng.Float64()*float64(l.cfg.playMax-l.cfg.playMin))
		p.held = append(p.held, &holding{lease: le, nextBeat: a.end + int64(a.renewAfter), playEnd: a.end + int64(play)})
		return false
	case a.failed():
		return true
	default: // 403: the user holds the limit; anything else shows in the figures
		return false
	}
}

func (l *load) heartbeat(p *player, h *holding) {
	a := l.call(p, opHeartbeat, http.MethodPost, "/api/streams/"+p.user+"/"+h.stream+"/heartbeat",
		strings.NewReader(`{"stream_key":"`+h.key+`"}`))
	switch {
	case a.status == http.StatusOK:
		h.expires = a.expires
		h.nextBeat = a.end + int64(a.renewAfter)
	case a.failed():
		h.nextBeat = a.end + int64(l.cfg.retryAfter)
	default: // 410 lease_expired (or 409, which this load never causes): the player stops
		if a.end < h.expires {
			h.lostAt = a.end
		}
		h.end, h.how = min(a.end, h.expires), gone
		for i, x := range p.held {
			if x == h {
				p.held = append(p.held[:i], p.held[i+1:]...)
				break
			}
		}
	}
}

// release ends a stream: the player stops holding it when it sends the
// release, whatever the answer (the viewer has stopped watching).
func (l *load) release(p *player, h *holding) {
	h.end, h.how = now(), released
	a := l.call(p, opRelease, http.MethodDelete,
		"/api/streams/"+p.user+"/"+h.stream+"?stream_key="+url.QueryEscape(h.key), nil)
	if a.status == http.StatusOK && !a.released && a.end < h.expires {
		h.lostAt = a.end
	}
}

// call makes one exchange with a random replica and records it.
func (l *load) call(p *player, o op, method, path string, body io.Reader) answer {
	a := answer{exchange: exchange{user: p.idx, op: o}}
	req, err := http.NewRequest(method, l.urls[p.rng.IntN(len(l.urls))]+path, body)
	if err != nil {
		panic(err) // the paths are built from safe IDs
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	a.start = now()
	resp, err := l.client.Do(req)
	if err == nil {
		var data []byte
		data, err = io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if err == nil {
			a.status = int16(resp.StatusCode)
			a.decode(data)
		}
	}
	a.end = now()
	p.exchanges = append(p.exchanges, a.exchange)
	if a.failed() {
		for last := l.lastFailure.Load(); last < a.end && !l.lastFailure.CompareAndSwap(last, a.end); last = l.lastFailure.Load() {
		}
	}
	return a
}

func (a *answer) decode(data []byte) {
	var b struct {
		Error          string    `json:"error"`
		StreamKey      string    `json:"stream_key"`
		LeaseExpiresAt time.Time `json:"lease_expires_at"`
		RenewAfter     int       `json:"renew_after_seconds"`
		Released       bool      `json:"released"`
	}
	if err := json.Unmarshal(data, &b); err != nil {
		a.code = "(body is not JSON)"
		return
	}
	a.code = internCode(b.Error)
	a.key, a.released = b.StreamKey, b.Released
	a.expires = b.LeaseExpiresAt.UnixNano()
	a.renewAfter = time.Duration(b.RenewAfter) * time.Second
	if a.status == http.StatusOK && a.op != opRelease && (a.key == "" || b.LeaseExpiresAt.IsZero() || b.RenewAfter < 1) {
		a.status, a.code = -1, "(200 without a lease)" // shows as an unexpected status
	}
}

// internCode keeps one copy of each error code among the many exchanges.
func internCode(code string) string {
	for _, c := range []string{"", "redis_unavailable", "stream_limit_reached", "lease_expired", "stream_key_mismatch", "internal"} {
		if code == c {
			return c
		}
	}
	return code
}

// readiness is one /readyz poll.
type readiness struct {
	at int64 // when the answer (or the error) came
	ok bool  // 200
}

// pollReady polls every service's /readyz every interval until stop is
// closed, and returns the polls of all.
func pollReady(urls []string, interval time.Duration, stop <-chan struct{}) func() []readiness {
	var (
		mu    sync.Mutex
		polls []readiness
		wg    sync.WaitGroup
	)
	client := &http.Client{Timeout: time.Second}
	for _, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				ok := false
				if resp, err := client.Get(u + "/readyz"); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					ok = resp.StatusCode == http.StatusOK
				}
				mu.Lock()
				polls = append(polls, readiness{at: now(), ok: ok})
				mu.Unlock()
			}
		}()
	}
	return func() []readiness {
		wg.Wait()
		return polls
	}
}
