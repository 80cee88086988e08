// Command limiterd serves the stream limiter over HTTP, keeping all state in
// Redis. See README.md for its settings and routes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/httpapi"
	"github.com/limiterd/limiterd/internal/redisclient"
	"github.com/limiterd/limiterd/internal/telemetry"
	"github.com/limiterd/limiterd/limiter"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal, while draining, ends the process at once
	}()
	// go-redis logs (dial failures, mostly) through a global: set here,
	// once, not in run, which tests start many times at once. run hands it
	// its logger, so those lines share the format and level of the rest.
	redis.SetLogger(redisLogger{})
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "limiterd:", err)
		os.Exit(1)
	}
}

// run starts the service and serves until ctx is cancelled, then drains
// requests in flight and returns. Logs go to stderr; stdout is unused.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if cfg.HealthCheck {
		return healthCheck(ctx, cfg.ListenAddr)
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	redisLog.Store(log)
	metrics := telemetry.NewMetrics()

	redisCfg := cfg.Redis
	if redisCfg.URL == "" {
		dev, err := startEmbeddedRedis(cfg.EmbeddedRedisAddr, log)
		if err != nil {
			return err
		}
		defer dev.Close()
		redisCfg.URL = "redis://" + dev.Addr()
	}
	// Every call, retries included, ends within the request's deadline, so a
	// Redis that hangs makes no request hang.
	rdb, err := redisclient.New(redisCfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	metrics.WatchPool(rdb.PoolStats)

	lim, err := limiter.New(rdb, limiter.Config{
		Limit:        cfg.StreamLimit,
		LeaseTTL:     cfg.LeaseTTL,
		Timeout:      cfg.RedisTimeout,
		KeyPrefix:    cfg.KeyPrefix,
		FailOpen:     cfg.FailOpen,
		Observer:     metrics,
		WaitReplicas: cfg.WaitReplicas,
	})
	if err != nil {
		return err
	}
	if err := lim.Ping(ctx); err != nil {
		log.Warn("Redis does not answer yet; /readyz says 503 until it does", "err", err)
	}

	srv := &http.Server{
		Handler: httpapi.NewServer(httpapi.Deps{
			Streams: lim, Ready: lim, Logger: log,
			Metrics: metrics, MetricsHandler: metrics.Handler(),
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second, // above REDIS_TIMEOUT's 10s ceiling
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("LISTEN_ADDR: %w", err)
	}
	log.Info("limiterd listening", "addr", ln.Addr().String(),
		"stream_limit", cfg.StreamLimit, "lease_ttl", cfg.LeaseTTL.String(), "redis_timeout", cfg.RedisTimeout.String(),
		"redis_mode", redisCfg.Mode, "redis_url", redisclient.RedactedURL(redisCfg.URL),
		"redis_failure_mode", map[bool]string{false: "closed", true: "open"}[cfg.FailOpen])
	if cfg.FailOpen {
		log.Warn("REDIS_FAILURE_MODE=open: while Redis fails, acquires and heartbeats are granted without the limit (counted in limiterd_decisions_total)")
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serving HTTP: %w", err)
	case <-ctx.Done():
	}

	log.Info("shutting down: finishing requests in flight", "timeout", cfg.ShutdownTimeout.String())
	drainCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(drainCtx); err != nil {
		log.Warn("requests still in flight after SHUTDOWN_TIMEOUT: closing their connections", "err", err)
		srv.Close()
	}
	log.Info("stopped")
	return nil
}

// healthCheck asks the service listening on listenAddr for /healthz: the
// container image has no curl, so the binary probes itself.
func healthCheck(ctx context.Context, listenAddr string) error {
	host, port, _ := net.SplitHostPort(listenAddr)
	if port == "0" {
		return errors.New("healthcheck: LISTEN_ADDR has port 0: no port to check")
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, port) + "/healthz"
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	client := &http.Client{
		Transport:     &http.Transport{Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: GET %s: %s", url, resp.Status)
	}
	return nil
}

// newLogger writes JSON, for log collectors, unless told otherwise or
// writing to a terminal, where people read text.
func newLogger(cfg config, stderr io.Writer) (*slog.Logger, error) {
	format := cfg.LogFormat
	if format == "" {
		format = telemetry.FormatJSON
		if isTerminal(stderr) {
			format = telemetry.FormatText
		}
	}
	return telemetry.NewLogger(stderr, format, cfg.LogLevel)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// startEmbeddedRedis starts miniredis, a Redis-compatible server in this
// process, for development: its state dies with the process.
func startEmbeddedRedis(addr string, log *slog.Logger) (*embeddedRedis, error) {
	m := miniredis.NewMiniRedis()
	err := m.StartAddr(addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		host, _, _ := net.SplitHostPort(addr)
		log.Info("EMBEDDED_REDIS_ADDR is taken; using a free port", "addr", addr)
		err = m.StartAddr(net.JoinHostPort(host, "0"))
	}
	if err != nil {
		return nil, fmt.Errorf("EMBEDDED_REDIS_ADDR: starting the embedded Redis: %w", err)
	}
	inspect := "redis-cli -p " + m.Port()
	if h := m.Host(); h != "127.0.0.1" { // redis-cli's default host
		inspect = "redis-cli -h " + h + " -p " + m.Port()
	}
	log.Info("no REDIS_URL: started the embedded Redis-compatible server (miniredis)",
		"addr", m.Addr(), "inspect", inspect)
	log.Warn("the embedded Redis is for development only: its state is lost on exit and it runs on one process; set REDIS_URL in production")

	e := &embeddedRedis{Miniredis: m, stop: make(chan struct{}), done: make(chan struct{})}
	go e.tickTTLs(time.Second)
	return e, nil
}

// embeddedRedis is miniredis with its key TTLs running: miniredis counts
// them down only when told to, and idle users must be forgotten.
type embeddedRedis struct {
	*miniredis.Miniredis
	stop, done chan struct{}
}

func (e *embeddedRedis) tickTTLs(every time.Duration) {
	defer close(e.done)
	t := time.NewTicker(every)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-e.stop:
			return
		case now := <-t.C:
			e.FastForward(now.Sub(last))
			last = now
		}
	}
}

// Close stops the TTL clock and the server.
func (e *embeddedRedis) Close() {
	close(e.stop)
	<-e.done
	e.Miniredis.Close()
}

// redisLog is the logger of the running service, for go-redis's lines.
var redisLog atomic.Pointer[slog.Logger]

// redisLogger passes go-redis's own log lines to the service's logger.
type redisLogger struct{}

func (redisLogger) Printf(ctx context.Context, format string, args ...any) {
	log := redisLog.Load()
	if log == nil {
		log = slog.Default()
	}
	log.WarnContext(ctx, "redis client: "+fmt.Sprintf(format, args...))
}
