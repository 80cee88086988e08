// Package servicetest runs the real limiterd binary for tests: built once
// per test process from this module's source, started on a free loopback
// port, signalled and killed like a process in production.
package servicetest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/limiterd/limiterd/internal/redistest"
)

const mainPackage = "github.com/limiterd/limiterd/cmd/limiterd"

var build struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// Main runs the package's tests and then removes the binary built for them;
// call it from TestMain: func TestMain(m *testing.M) { servicetest.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// Binary builds cmd/limiterd, once per test process, and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "limiterd-test-")
		if build.err != nil {
			return
		}
		build.bin = filepath.Join(build.dir, "limiterd")
		out, err := exec.Command("go", "build", "-o", build.bin, mainPackage).CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("go build %s: %v\n%s", mainPackage, err, out)
		}
	})
	if build.err != nil {
		t.Fatalf("servicetest: %v", build.err)
	}
	return build.bin
}

// Service is a limiterd process owned by one test.
type Service struct {
	Addr string // host:port it listens on
	URL  string // "http://" + Addr

	cmd    *exec.Cmd
	output *redistest.SyncBuffer
	exited chan struct{} // closed once the process has exited
	state  *os.ProcessState
}

// listening matches the startup line that names the bound address.
var listening = regexp.MustCompile(`msg="limiterd listening" addr=(\S+)`)

// Start starts limiterd with env added to the test's environment (for
// example "REDIS_URL=redis://127.0.0.1:6390"), listening on a free loopback
// port, and waits until /healthz answers. The process is killed at the end of
// the test, and its log is printed if the test failed.
func Start(t testing.TB, env ...string) *Service {
	t.Helper()
	s := &Service{output: &redistest.SyncBuffer{}, exited: make(chan struct{})}
	s.cmd = exec.Command(Binary(t))
	s.cmd.Env = append(os.Environ(), "LISTEN_ADDR=127.0.0.1:0", "LOG_FORMAT=text")
	s.cmd.Env = append(s.cmd.Env, env...)
	s.cmd.Stdout, s.cmd.Stderr = s.output, s.output
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("servicetest: starting limiterd: %v", err)
	}
	go func() {
		s.cmd.Wait()
		s.state = s.cmd.ProcessState
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.exited
		if t.Failed() {
			t.Logf("limiterd %s log:\n%s", s.Addr, s.Output())
		}
	})

	deadline := time.Now().Add(15 * time.Second)
	for s.Addr == "" {
		if m := listening.FindStringSubmatch(s.Output()); m != nil {
			s.Addr, s.URL = m[1], "http://"+m[1]
			break
		}
		select {
		case <-s.exited:
			t.Fatalf("servicetest: limiterd exited at startup (%v):\n%s", s.state, s.Output())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("servicetest: limiterd did not log its address in 15s:\n%s", s.Output())
		}
	}
	for !s.healthy() {
		if time.Now().After(deadline) {
			t.Fatalf("servicetest: %s/healthz did not answer 200 in 15s:\n%s", s.URL, s.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

func (s *Service) healthy() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/healthz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Signal sends sig to the process (syscall.SIGTERM to drain, SIGSTOP to
// freeze, ...).
func (s *Service) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("servicetest: %v: %v", sig, err)
	}
}

// Kill ends the process at once, as a crash would (SIGKILL), and waits for it.
func (s *Service) Kill(t testing.TB) {
	t.Helper()
	s.Signal(t, syscall.SIGKILL)
	<-s.exited
}

// Wait waits up to timeout for the process to exit and returns its exit
// code; it fails the test if the process is still running then.
func (s *Service) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-s.exited:
		return s.state.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("servicetest: limiterd still running %v after being asked to stop:\n%s", timeout, s.Output())
		return -1
	}
}

// Exited is closed once the process has exited.
func (s *Service) Exited() <-chan struct{} { return s.exited }

// Output returns what the process has logged so far.
func (s *Service) Output() string { return s.output.String() }
