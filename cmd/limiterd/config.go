package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/limiterd/limiterd/internal/redisclient"
	"github.com/limiterd/limiterd/internal/telemetry"
)

// config is every setting of the service. Each comes from a flag, else from
// its environment variable, else from its default.
type config struct {
	ListenAddr        string
	Redis             redisclient.Config // an empty URL starts the embedded development server
	StreamLimit       int
	LeaseTTL          time.Duration
	RedisTimeout      time.Duration
	EmbeddedRedisAddr string
	ShutdownTimeout   time.Duration
	KeyPrefix         string
	FailOpen          bool // REDIS_FAILURE_MODE=open
	WaitReplicas      int
	LogFormat         string // "json", "text", or "" for json unless stderr is a terminal
	LogLevel          string
	HealthCheck       bool // -healthcheck: probe a running service and exit
}

// setting is one row of the configuration table (README.md shows the same).
type setting struct {
	env, def, usage string
	parse           func(cfg *config, value string) error
	secret          bool // may hold a password: never echoed as given
}

var settings = []setting{
	{"LISTEN_ADDR", ":8080", "HTTP listen address", func(c *config, v string) error {
		c.ListenAddr = v
		return checkHostPort(v)
	}, false},
	{"REDIS_URL", "", "Redis to keep state in, in go-redis's URL form for REDIS_MODE: redis://[user:password@]host:port/db (rediss:// for TLS); empty starts an embedded development server", func(c *config, v string) error {
		c.Redis.URL = v
		if _, err := url.Parse(v); err != nil {
			return errors.New("not a valid URL") // url's own error would quote the password
		}
		return nil // checked with the other Redis settings in checkRedis
	}, true},
	{"REDIS_MODE", "single", "Redis topology: single (one server or a managed endpoint), cluster (REDIS_URL names seeds: redis://host:port?addr=host2:port2) or sentinel (REDIS_URL names Sentinels: redis://host:port?addr=host2:port2&master_name=NAME)", func(c *config, v string) error {
		switch v {
		case redisclient.ModeSingle, redisclient.ModeCluster, redisclient.ModeSentinel:
			c.Redis.Mode = v
			return nil
		}
		return fmt.Errorf("want single, cluster or sentinel")
	}, false},
	{"REDIS_USERNAME", "", "Redis ACL user of the data nodes, replacing the URL's (in sentinel mode the URL's user is the Sentinels')", func(c *config, v string) error {
		c.Redis.Username = v
		return nil
	}, false},
	{"REDIS_PASSWORD", "", "password of REDIS_USERNAME (or of the default user), replacing the URL's: keeps it out of the URL", func(c *config, v string) error {
		c.Redis.Password = v
		return nil
	}, true},
	{"REDIS_TLS_CA_FILE", "", "PEM file of the CAs to trust for rediss:// instead of the system's", func(c *config, v string) error {
		c.Redis.TLSCAFile = v
		return nil
	}, false},
	{"REDIS_TLS_CERT_FILE", "", "client certificate (PEM) for a Redis that requires one; with REDIS_TLS_KEY_FILE", func(c *config, v string) error {
		c.Redis.TLSCertFile = v
		return nil
	}, false},
	{"REDIS_TLS_KEY_FILE", "", "key (PEM) of REDIS_TLS_CERT_FILE", func(c *config, v string) error {
		c.Redis.TLSKeyFile = v
		return nil
	}, false},
	{"REDIS_POOL_SIZE", "0", "most connections to each Redis node; 0 means go-redis's default, 10 per CPU (0 to 10000)", func(c *config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 10000 {
			return fmt.Errorf("want a whole number from 0 to 10000")
		}
		c.Redis.PoolSize = n
		return nil
	}, false},
	{"STREAM_LIMIT", "3", "most concurrent streams per user (1 to 1000)", func(c *config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return fmt.Errorf("want a whole number from 1 to 1000")
		}
		c.StreamLimit = n
		return nil
	}, false},
	{"LEASE_TTL", "90s", "how long a lease lasts without a heartbeat (3s to 24h)", func(c *config, v string) error {
		return parseDuration(&c.LeaseTTL, v, 3*time.Second, 24*time.Hour)
	}, false},
	{"REDIS_TIMEOUT", "500ms", "longest wait for Redis on one request, after which it is answered 503 (10ms to 10s)", func(c *config, v string) error {
		// At most 10s, so the 503 is written well inside the HTTP server's
		// WriteTimeout (main.go) instead of the connection being cut.
		err := parseDuration(&c.RedisTimeout, v, 10*time.Millisecond, 10*time.Second)
		c.Redis.Timeout = c.RedisTimeout
		return err
	}, false},
	{"EMBEDDED_REDIS_ADDR", "127.0.0.1:6379", "address of the embedded server when REDIS_URL is empty; a free port is used if it is taken", func(c *config, v string) error {
		c.EmbeddedRedisAddr = v
		return checkHostPort(v)
	}, false},
	{"SHUTDOWN_TIMEOUT", "15s", "longest wait for requests in flight on SIGTERM (0s to 10m)", func(c *config, v string) error {
		return parseDuration(&c.ShutdownTimeout, v, 0, 10*time.Minute)
	}, false},
	{"KEY_PREFIX", "limiter", "first part of every Redis key, as in limiter:{USER_ID}:streams", func(c *config, v string) error {
		c.KeyPrefix = v
		if v == "" || strings.ContainsAny(v, "{} \t\r\n") {
			return fmt.Errorf("want a non-empty prefix without braces or spaces")
		}
		return nil
	}, false},
	{"REDIS_FAILURE_MODE", "closed", "when Redis fails: closed answers 503 (the limit holds), open admits without Redis and says degraded (the viewer keeps watching)", func(c *config, v string) error {
		switch v {
		case "closed", "open":
			c.FailOpen = v == "open"
			return nil
		}
		return fmt.Errorf("want closed or open")
	}, false},
	{"REDIS_WAIT_REPLICAS", "0", "replicas that must confirm each acquire (Redis WAIT, same round trip) before it is answered; fewer is 503 (0 to 16, 0 = do not wait)", func(c *config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 16 {
			return fmt.Errorf("want a whole number from 0 to 16")
		}
		c.WaitReplicas = n
		return nil
	}, false},
	{"LOG_FORMAT", "", "log format, json or text; empty means json unless stderr is a terminal", func(c *config, v string) error {
		switch v {
		case "", telemetry.FormatJSON, telemetry.FormatText:
			c.LogFormat = v
			return nil
		}
		return fmt.Errorf("want json or text")
	}, false},
	{"LOG_LEVEL", "info", "least severe log level written: debug (adds user IDs), info (one line per request), warn or error", func(c *config, v string) error {
		switch v {
		case "debug", "info", "warn", "error":
			c.LogLevel = v
			return nil
		}
		return fmt.Errorf("want debug, info, warn or error")
	}, false},
}

// flagName turns LEASE_TTL into lease-ttl.
func flagName(env string) string {
	return strings.ReplaceAll(strings.ToLower(env), "_", "-")
}

// loadConfig reads the settings from args and the environment. An invalid
// value is an error that names the setting.
func loadConfig(args []string, getenv func(string) string, usageOut io.Writer) (config, error) {
	fs := flag.NewFlagSet("limiterd", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	values := make([]*string, len(settings))
	for i, s := range settings {
		def := s.def
		if v := getenv(s.env); v != "" {
			def = v
		}
		values[i] = fs.String(flagName(s.env), def, fmt.Sprintf("%s (env %s)", s.usage, s.env))
	}
	healthCheck := fs.Bool("healthcheck", false, "check that the service on LISTEN_ADDR answers /healthz, exit 0 if so, 1 if not, and start nothing (for container health checks)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var cfg config
	for i, s := range settings {
		if err := s.parse(&cfg, *values[i]); err != nil {
			shown := *values[i]
			if s.secret {
				shown = redact(shown)
			}
			return config{}, fmt.Errorf("invalid %s (-%s) %q: %w", s.env, flagName(s.env), shown, err)
		}
	}
	cfg.HealthCheck = *healthCheck
	if cfg.HealthCheck {
		return cfg, nil // uses LISTEN_ADDR alone
	}
	if err := checkRedis(cfg.Redis); err != nil {
		return config{}, err
	}
	if cfg.Redis.URL == "" && cfg.WaitReplicas > 0 {
		return config{}, errors.New("invalid REDIS_WAIT_REPLICAS (-redis-wait-replicas): the embedded development server (REDIS_URL empty) has no replicas")
	}
	return cfg, nil
}

// checkRedis checks the Redis settings together, as they depend on each
// other (the URL's form on the mode, TLS files on rediss://), by building a
// client: that connects to nothing.
func checkRedis(rc redisclient.Config) error {
	if rc.URL == "" {
		if rc != (redisclient.Config{Mode: rc.Mode, Timeout: rc.Timeout, PoolSize: rc.PoolSize}) || rc.Mode != redisclient.ModeSingle {
			return errors.New("invalid Redis settings (-redis-url): REDIS_URL is empty, so the embedded development server is used, but other REDIS_ settings are set for a real Redis")
		}
		return nil
	}
	rdb, err := redisclient.New(rc)
	if err != nil {
		setting, reason, _ := strings.Cut(err.Error(), ": ")
		return fmt.Errorf("invalid %s (-%s): %s", setting, flagName(setting), reason)
	}
	return rdb.Close()
}

func parseDuration(dst *time.Duration, v string, min, max time.Duration) error {
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("want a duration such as 90s or 500ms")
	}
	if d < min || d > max {
		return fmt.Errorf("want a duration from %v to %v", min, max)
	}
	*dst = d
	return nil
}

func checkHostPort(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("want host:port, such as :8080 or 127.0.0.1:8080")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("want a port from 0 to 65535")
	}
	return nil
}

// redact hides the password of a URL, so that a mistyped REDIS_URL can be
// reported without leaking it.
func redact(v string) string {
	u, err := url.Parse(v)
	if err != nil {
		if strings.Contains(v, "@") {
			return "(not shown: it may hold a password)"
		}
		return v
	}
	return u.Redacted()
}
