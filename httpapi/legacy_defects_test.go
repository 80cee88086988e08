package httpapi_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/limiterd/limiterd/httpapi"
	"github.com/limiterd/limiterd/internal/redistest"
	"github.com/limiterd/limiterd/limiter"
)

// The service limiterd replaced let 50 of 50 simultaneous requests of one
// user through and let its counter go negative. These tests replay both on a
// real Redis, through two server replicas.
func TestSimultaneousRequestsOfOneUser(t *testing.T) {
	const requests = 50
	rdb := redistest.Client(t)
	prefix := fmt.Sprintf("legacytest-%d", time.Now().UnixNano())
	var urls []string
	for range 2 {
		lim, err := limiter.New(rdb, limiter.Config{Limit: 3, KeyPrefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		srv := checkedServer(t, httpapi.NewServer(httpapi.Deps{Streams: lim, Ready: lim}))
		urls = append(urls, srv.URL)
	}

	// all sends the requests at once, alternating replicas, and returns the
	// statuses and bodies.
	all := func(method string, path func(i int) string) (map[int]int, []map[string]any) {
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			start    = make(chan struct{})
			statuses = map[int]int{}
			bodies   []map[string]any
		)
		for i := range requests {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(method, urls[i%len(urls)]+path(i), nil)
				<-start
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				raw, _ := io.ReadAll(resp.Body)
				var body map[string]any
				json.Unmarshal(raw, &body)
				mu.Lock()
				defer mu.Unlock()
				statuses[resp.StatusCode]++
				bodies = append(bodies, body)
			}()
		}
		close(start)
		wg.Wait()
		return statuses, bodies
	}

	statuses, _ := all("GET", func(i int) string { return fmt.Sprintf("/api/streams/alice/s%d", i) })
	t.Logf("%d simultaneous acquires of one user: %v", requests, statuses)
	if statuses[200] != 3 || statuses[403] != requests-3 {
		t.Errorf("statuses %v, want exactly 3 × 200 and %d × 403", statuses, requests-3)
	}

	statuses, bodies := all("PATCH", func(int) string { return "/api/users/alice" })
	released := 0
	for _, b := range bodies {
		if b["released"] == true {
			released++
		}
		if n, _ := b["active_streams"].(float64); n < 0 || n > 3 {
			t.Errorf("active_streams = %v", n)
		}
	}
	t.Logf("%d simultaneous legacy releases: %v, %d released", requests, statuses, released)
	if statuses[200] != requests || released != 3 {
		t.Errorf("statuses %v with %d released, want %d × 200 and exactly 3 released", statuses, released, requests)
	}
}
