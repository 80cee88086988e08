package httpapi_test

// The HTTP API on the Redis topologies redisclient supports: every route on
// the REDIS_TEST_* deployment (a server of the test's own when unset), and
// Cluster errors answered as 503, never as an admission.

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/limiterd/limiterd/httpapi"
	"github.com/limiterd/limiterd/internal/redisclient"
	"github.com/limiterd/limiterd/internal/redistest"
	"github.com/limiterd/limiterd/limiter"
)

// call sends one request and returns the status, the Retry-After header and
// the JSON body.
func call(t *testing.T, method, url, body string) (int, string, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{Timeout: 10 * time.Second} // a bound, not a measure
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object: %v", method, url, raw, err)
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), out
}

func TestRoutesOnTheTestTopology(t *testing.T) {
	lim, err := limiter.New(redistest.Client(t), limiter.Config{Limit: 2, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.NewServer(httpapi.Deps{Streams: lim, Ready: lim}))
	t.Cleanup(srv.Close)
	b := make([]byte, 6)
	rand.Read(b)
	user := "topology-" + hex.EncodeToString(b) // apart from other tests on a shared Redis
	streams := srv.URL + "/api/streams/" + user

	status, _, got := call(t, "GET", streams+"/tv", "")
	key, _ := got["stream_key"].(string)
	if status != 200 || key == "" || got["active_streams"] != 1.0 {
		t.Fatalf("acquire: %d %v", status, got)
	}
	body := `{"stream_key":"` + key + `"}`
	if status, _, got = call(t, "POST", streams+"/tv/heartbeat", body); status != 200 || got["stream_key"] != key {
		t.Errorf("heartbeat: %d %v", status, got)
	}
	call(t, "GET", streams+"/phone", "")
	if status, _, got = call(t, "GET", streams+"/laptop", ""); status != 403 || got["error"] != "stream_limit_reached" {
		t.Errorf("acquire over the limit: %d %v", status, got)
	}
	if status, _, got = call(t, "GET", srv.URL+"/api/users/"+user+"/streams", ""); status != 200 || len(got["active_streams"].([]any)) != 2 {
		t.Errorf("list: %d %v", status, got)
	}
	if status, _, got = call(t, "DELETE", streams+"/tv", body); status != 200 || got["released"] != true {
		t.Errorf("release: %d %v", status, got)
	}
	if status, _, got = call(t, "PATCH", srv.URL+"/api/users/"+user, ""); status != 200 || got["stream_id"] != "phone" || got["active_streams"] != 0.0 {
		t.Errorf("legacy release: %d %v", status, got)
	}
	if status, _, got = call(t, "GET", srv.URL+"/readyz", ""); status != 200 {
		t.Errorf("readyz: %d %v", status, got)
	}
}

// TestClusterErrorsAre503 answers every script with a Cluster error and
// wants each route that runs one to answer 503 redis_unavailable with
// Retry-After, through a plain client and a Cluster client alike.
func TestClusterErrorsAre503(t *testing.T) {
	closed := redistest.ClosedAddr(t)
	for _, tt := range []struct{ name, reply string }{
		{"MOVED to a closed port", "-MOVED 1234 " + closed},
		{"MOVED back to itself", "-MOVED 1234 SELF"},
		{"CROSSSLOT", "-CROSSSLOT Keys in request don't hash to the same slot"},
		{"CLUSTERDOWN", "-CLUSTERDOWN The cluster is down"},
	} {
		for _, mode := range []string{redisclient.ModeSingle, redisclient.ModeCluster} {
			t.Run(mode+" client/"+tt.name, func(t *testing.T) {
				t.Parallel()
				rdb := redistest.NewClient(t, redisclient.Config{
					Mode: mode, URL: "redis://" + redistest.FakeClusterNode(t, tt.reply), Timeout: 200 * time.Millisecond,
				})
				lim, err := limiter.New(rdb, limiter.Config{Timeout: 200 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				srv := httptest.NewServer(httpapi.NewServer(httpapi.Deps{Streams: lim, Ready: lim}))
				t.Cleanup(srv.Close)
				body := `{"stream_key":"0b5e4c9c-4f3a-4f57-9d63-3b8c1f0f3b11"}`
				for _, r := range []struct{ method, path, body string }{
					{"GET", "/api/streams/alice/tv", ""},
					{"POST", "/api/streams/alice/tv/heartbeat", body},
					{"DELETE", "/api/streams/alice/tv", body},
					{"PATCH", "/api/users/alice", ""},
					{"GET", "/api/users/alice/streams", ""},
				} {
					status, retry, got := call(t, r.method, srv.URL+r.path, r.body)
					if status != 503 || got["error"] != "redis_unavailable" || retry == "" {
						t.Errorf("%s %s: %d, Retry-After %q, %v; want 503 redis_unavailable with Retry-After",
							r.method, r.path, status, retry, got)
					}
					if _, leased := got["stream_key"]; leased {
						t.Errorf("%s %s handed out a stream key: %v", r.method, r.path, got)
					}
				}
			})
		}
	}
}
