// Package redistest starts real Redis servers for tests, on free loopback
// ports, so that the Lua scripts are exercised by Redis's own Lua engine (the
// in-process miniredis runs another one).
//
// When redis-server is not installed, tests that need it are skipped on a
// developer's machine but fail when the CI environment variable is set: a CI
// run must never pass by skipping them.
//
// Client and Config point the tests at an existing deployment instead when
// REDIS_TEST_URL is set, of the topology REDIS_TEST_MODE names (single,
// cluster or sentinel), with REDIS_TEST_USERNAME, REDIS_TEST_PASSWORD and
// REDIS_TEST_TLS_* as the service's REDIS_* settings:
// scripts/redis-topology.sh starts such deployments and writes those
// settings. Tests that need a server they can kill use Start.
package redistest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process owned by one test.
type Server struct {
	Addr    string // host:port on loopback
	TLSAddr string // host:port of the TLS port, for servers from StartTLS

	cmd    *exec.Cmd
	args   []string
	output *SyncBuffer
	exited chan struct{} // closed when the process has exited; nil when not running
}

// URL returns the address of a real Redis for the test: REDIS_TEST_URL when
// it is set (an existing server; tests must use their own key prefix there),
// otherwise a server started for this test alone. Under REDIS_TEST_MODE
// cluster or sentinel, or with TLS, the URL alone does not say how to connect:
// use Client or Config.
func URL(t testing.TB) string {
	t.Helper()
	if url := os.Getenv("REDIS_TEST_URL"); url != "" {
		return url
	}
	return "redis://" + Start(t).Addr
}

// Client returns a client of the Redis that Config(t) describes, closed at
// the end of the test: a *redis.ClusterClient under REDIS_TEST_MODE=cluster,
// a *redis.Client otherwise.
func Client(t testing.TB) redis.UniversalClient {
	t.Helper()
	return NewClient(t, Config(t))
}

// Start starts a redis-server of the test's own on a free loopback port, with
// persistence off, and stops it at the end of the test. Extra arguments are
// passed to redis-server as configuration ("--maxmemory", "1mb", ...).
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	bin := binary(t)
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ { // another process may take the free port first
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: free port: %v", err)
		}
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
		s.args = append([]string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", t.TempDir(),
			"--loglevel", "warning",
		}, extra...)
		if lastErr = s.start(bin); lastErr == nil {
			t.Cleanup(s.stop)
			return s
		}
	}
	t.Fatalf("redistest: could not start redis-server: %v", lastErr)
	return nil
}

// Kill stops the server at once, as a crash would (SIGKILL).
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.stop()
}

// Restart starts the server again on the same port, empty.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.stop()
	if err := s.start(binary(t)); err != nil {
		t.Fatalf("redistest: restart: %v", err)
	}
}

// Pause freezes the server (SIGSTOP): connections stay open, nothing answers.
func (s *Server) Pause(t testing.TB) { s.signal(t, syscall.SIGSTOP) }

// Resume undoes Pause (SIGCONT).
func (s *Server) Resume(t testing.TB) { s.signal(t, syscall.SIGCONT) }

func (s *Server) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("redistest: %v: %v", sig, err)
	}
}

func (s *Server) start(bin string) error {
	s.output = &SyncBuffer{}
	s.cmd = exec.Command(bin, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = s.output, s.output
	if err := s.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { s.cmd.Wait(); close(exited) }()

	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited: %s", s.output.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			s.exited = exited
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.cmd.Process.Kill()
	<-exited
	return fmt.Errorf("redis-server on %s did not answer in 10s: %s", s.Addr, s.output.String())
}

func (s *Server) stop() {
	if s.exited == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT) // a paused process must run to die cleanly
	s.cmd.Process.Kill()
	<-s.exited
	s.exited = nil
}

// binary finds redis-server, or ends the test: skipped locally, failed in CI.
func binary(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err == nil {
		return bin
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("redistest: redis-server is required in CI and was not found: %v", err)
	}
	t.Skipf("redistest: redis-server not installed (CI installs it; or set REDIS_TEST_URL): %v", err)
	return ""
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// SyncBuffer is a bytes.Buffer that a process's output and a test can
// share: safe for concurrent Write and String.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Silent returns the address of a server that accepts connections and never
// answers, like a Redis that hangs; it closes at the end of the test.
func Silent(t testing.TB) string {
	t.Helper()
	return acceptAll(t, nil)
}

// acceptAll serves a loopback listener until the end of the test, giving
// each connection to handle in a goroutine of its own (nil: keep it open and
// never answer), and returns its address. All connections close with it.
func acceptAll(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, track := listen(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			if handle != nil {
				go handle(c)
			}
		}
	}()
	return ln.Addr().String()
}

// Proxy forwards TCP connections to a server and tells when a client sends
// some bytes, so that a test can act while a command is on its way.
type Proxy struct {
	Addr string // where clients connect

	mu   sync.Mutex
	want []byte        // lower case; nil when no one waits
	seen chan struct{} // closed when want has been sent
}

// StartProxy starts a Proxy to target, closed at the end of the test.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, track := listen(t)
	p := &Proxy{Addr: ln.Addr().String()}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				in.Close()
				continue
			}
			track(in)
			track(out)
			go func() { io.Copy(in, out); in.Close() }()
			go func() { p.forward(out, in); out.Close() }()
		}
	}()
	return p
}

// Expect returns a channel closed when a client next sends s (any case).
func (p *Proxy) Expect(s string) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.want = bytes.ToLower([]byte(s))
	p.seen = make(chan struct{})
	return p.seen
}

func (p *Proxy) forward(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if p.want != nil && bytes.Contains(bytes.ToLower(buf[:n]), p.want) {
				close(p.seen)
				p.want = nil
			}
			p.mu.Unlock()
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// listen opens a loopback listener and returns it with a function that
// registers connections; at the end of the test all of them are closed.
func listen(t testing.TB) (net.Listener, func(net.Conn)) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln, func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
	}
}

// ClosedAddr returns a loopback address that nothing listens on.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(addr))
}
