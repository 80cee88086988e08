package servicetest_test

import (
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/limiterd/limiterd/internal/redistest"
	"github.com/limiterd/limiterd/internal/servicetest"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

func TestStartServesAndStopsOnSIGTERM(t *testing.T) {
	svc := servicetest.Start(t, "REDIS_URL="+redistest.URL(t))
	resp, err := http.Get(svc.URL + "/api/streams/u1/s1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("acquire: %d, want 200", resp.StatusCode)
	}
	svc.Signal(t, syscall.SIGTERM)
	if code := svc.Wait(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0:\n%s", code, svc.Output())
	}
}
