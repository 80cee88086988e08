package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/internal/redistest"
)

// hostileRow is one request a client can send to hurt the service, written
// on a raw connection, since net/http's client refuses to send most of them.
type hostileRow struct {
	name    string
	method  string   // also tells the response reader whether a body follows
	target  string   // the request-target, sent as is
	headers []string // extra "Name: value" lines
	body    string
	bodyLen int    // instead of body: a JSON body of this many bytes, streamed
	chunked bool   // send the body with Transfer-Encoding: chunked
	raw     string // instead of all of the above: the whole request, as is

	status int
	code   string // the JSON error code, when the answer is ours and an error
	// plain: net/http answers before any handler of ours, not in JSON;
	// only the status is ours to check.
	plain bool
	check func(t *testing.T, r response) // more checks of the answer
}

const (
	mib      = 1 << 20
	kib      = 1 << 10
	victimV1 = "/api/streams/victim/v1"
)

var hostileRows = []hostileRow{
	// Sizes. The body limit is 1 MiB, headers (request line included) 64 KiB.
	{name: "10 MB body with Content-Length on a heartbeat", method: "POST", target: victimV1 + "/heartbeat",
		headers: []string{"Content-Type: application/json"}, bodyLen: 10 * mib, status: 413, code: "body_too_large"},
	{name: "10 MB body chunked on a heartbeat", method: "POST", target: victimV1 + "/heartbeat",
		headers: []string{"Content-Type: application/json"}, bodyLen: 10 * mib, chunked: true, status: 413, code: "body_too_large"},
	{name: "10 MB body with Content-Length on an acquire", method: "GET", target: "/api/streams/victim/v2",
		headers: []string{"Content-Type: application/json"}, bodyLen: 10 * mib, status: 413, code: "body_too_large"},
	{name: "10 MB body chunked on a legacy release", method: "PATCH", target: "/api/users/victim",
		headers: []string{"Content-Type: application/json"}, bodyLen: 10 * mib, chunked: true, status: 413, code: "body_too_large"},
	{name: "100 KB URL", method: "GET", target: "/api/streams/victim/" + strings.Repeat("a", 100*kib),
		status: 431, plain: true},
	{name: "10 KB stream ID, under the header limit", method: "GET", target: "/api/streams/victim/" + strings.Repeat("a", 10*kib),
		status: 400, code: "invalid_stream_id"},
	{name: "100 KB header", method: "GET", target: "/api/streams/victim/v2",
		headers: []string{"X-Padding: " + strings.Repeat("a", 100*kib)}, status: 431, plain: true},
	{name: "100 KB X-Request-ID", method: "GET", target: "/api/streams/victim/v2",
		headers: []string{"X-Request-ID: " + strings.Repeat("a", 100*kib)}, status: 431, plain: true},
	{name: "32 KB X-Request-ID is not echoed", method: "GET", target: "/api/users/victim/streams",
		headers: []string{"X-Request-ID: " + strings.Repeat("a", 32*kib)}, status: 200, check: func(t *testing.T, r response) {
			r.object(t, 200, "user_id", "limit", "active_streams")
			if id := r.header.Get("X-Request-ID"); id == "" || len(id) > 128 {
				t.Errorf("X-Request-ID of %d bytes returned, want a fresh short one", len(id))
			}
		}},

	// Bytes that are not UTF-8.
	{name: "invalid UTF-8 in the path, escaped", method: "GET", target: "/api/streams/victim/%FF%FE",
		status: 400, code: "invalid_stream_id"},
	{name: "invalid UTF-8 in the path, raw", method: "GET", target: "/api/streams/victim/\xff\xfe",
		status: 400, code: "invalid_stream_id"},
	{name: "invalid UTF-8 in the user, escaped", method: "GET", target: "/api/streams/%C3%28/v1",
		status: 400, code: "invalid_user_id"},
	{name: "invalid UTF-8 in the query", method: "PATCH", target: "/api/users/victim?stream_id=%FF",
		status: 400, code: "invalid_stream_id"},
	{name: "invalid UTF-8 in the body", method: "PATCH", target: "/api/users/victim",
		headers: []string{"Content-Type: application/json"}, body: "{\"stream_id\":\"v\xff1\"}", status: 400, code: "invalid_body"},

	// Escaped braces and slashes: no way into the hash tag, no extra segment.
	{name: "%7B %7D around the user", method: "GET", target: "/api/streams/%7Bvictim%7D/v2",
		status: 400, code: "invalid_user_id"},
	{name: "%7D closing the hash tag early", method: "GET", target: "/api/streams/victim%7D/v2",
		status: 400, code: "invalid_user_id"},
	{name: "%2F inside the stream", method: "GET", target: "/api/streams/victim/v1%2Fheartbeat",
		status: 400, code: "invalid_stream_id"},
	{name: "%2F joining user and stream", method: "GET", target: "/api/streams/victim%2Fv2",
		status: 404, code: "not_found"},
	{name: "%2F on a release keeps v1", method: "DELETE", target: "/api/streams/victim/v1%2F",
		status: 400, code: "invalid_stream_id"},

	// Dot segments: nothing cleans the path, and "." and ".." are no IDs.
	{name: ".. as the stream", method: "GET", target: "/api/streams/victim/..",
		status: 400, code: "invalid_stream_id"},
	{name: ". as the stream", method: "GET", target: "/api/streams/victim/.",
		status: 400, code: "invalid_stream_id"},
	{name: "%2E%2E as the user", method: "GET", target: "/api/streams/%2E%2E/v2",
		status: 400, code: "invalid_user_id"},
	{name: ".. walking to the legacy release", method: "PATCH", target: "/api/streams/victim/../../users/victim",
		status: 404, code: "not_found"},
	{name: ". inside the list route", method: "GET", target: "/api/users/victim/./streams",
		status: 404, code: "not_found"},

	// NUL bytes.
	{name: "%00 in the stream", method: "GET", target: "/api/streams/victim/v2%00",
		status: 400, code: "invalid_stream_id"},
	{name: "%00 in the legacy query keeps v1", method: "PATCH", target: "/api/users/victim?stream_id=v1%00",
		status: 400, code: "invalid_stream_id"},
	{name: "raw NUL in the request line", method: "GET", raw: "GET /api/streams/victim/v2\x00 HTTP/1.1\r\nHost: limiterd.test\r\nConnection: close\r\n\r\n",
		status: 400, plain: true},
	{name: "raw NUL in a header", method: "GET", target: "/api/streams/victim/v2",
		headers: []string{"X-Request-ID: a\x00b"}, status: 400, plain: true},

	// Numbers where the legacy body takes a stream_id.
	{name: "legacy stream_id 30 digits", method: "PATCH", target: "/api/users/victim",
		headers: []string{"Content-Type: application/json"}, body: `{"stream_id":` + strings.Repeat("9", 30) + `}`, status: 200, check: notReleased(strings.Repeat("9", 30))},
	{name: "legacy stream_id 200 digits", method: "PATCH", target: "/api/users/victim",
		headers: []string{"Content-Type: application/json"}, body: `{"stream_id":` + strings.Repeat("9", 200) + `}`, status: 400, code: "invalid_stream_id"},
	{name: "legacy stream_id -1", method: "PATCH", target: "/api/users/victim",
		headers: []string{"Content-Type: application/json"}, body: `{"stream_id":-1}`, status: 400, code: "invalid_body"},
	{name: "legacy stream_id 1e400", method: "PATCH", target: "/api/users/victim",
		headers: []string{"Content-Type: application/json"}, body: `{"stream_id":1e400}`, status: 400, code: "invalid_body"},
	{name: "legacy stream_id 1.0", method: "PATCH", target: "/api/users/victim",
		headers: []string{"Content-Type: application/json"}, body: `{"stream_id":1.0}`, status: 400, code: "invalid_body"},
	{name: "legacy stream_id 007", method: "PATCH", target: "/api/users/victim",
		headers: []string{"Content-Type: application/json"}, body: `{"stream_id":007}`, status: 400, code: "invalid_body"},
	{name: "legacy stream_id \"-1\"", method: "PATCH", target: "/api/users/victim",
		headers: []string{"Content-Type: application/json"}, body: `{"stream_id":"-1"}`, status: 200, check: notReleased("-1")},
	{name: "legacy stream_id 0 in the query", method: "PATCH", target: "/api/users/victim?stream_id=0",
		status: 200, check: notReleased("0")},

	// Content types.
	{name: "text/plain heartbeat", method: "POST", target: victimV1 + "/heartbeat",
		headers: []string{"Content-Type: text/plain"}, body: `{"stream_key":"x"}`, status: 415, code: "unsupported_media_type"},
	{name: "form heartbeat", method: "POST", target: victimV1 + "/heartbeat",
		headers: []string{"Content-Type: application/x-www-form-urlencoded"}, body: "stream_key=x", status: 415, code: "unsupported_media_type"},
	{name: "multipart legacy release", method: "PATCH", target: "/api/users/victim",
		headers: []string{"Content-Type: multipart/form-data; boundary=x"}, body: "--x\r\n\r\nv1\r\n--x--\r\n", status: 415, code: "unsupported_media_type"},
	{name: "malformed Content-Type", method: "PATCH", target: "/api/users/victim",
		headers: []string{"Content-Type: application/json;;"}, body: `{"stream_id":"v1"}`, status: 415, code: "unsupported_media_type"},

	// Query strings.
	{name: "stream_key twice", method: "DELETE", target: victimV1 + "?stream_key=a&stream_key=b",
		status: 400, code: "invalid_query"},
	{name: "stream_id twice on the legacy release", method: "PATCH", target: "/api/users/victim?stream_id=v1&stream_id=v1",
		status: 400, code: "invalid_query"},
	{name: "semicolon separator", method: "PATCH", target: "/api/users/victim?stream_id=v9;stream_id=v1",
		status: 400, code: "invalid_query"},
	{name: "malformed escape in the query", method: "PATCH", target: "/api/users/victim?stream_id=%zz",
		status: 400, code: "invalid_query"},

	// Malformed escapes in the path: net/http refuses the request line.
	{name: "a% in the path", method: "GET", target: "/api/streams/a%/tv",
		status: 400, plain: true},
	{name: "%zz in the path", method: "GET", target: "/api/streams/victim/v%zz",
		status: 400, plain: true},

	// Methods.
	{name: "TRACE", method: "TRACE", target: victimV1, status: 405, code: "method_not_allowed"},
	{name: "CONNECT to an authority", method: "CONNECT", target: "victim:443", status: 404, code: "not_found"},
	{name: "CONNECT to a route", method: "CONNECT", target: "/api/streams/victim/v2", status: 405, code: "method_not_allowed"},
	{name: "HEAD on the acquire route", method: "HEAD", target: "/api/streams/victim/v2", status: 405},
	{name: "lowercase get", method: "get", target: "/api/streams/victim/v2", status: 405, code: "method_not_allowed"},
	{name: "OPTIONS", method: "OPTIONS", target: victimV1, status: 204, check: func(t *testing.T, r response) {
		if len(r.body) != 0 || !strings.Contains(r.header.Get("Allow"), "GET") {
			t.Errorf("OPTIONS: body %q, Allow %q; want no body and the route's methods", r.body, r.header.Get("Allow"))
		}
	}},
	{name: "control byte in the method", method: "GET", raw: "G\x01T /api/streams/victim/v2 HTTP/1.1\r\nHost: limiterd.test\r\nConnection: close\r\n\r\n",
		status: 400, plain: true},

	// Framing that net/http refuses.
	{name: "two Content-Lengths", method: "PATCH", target: "/api/users/victim",
		headers: []string{"Content-Type: application/json", "Content-Length: 2", "Content-Length: 18"},
		body:    `{"stream_id":"v1"}`, status: 400, plain: true},
	{name: "unsupported Transfer-Encoding", method: "PATCH", target: "/api/users/victim",
		headers: []string{"Transfer-Encoding: gzip"}, status: 501, plain: true},
	{name: "unknown Expect", method: "PATCH", target: "/api/users/victim",
		headers: []string{"Expect: 200-ok"}, status: 417, plain: true},
}

// notReleased checks the answer of a legacy release that named a stream
// the victim does not hold.
func notReleased(stream string) func(t *testing.T, r response) {
	return func(t *testing.T, r response) {
		t.Helper()
		obj := r.object(t, 200, "stream_id", "released", "active_streams", "limit")
		if obj["stream_id"] != stream || obj["released"] != false || obj["active_streams"] != 1.0 {
			t.Errorf("body %s, want %q not released and the victim's 1 stream", r.body, stream)
		}
	}
}

// TestHostileRequests sends each hostile row to the real server (run, so
// http.Server's own limits apply) on a real Redis where the user "victim"
// holds one stream. After each row, the service must still serve an
// acquire, and Redis must hold exactly what it held before: no hostile
// request may admit, renew, release or count anything.
func TestHostileRequests(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	inst := startRun(t, map[string]string{"REDIS_URL": "redis://" + srv.Addr})
	addr := strings.TrimPrefix(inst.URL, "http://")
	rdb := redisClient(t, srv.Addr)

	do(t, "GET", inst.URL+victimV1, "").wantLease(t, "victim", "v1", 1)
	want := redisState(t, rdb)

	for _, row := range hostileRows {
		t.Run(row.name, func(t *testing.T) {
			r := exchange(t, addr, row)
			t.Logf("answer: %d %s", r.status, errorCode(r))
			switch {
			case r.status >= 500 && !row.plain:
				t.Errorf("status %d from our code; body %s", r.status, r.body)
			case row.plain:
				if r.status != row.status {
					t.Errorf("status %d, want net/http's %d; body %q", r.status, row.status, r.body)
				}
				if ct := r.header.Get("Content-Type"); strings.HasPrefix(ct, "application/json") {
					t.Errorf("Content-Type %q: our code answered, not net/http; body %q", ct, r.body)
				}
			case row.code != "":
				r.wantError(t, row.status, row.code)
			case r.status != row.status:
				t.Errorf("status %d, want %d; body %s", r.status, row.status, r.body)
			}
			if !row.plain {
				// Every answer of ours, errors and 204 included (README, API).
				if cc := r.header.Get("Cache-Control"); cc != "no-store" {
					t.Errorf("Cache-Control %q, want no-store", cc)
				}
				if r.header.Get("X-Request-ID") == "" {
					t.Error("no X-Request-ID")
				}
			}
			if row.check != nil {
				row.check(t, r)
			}

			do(t, "GET", inst.URL+"/api/streams/probe/tv", "").wantLease(t, "probe", "tv", 1)
			if got := redisState(t, rdb); !maps.Equal(got, want) {
				t.Errorf("Redis changed:\n got %v\nwant %v", got, want)
				want = got // judge the next rows on what they change
			}
		})
	}
}

// errorCode returns the answer's JSON error code, or says what it is
// instead, for the log of each row.
func errorCode(r response) string {
	if !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		return fmt.Sprintf("(not JSON: Content-Type %q, %d bytes)", r.header.Get("Content-Type"), len(r.body))
	}
	var body struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || body.Error == "" {
		return "(JSON, no error code)"
	}
	return body.Error
}

// exchange sends row on a connection of its own and reads the answer. The
// request is written while the answer is read, as a client streaming a big
// body would: the server may answer before it has read it all.
func exchange(t *testing.T, addr string, row hostileRow) response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, httpTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(httpTimeout))
	sent := make(chan error, 1)
	go func() { sent <- row.send(conn) }()
	defer func() {
		conn.Close() // ends the send if the server stopped reading
		<-sent
	}()

	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: row.method})
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("status %d, reading the body: %v", resp.StatusCode, err)
	}
	return response{resp.StatusCode, resp.Header, body}
}

// send writes the row's request. Every request asks to close the
// connection, so that the answer's end is the connection's.
func (row hostileRow) send(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64*kib)
	if row.raw != "" {
		bw.WriteString(row.raw)
		return bw.Flush()
	}
	fmt.Fprintf(bw, "%s %s HTTP/1.1\r\nHost: limiterd.test\r\nConnection: close\r\n", row.method, row.target)
	for _, h := range row.headers {
		bw.WriteString(h + "\r\n")
	}
	var body io.Reader = strings.NewReader(row.body)
	size := len(row.body)
	if row.bodyLen > 0 {
		body, size = bigJSONBody(row.bodyLen), row.bodyLen
	}
	switch {
	case row.chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		buf := make([]byte, 32*kib)
		for {
			n, err := io.ReadFull(body, buf)
			if n > 0 {
				fmt.Fprintf(bw, "%x\r\n%s\r\n", n, buf[:n])
			}
			if err != nil {
				break
			}
		}
		bw.WriteString("0\r\n\r\n")
	case size > 0 && !hasHeader(row.headers, "Content-Length"):
		fmt.Fprintf(bw, "Content-Length: %d\r\n\r\n", size)
		io.Copy(bw, body)
	default:
		bw.WriteString("\r\n")
		io.Copy(bw, body)
	}
	return bw.Flush()
}

func hasHeader(headers []string, name string) bool {
	for _, h := range headers {
		if strings.HasPrefix(strings.ToLower(h), strings.ToLower(name)+":") {
			return true
		}
	}
	return false
}

// bigJSONBody is a heartbeat body of n bytes: {"stream_key":"xxx…"}.
func bigJSONBody(n int) io.Reader {
	const head, tail = `{"stream_key":"`, `"}`
	return io.MultiReader(strings.NewReader(head),
		io.LimitReader(repeatByte('x'), int64(n-len(head)-len(tail))), strings.NewReader(tail))
}

type repeatByte byte

func (b repeatByte) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// redisState is everything Redis holds but the probe user's keys, which
// every row renews: key -> its type and content.
func redisState(t *testing.T, rdb *redis.Client) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	state := map[string]string{}
	keys, err := rdb.Keys(ctx, "*").Result() // this test's own server, a handful of keys
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	for _, k := range keys {
		if strings.HasPrefix(k, "limiter:{probe}:") {
			continue
		}
		switch typ := rdb.Type(ctx, k).Val(); typ {
		case "zset":
			zs, err := rdb.ZRangeWithScores(ctx, k, 0, -1).Result()
			if err != nil {
				t.Fatal(err)
			}
			state[k] = fmt.Sprint("zset ", zs)
		case "hash":
			h, err := rdb.HGetAll(ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			fields := slices.Sorted(maps.Keys(h))
			var b strings.Builder
			for _, f := range fields {
				fmt.Fprintf(&b, " %s=%s", f, h[f])
			}
			state[k] = "hash" + b.String()
		default:
			state[k] = typ
		}
	}
	return state
}

// TestSlowHeadersAreCut plays a slowloris client: a header that grows by one
// byte every 100 ms and never ends. Each byte comes well within any idle
// timeout, so only ReadHeaderTimeout (5 s in run) cuts it: the connection
// must be closed without an answer, long before ReadTimeout (15 s) would,
// and the service must keep serving meanwhile. It waits the 5 s out, so
// -short skips it.
func TestSlowHeadersAreCut(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out ReadHeaderTimeout (5 s)")
	}
	t.Parallel()
	srv := redistest.Start(t)
	inst := startRun(t, map[string]string{"REDIS_URL": "redis://" + srv.Addr})
	rdb := redisClient(t, srv.Addr)

	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(inst.URL, "http://"), httpTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	stop := make(chan struct{})
	dripped := make(chan struct{})
	go func() {
		defer close(dripped)
		if _, err := io.WriteString(conn, "GET /api/streams/slow/tv HTTP/1.1\r\nHost: limiterd.test\r\nX-Slow: "); err != nil {
			return
		}
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte("a")); err != nil {
					return // cut
				}
			}
		}
	}()
	defer func() {
		close(stop)
		<-dripped
	}()

	// Another client is served while the slow one hangs on.
	time.Sleep(time.Second)
	do(t, "GET", inst.URL+"/api/streams/probe/tv", "").wantLease(t, "probe", "tv", 1)

	// Under ReadTimeout: a server without ReadHeaderTimeout fails here.
	const bound = 12 * time.Second
	conn.SetReadDeadline(time.Now().Add(bound))
	n, err := conn.Read(make([]byte, 1024))
	t.Logf("the slow client's read ended after %v: %d bytes, %v", time.Since(start).Round(time.Millisecond), n, err)
	var netErr net.Error
	switch {
	case errors.As(err, &netErr) && netErr.Timeout():
		t.Fatalf("the slow client was not cut within %v", bound)
	case n > 0:
		t.Errorf("the slow client got %d bytes of an answer, want the connection closed without one", n)
	case err == nil:
		t.Errorf("read returned nothing and no error")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if n, err := rdb.Exists(ctx, "limiter:{slow}:streams").Result(); err != nil || n != 0 {
		t.Errorf("EXISTS limiter:{slow}:streams = %d, %v; want 0: the slow request was served", n, err)
	}
}
