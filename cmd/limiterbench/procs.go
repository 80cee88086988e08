package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// process is a child the tool started: redis-server or limiterd. Pdeathsig
// makes the kernel end it if the tool dies, so nothing outlives a run.
type process struct {
	name   string
	cmd    *exec.Cmd
	output *tailBuffer
	exited chan struct{}
}

func startProcess(name, bin string, args, env []string) (*process, error) {
	p := &process{name: name, output: &tailBuffer{max: 64 << 10}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// stop kills the process and waits for it.
func (p *process) stop() {
	p.cmd.Process.Kill()
	<-p.exited
}

// alive reports an error, with the process's last output, once it has exited.
func (p *process) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v): %s", p.name, p.cmd.ProcessState, p.output.String())
	default:
		return nil
	}
}

// startRedis starts redis-server on a free loopback port with persistence off
// and waits until it answers PING.
func startRedis(ctx context.Context, bin, dir string) (*process, string, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ { // another process may take the free port first
		port, err := freePort()
		if err != nil {
			return nil, "", err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		p, err := startProcess("redis-server", bin, []string{
			"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning",
		}, os.Environ())
		if err != nil {
			return nil, "", err
		}
		if lastErr = waitRedis(ctx, p, addr); lastErr == nil {
			return p, addr, nil
		}
		p.stop()
	}
	return nil, "", lastErr
}

func waitRedis(ctx context.Context, p *process, addr string) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	defer rdb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := p.alive(); err != nil {
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := rdb.Ping(pctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("redis-server on %s did not answer in 10s: %s", addr, p.output.String())
}

// startLimiterd runs the real limiterd binary against redisAddr on a free
// loopback port and waits for /healthz. env comes last, so it wins.
func startLimiterd(ctx context.Context, bin, redisAddr string, env []string) (*process, string, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, "", fmt.Errorf("limiterd binary: %w (build it with `make build`, or pass -limiterd)", err)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, "", err
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		full := append(os.Environ(),
			"REDIS_URL=redis://"+redisAddr,
			"LISTEN_ADDR="+addr,
			// One log line per request would measure the logger: warnings only.
			"LOG_LEVEL=warn", "LOG_FORMAT=text",
		)
		full = append(full, env...)
		p, err := startProcess("limiterd", bin, nil, full)
		if err != nil {
			return nil, "", err
		}
		if lastErr = waitHealthy(ctx, p, "http://"+addr); lastErr == nil {
			return p, "http://" + addr, nil
		}
		p.stop()
	}
	return nil, "", lastErr
}

func waitHealthy(ctx context.Context, p *process, base string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if err := p.alive(); err != nil {
			return err
		}
		hctx, cancel := context.WithTimeout(ctx, time.Second)
		req, _ := http.NewRequestWithContext(hctx, http.MethodGet, base+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("limiterd at %s: /healthz did not answer 200 in 15s: %s", base, p.output.String())
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tailBuffer keeps the last max bytes a process wrote, for error messages.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(string(b.buf))
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// procCPU returns the user+system CPU time a running process has used, all
// its threads included (fields 14 and 15 of /proc/PID/stat).
func procCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseProcStat(string(raw))
}

func parseProcStat(stat string) (time.Duration, error) {
	// The command name, field 2, is in parentheses and may hold spaces.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("/proc/PID/stat: no command name")
	}
	fields := strings.Fields(stat[i+1:]) // fields[0] is field 3, the state
	if len(fields) < 13 {
		return 0, errors.New("/proc/PID/stat: too few fields")
	}
	var ticks int64
	for _, f := range fields[11:13] { // utime, stime
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/PID/stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// selfCPU is the tool's own CPU time: the load generator's.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return rusageCPU(&ru)
}

func rusageCPU(ru *syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter reads the CPU time of the processes a row involves; a pid of 0
// is a process the row does not have.
type cpuMeter struct {
	redisPID, limiterdPID int
}

type cpuSample struct {
	at                    time.Time
	redis, limiterd, self time.Duration
	redisOK, limiterdOK   bool
}

func (m cpuMeter) sample() cpuSample {
	s := cpuSample{at: time.Now(), self: selfCPU()}
	if m.redisPID != 0 {
		d, err := procCPU(m.redisPID)
		s.redis, s.redisOK = d, err == nil
	}
	if m.limiterdPID != 0 {
		d, err := procCPU(m.limiterdPID)
		s.limiterd, s.limiterdOK = d, err == nil
	}
	return s
}

// cpuUse is the CPU each side of a row used during it.
type cpuUse struct {
	redis, service, client time.Duration
	hasService             bool
}

func cpuBetween(a, b cpuSample) cpuUse {
	u := cpuUse{client: b.self - a.self}
	if a.redisOK && b.redisOK {
		u.redis = b.redis - a.redis
	}
	if a.limiterdOK && b.limiterdOK {
		u.service, u.hasService = b.limiterd-a.limiterd, true
	}
	return u
}
