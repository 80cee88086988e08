package main

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/limiterd/limiterd/internal/redistest"
)

// startJSON starts the program with JSON logs, as it runs in production, and
// returns it with the URL it serves.
func startJSON(t *testing.T, env map[string]string) *instance {
	t.Helper()
	inst := launch(t, cloneWith(env, "LISTEN_ADDR", "127.0.0.1:0", "LOG_FORMAT", "json"))
	var started struct{ Addr string }
	if err := json.Unmarshal([]byte(inst.waitLog(t, `"msg":"limiterd listening"`)), &started); err != nil {
		t.Fatal(err)
	}
	inst.URL = "http://" + started.Addr
	t.Cleanup(func() { inst.stop(t) })
	return inst
}

// jsonLines returns every log line holding all of parts, parsed.
func jsonLines(t *testing.T, inst *instance, parts ...string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(inst.log.String(), "\n") {
		if line == "" || !containsAll(line, parts...) {
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("log line is not JSON: %q: %v", line, err)
		}
		out = append(out, obj)
	}
	return out
}

func TestRequestLogLines(t *testing.T) {
	tests := []struct {
		level      string
		wantUserID bool
	}{
		{"info", false}, // user IDs are personal data
		{"debug", true},
	}
	for _, tt := range tests {
		t.Run(tt.level, func(t *testing.T) {
			inst := startJSON(t, map[string]string{"REDIS_URL": redistest.URL(t), "LOG_LEVEL": tt.level})
			req, _ := http.NewRequest("GET", inst.URL+"/api/streams/user-4711/tv", nil)
			req.Header.Set("X-Request-ID", "trace-me-1")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Get("X-Request-ID"); got != "trace-me-1" {
				t.Errorf("X-Request-ID %q, want the caller's", got)
			}

			lines := jsonLines(t, inst, `"msg":"request"`, `"request_id":"trace-me-1"`)
			if len(lines) != 1 {
				t.Fatalf("%d request lines for trace-me-1, want 1; log:\n%s", len(lines), inst.log)
			}
			line := lines[0]
			for key, want := range map[string]any{
				"level": "INFO", "method": "GET", "route": "/api/streams/:user_id/:stream_id", "status": 200.0,
			} {
				if line[key] != want {
					t.Errorf("%s = %v, want %v; line %v", key, line[key], want, line)
				}
			}
			if _, ok := line["took"]; !ok {
				t.Errorf("no took in %v", line)
			}
			if got := strings.Contains(inst.log.String(), "user-4711"); got != tt.wantUserID {
				t.Errorf("user ID in the log: %v, want %v; log:\n%s", got, tt.wantUserID, inst.log)
			}
		})
	}
}

// metric returns the value of one sample of /metrics, such as
// `limiterd_decisions_total{decision="admitted"}`, or -1 if it is absent.
func metric(t *testing.T, url, sample string) float64 {
	t.Helper()
	r := do(t, "GET", url+"/metrics", "")
	if r.status != http.StatusOK {
		t.Fatalf("/metrics: %d %s", r.status, r.body)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindSubmatch(r.body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMetrics(t *testing.T) {
	inst := startRun(t, map[string]string{"REDIS_URL": redistest.URL(t)})
	for _, stream := range []string{"a", "b", "c", "d"} {
		do(t, "GET", inst.URL+"/api/streams/u/"+stream, "")
	}
	do(t, "GET", inst.URL+"/api/streams/u/a", "")
	do(t, "GET", inst.URL+"/api/streams/u/%7B", "")
	do(t, "GET", inst.URL+"/no/such/route/4711", "")

	for sample, want := range map[string]float64{
		`limiterd_decisions_total{decision="admitted"}`:                                                  3,
		`limiterd_decisions_total{decision="refused"}`:                                                   1,
		`limiterd_decisions_total{decision="renewed"}`:                                                   1,
		`limiterd_decisions_total{decision="degraded_admission"}`:                                        0,
		`limiterd_redis_script_calls_total{outcome="admitted",script="acquire"}`:                         3,
		`limiterd_redis_script_duration_seconds_count{script="acquire"}`:                                 5,
		`limiterd_http_requests_total{code="200",method="GET",route="/api/streams/:user_id/:stream_id"}`: 4,
		`limiterd_http_requests_total{code="403",method="GET",route="/api/streams/:user_id/:stream_id"}`: 1,
		`limiterd_http_requests_total{code="400",method="GET",route="/api/streams/:user_id/:stream_id"}`: 1,
		`limiterd_http_requests_total{code="404",method="GET",route="unmatched"}`:                        1,
		`limiterd_redis_pool_connections{state="total"}`:                                                 -2, // present
	} {
		got := metric(t, inst.URL, sample)
		switch {
		case want == -2 && got < 0:
			t.Errorf("%s absent", sample)
		case want >= 0 && got != want:
			t.Errorf("%s = %v, want %v", sample, got, want)
		}
	}
	body := string(do(t, "GET", inst.URL+"/metrics", "").body)
	for _, absent := range []string{`user_id="`, "/no/such/route", "4711"} {
		if strings.Contains(body, absent) {
			t.Errorf("/metrics holds %q: labels must take bounded values", absent)
		}
	}
	for _, present := range []string{"go_goroutines", "process_cpu_seconds_total", "limiterd_redis_pool_hits_total"} {
		if !strings.Contains(body, present) {
			t.Errorf("/metrics lacks %s", present)
		}
	}
}

func TestFailureModeOpen(t *testing.T) {
	inst := startJSON(t, map[string]string{
		"REDIS_URL": "redis://" + redistest.ClosedAddr(t), "REDIS_FAILURE_MODE": "open", "REDIS_TIMEOUT": "100ms",
	})
	r := do(t, "GET", inst.URL+"/api/streams/u/tv", "")
	obj := r.object(t, http.StatusOK, "stream_key", "user_id", "stream_id", "limit",
		"lease_expires_at", "lease_ttl_seconds", "renew_after_seconds", "degraded")
	if obj["degraded"] != true || !uuidPattern.MatchString(obj["stream_key"].(string)) {
		t.Errorf("fail-open acquire %s: want degraded true and a UUID key", r.body)
	}
	r = do(t, "POST", inst.URL+"/api/streams/u/tv/heartbeat", `{"stream_key":"k1"}`)
	if obj := r.object(t, http.StatusOK, "stream_key", "user_id", "stream_id", "limit",
		"lease_expires_at", "lease_ttl_seconds", "renew_after_seconds", "degraded"); obj["stream_key"] != "k1" {
		t.Errorf("fail-open heartbeat %s: want the caller's key back", r.body)
	}
	// What cannot be answered without Redis still fails, in both modes.
	do(t, "DELETE", inst.URL+"/api/streams/u/tv", "").wantError(t, http.StatusServiceUnavailable, "redis_unavailable")
	do(t, "GET", inst.URL+"/api/users/u/streams", "").wantError(t, http.StatusServiceUnavailable, "redis_unavailable")
	do(t, "PATCH", inst.URL+"/api/users/u", "").wantError(t, http.StatusServiceUnavailable, "redis_unavailable")
	if r := do(t, "GET", inst.URL+"/readyz", ""); r.status != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d, want 503", r.status)
	}

	// Each degraded answer is counted and logged with its request ID.
	if got := metric(t, inst.URL, `limiterd_decisions_total{decision="degraded_admission"}`); got != 1 {
		t.Errorf("degraded admissions counted %v, want 1", got)
	}
	if got := metric(t, inst.URL, `limiterd_decisions_total{decision="degraded_renewal"}`); got != 1 {
		t.Errorf("degraded renewals counted %v, want 1", got)
	}
	lines := jsonLines(t, inst, `"msg":"degraded answer`)
	if len(lines) != 2 {
		t.Fatalf("%d degraded lines, want 2; log:\n%s", len(lines), inst.log)
	}
	for _, line := range lines {
		if id, _ := line["request_id"].(string); len(id) != 32 {
			t.Errorf("degraded line without a request ID: %v", line)
		}
	}
}

func TestFailureModeClosedIsTheDefault(t *testing.T) {
	inst := startRun(t, map[string]string{"REDIS_URL": "redis://" + redistest.ClosedAddr(t), "REDIS_TIMEOUT": "100ms"})
	do(t, "GET", inst.URL+"/api/streams/u/tv", "").wantError(t, http.StatusServiceUnavailable, "redis_unavailable")
	do(t, "POST", inst.URL+"/api/streams/u/tv/heartbeat", `{"stream_key":"k1"}`).
		wantError(t, http.StatusServiceUnavailable, "redis_unavailable")
}
