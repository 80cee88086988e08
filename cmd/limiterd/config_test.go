package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/limiterd/limiterd/internal/redisclient"
)

// envOf returns a getenv that knows only env.
func envOf(env map[string]string) func(string) string {
	return func(name string) string { return env[name] }
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, err := loadConfig(nil, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		ListenAddr:        ":8080",
		StreamLimit:       3,
		LeaseTTL:          90 * time.Second,
		RedisTimeout:      500 * time.Millisecond,
		Redis:             redisclient.Config{Mode: "single", Timeout: 500 * time.Millisecond},
		EmbeddedRedisAddr: "127.0.0.1:6379",
		ShutdownTimeout:   15 * time.Second,
		KeyPrefix:         "limiter",
		FailOpen:          false,
		LogFormat:         "",
		LogLevel:          "info",
	}
	if cfg != want {
		t.Errorf("defaults:\n got %+v\nwant %+v", cfg, want)
	}
}

// everySetting holds a valid value of every setting but the defaults, in
// both forms, and the config they make.
var (
	everySettingEnv = map[string]string{
		"LISTEN_ADDR":         "127.0.0.1:9090",
		"REDIS_URL":           "redis://:secret@redis.internal:6380/2",
		"STREAM_LIMIT":        "5",
		"LEASE_TTL":           "2m",
		"REDIS_TIMEOUT":       "250ms",
		"EMBEDDED_REDIS_ADDR": "127.0.0.1:6400",
		"SHUTDOWN_TIMEOUT":    "30s",
		"KEY_PREFIX":          "tv:limiter",
		"REDIS_FAILURE_MODE":  "open",
		"REDIS_WAIT_REPLICAS": "1",
		"REDIS_POOL_SIZE":     "64",
		"LOG_FORMAT":          "text",
		"LOG_LEVEL":           "debug",
	}
	everySettingConfig = config{
		ListenAddr: "127.0.0.1:9090",
		Redis: redisclient.Config{
			Mode: "single", URL: "redis://:secret@redis.internal:6380/2", Timeout: 250 * time.Millisecond,
			PoolSize: 64,
		},
		StreamLimit:       5,
		LeaseTTL:          2 * time.Minute,
		RedisTimeout:      250 * time.Millisecond,
		EmbeddedRedisAddr: "127.0.0.1:6400",
		ShutdownTimeout:   30 * time.Second,
		KeyPrefix:         "tv:limiter",
		FailOpen:          true,
		WaitReplicas:      1,
		LogFormat:         "text",
		LogLevel:          "debug",
	}
)

func TestLoadConfigFromEnv(t *testing.T) {
	cfg, err := loadConfig(nil, envOf(everySettingEnv), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg != everySettingConfig {
		t.Errorf("from env:\n got %+v\nwant %+v", cfg, everySettingConfig)
	}
}

func TestLoadConfigFromFlags(t *testing.T) {
	var args []string
	for env, v := range everySettingEnv {
		args = append(args, "-"+flagName(env), v)
	}
	cfg, err := loadConfig(args, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg != everySettingConfig {
		t.Errorf("from flags %q:\n got %+v\nwant %+v", args, cfg, everySettingConfig)
	}
}

func TestLoadConfigFlagBeatsEnv(t *testing.T) {
	tests := []struct {
		env, envValue string
		flag          string
		check         func(config) bool
	}{
		{"LISTEN_ADDR", ":1111", "-listen-addr=:2222", func(c config) bool { return c.ListenAddr == ":2222" }},
		{"REDIS_URL", "redis://a:6379", "-redis-url=redis://b:6379", func(c config) bool { return c.Redis.URL == "redis://b:6379" }},
		{"REDIS_URL", "redis://a:6379", "-redis-url=", func(c config) bool { return c.Redis.URL == "" }},
		{"STREAM_LIMIT", "5", "-stream-limit=7", func(c config) bool { return c.StreamLimit == 7 }},
		{"LEASE_TTL", "1m", "-lease-ttl=2m", func(c config) bool { return c.LeaseTTL == 2*time.Minute }},
		{"REDIS_TIMEOUT", "1s", "-redis-timeout=2s", func(c config) bool { return c.RedisTimeout == 2*time.Second }},
		{"EMBEDDED_REDIS_ADDR", ":1", "-embedded-redis-addr=:2", func(c config) bool { return c.EmbeddedRedisAddr == ":2" }},
		{"SHUTDOWN_TIMEOUT", "1s", "-shutdown-timeout=2s", func(c config) bool { return c.ShutdownTimeout == 2*time.Second }},
		{"KEY_PREFIX", "env", "-key-prefix=flag", func(c config) bool { return c.KeyPrefix == "flag" }},
		{"REDIS_FAILURE_MODE", "open", "-redis-failure-mode=closed", func(c config) bool { return !c.FailOpen }},
		{"LOG_FORMAT", "json", "-log-format=text", func(c config) bool { return c.LogFormat == "text" }},
		{"LOG_LEVEL", "warn", "-log-level=error", func(c config) bool { return c.LogLevel == "error" }},
	}
	for _, tt := range tests {
		t.Run(tt.flag, func(t *testing.T) {
			cfg, err := loadConfig([]string{tt.flag}, envOf(map[string]string{tt.env: tt.envValue}), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(cfg) {
				t.Errorf("%s=%s with %s gave %+v: the flag should win", tt.env, tt.envValue, tt.flag, cfg)
			}
		})
	}
}

// A flag replaces its environment variable's value before any is checked,
// so an invalid value in the environment does not matter then.
func TestLoadConfigFlagReplacesInvalidEnv(t *testing.T) {
	cfg, err := loadConfig([]string{"-stream-limit=4"}, envOf(map[string]string{"STREAM_LIMIT": "abc"}), io.Discard)
	if err != nil || cfg.StreamLimit != 4 {
		t.Errorf("got %d, %v; want 4, nil", cfg.StreamLimit, err)
	}
}

func TestLoadConfigBounds(t *testing.T) {
	tests := []struct {
		env, value string
		check      func(config) bool
	}{
		{"STREAM_LIMIT", "1", func(c config) bool { return c.StreamLimit == 1 }},
		{"STREAM_LIMIT", "1000", func(c config) bool { return c.StreamLimit == 1000 }},
		{"LEASE_TTL", "3s", func(c config) bool { return c.LeaseTTL == 3*time.Second }},
		{"LEASE_TTL", "24h", func(c config) bool { return c.LeaseTTL == 24*time.Hour }},
		{"REDIS_TIMEOUT", "10ms", func(c config) bool { return c.RedisTimeout == 10*time.Millisecond }},
		{"REDIS_TIMEOUT", "10s", func(c config) bool { return c.RedisTimeout == 10*time.Second }},
		{"SHUTDOWN_TIMEOUT", "0s", func(c config) bool { return c.ShutdownTimeout == 0 }},
		{"SHUTDOWN_TIMEOUT", "10m", func(c config) bool { return c.ShutdownTimeout == 10*time.Minute }},
		{"LISTEN_ADDR", ":0", func(c config) bool { return c.ListenAddr == ":0" }},
		{"LISTEN_ADDR", "[::1]:65535", func(c config) bool { return c.ListenAddr == "[::1]:65535" }},
		{"REDIS_URL", "rediss://user:pw@host:6379/0", func(c config) bool { return c.Redis.URL == "rediss://user:pw@host:6379/0" }},
		{"KEY_PREFIX", "a:b-c_d", func(c config) bool { return c.KeyPrefix == "a:b-c_d" }},
	}
	for _, tt := range tests {
		t.Run(tt.env+"="+tt.value, func(t *testing.T) {
			cfg, err := loadConfig(nil, envOf(map[string]string{tt.env: tt.value}), io.Discard)
			if err != nil {
				t.Fatalf("%s=%s: %v", tt.env, tt.value, err)
			}
			if !tt.check(cfg) {
				t.Errorf("%s=%s gave %+v", tt.env, tt.value, cfg)
			}
		})
	}
}

func TestLoadConfigInvalid(t *testing.T) {
	tests := []struct {
		env, value string
	}{
		{"STREAM_LIMIT", "abc"},
		{"STREAM_LIMIT", "0"},
		{"STREAM_LIMIT", "-1"},
		{"STREAM_LIMIT", "1001"},
		{"STREAM_LIMIT", "2.5"},
		{"LEASE_TTL", "1s"},
		{"LEASE_TTL", "soon"},
		{"LEASE_TTL", "90"},
		{"LEASE_TTL", "25h"},
		{"REDIS_TIMEOUT", "0s"},
		{"REDIS_TIMEOUT", "9ms"},
		{"REDIS_TIMEOUT", "11s"},
		{"REDIS_TIMEOUT", "2m"},
		{"SHUTDOWN_TIMEOUT", "-1s"},
		{"SHUTDOWN_TIMEOUT", "11m"},
		{"LISTEN_ADDR", "8080"},
		{"LISTEN_ADDR", "127.0.0.1:"},
		{"LISTEN_ADDR", ":65536"},
		{"LISTEN_ADDR", ":http"},
		{"EMBEDDED_REDIS_ADDR", "localhost"},
		{"EMBEDDED_REDIS_ADDR", ":-1"},
		{"REDIS_URL", "http://x"},
		{"REDIS_URL", "redis://host:6379/notadb"},
		{"KEY_PREFIX", "a{b}"},
		{"KEY_PREFIX", "a b"},
		{"REDIS_FAILURE_MODE", "fail-open"},
		{"REDIS_WAIT_REPLICAS", "-1"},
		{"REDIS_MODE", "ring"},
		{"REDIS_POOL_SIZE", "-1"},
		{"REDIS_POOL_SIZE", "lots"},
		{"REDIS_WAIT_REPLICAS", "17"},
		{"REDIS_WAIT_REPLICAS", "one"},
		{"REDIS_FAILURE_MODE", "Open"},
		{"LOG_FORMAT", "yaml"},
		{"LOG_LEVEL", "verbose"},
		{"LOG_LEVEL", "INFO+2"},
	}
	for _, tt := range tests {
		t.Run(tt.env+"="+tt.value, func(t *testing.T) {
			_, err := loadConfig(nil, envOf(map[string]string{tt.env: tt.value}), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.env) {
				t.Errorf("%s=%q: error %v, want one naming %s", tt.env, tt.value, err, tt.env)
			}
		})
		t.Run("-"+flagName(tt.env)+"="+tt.value, func(t *testing.T) {
			flag := "-" + flagName(tt.env)
			_, err := loadConfig([]string{flag, tt.value}, envOf(nil), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.env) || !strings.Contains(err.Error(), flag) {
				t.Errorf("%s %q: error %v, want one naming %s and %s", flag, tt.value, err, tt.env, flag)
			}
		})
	}
}

// An invalid REDIS_URL is reported without its password: the error goes to
// logs.
func TestLoadConfigInvalidRedisURLHidesPassword(t *testing.T) {
	for _, v := range []string{
		"redis://:s3cret@127.0.0.1:6379/notadb",
		"redis://user:s3cret@127.0.0.1:6379/0?no_such_option=1",
		"redis://user:s3cr%zzet@127.0.0.1:6379/0", // not even a URL
	} {
		_, err := loadConfig(nil, envOf(map[string]string{"REDIS_URL": v}), io.Discard)
		if err == nil || !strings.Contains(err.Error(), "REDIS_URL") || strings.Contains(err.Error(), "s3cr") {
			t.Errorf("REDIS_URL=%q: error %v, want one naming REDIS_URL without the password", v, err)
		}
	}
}

// An empty environment variable means "not set", but an empty flag is a
// value: an empty key prefix is refused.
func TestLoadConfigEmptyKeyPrefixFlag(t *testing.T) {
	_, err := loadConfig([]string{"-key-prefix="}, envOf(nil), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "KEY_PREFIX") {
		t.Errorf("error %v, want one naming KEY_PREFIX", err)
	}
}

func TestLoadConfigArguments(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"serve"}, `unexpected argument "serve"`},
		{[]string{"-stream-limit", "5", "extra"}, `unexpected argument "extra"`},
		{[]string{"-no-such-flag"}, "no-such-flag"},
		{[]string{"-stream-limit"}, "stream-limit"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := loadConfig(tt.args, envOf(nil), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("args %q: error %v, want one containing %q", tt.args, err, tt.wantErr)
			}
		})
	}
}

func TestLoadConfigHelp(t *testing.T) {
	var usage strings.Builder
	_, err := loadConfig([]string{"-h"}, envOf(nil), &usage)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: error %v, want flag.ErrHelp", err)
	}
	for _, s := range settings {
		if !strings.Contains(usage.String(), "-"+flagName(s.env)) || !strings.Contains(usage.String(), "env "+s.env) {
			t.Errorf("usage does not show -%s and env %s:\n%s", flagName(s.env), s.env, usage.String())
		}
	}
}

func TestRunHelp(t *testing.T) {
	// Should -h not stop run, the cancelled context stops it at once, and the
	// log shows that it listened.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	stderr := newLogBuffer()
	env := map[string]string{"LISTEN_ADDR": "127.0.0.1:0", "EMBEDDED_REDIS_ADDR": "127.0.0.1:0"}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-h"}, envOf(env), io.Discard, stderr) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run -h returned %v, want nil", err)
		}
	case <-time.After(stopTimeout):
		t.Fatalf("run -h did not return within %v", stopTimeout)
	}
	out := stderr.String()
	if !strings.Contains(out, "-stream-limit") {
		t.Errorf("run -h printed no usage on stderr:\n%s", out)
	}
	if strings.Contains(out, "msg=") { // slog's lines: usage has none
		t.Errorf("run -h started the service:\n%s", out)
	}
}

func TestLoadConfigShowsOrdinaryValuesAsGiven(t *testing.T) {
	_, err := loadConfig(nil, envOf(map[string]string{"KEY_PREFIX": "a{b}"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), `"a{b}"`) {
		t.Errorf("err = %v, want the value quoted as given", err)
	}
}

// The Redis settings are checked together: each depends on the others.
func TestLoadConfigRedisSettingsTogether(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string // "" for valid
	}{
		{"cluster seeds", map[string]string{"REDIS_MODE": "cluster", "REDIS_URL": "redis://10.0.0.1:7000?addr=10.0.0.2:7000"}, ""},
		{"sentinels", map[string]string{"REDIS_MODE": "sentinel", "REDIS_URL": "redis://10.0.0.1:26379?master_name=mymaster"}, ""},
		{"sentinel without a master name", map[string]string{"REDIS_MODE": "sentinel", "REDIS_URL": "redis://10.0.0.1:26379"}, "REDIS_URL"},
		{"cluster without a URL", map[string]string{"REDIS_MODE": "cluster"}, "REDIS_URL"},
		{"a password for the embedded server", map[string]string{"REDIS_PASSWORD": "s3cret"}, "REDIS_URL"},
		{"a CA without TLS", map[string]string{"REDIS_URL": "redis://h:6379", "REDIS_TLS_CA_FILE": "/no/such/ca.pem"}, "REDIS_TLS_CA_FILE"},
		{"a CA file that is not there", map[string]string{"REDIS_URL": "rediss://h:6379", "REDIS_TLS_CA_FILE": "/no/such/ca.pem"}, "REDIS_TLS_CA_FILE"},
		{"a single URL with cluster seeds", map[string]string{"REDIS_URL": "redis://h:6379?addr=h2:6379"}, "REDIS_URL"},
		{"replicas to wait for on the embedded server", map[string]string{"REDIS_WAIT_REPLICAS": "1"}, "REDIS_WAIT_REPLICAS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(nil, envOf(tt.env), io.Discard)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("%v: %v", tt.env, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("%v: error %v, want one naming %s", tt.env, err, tt.wantErr)
			case err != nil && strings.Contains(err.Error(), "s3cret"):
				t.Errorf("error %v shows the password", err)
			}
		})
	}
}
