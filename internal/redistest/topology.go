package redistest

import (
	"os"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/internal/redisclient"
)

// The environment that points the tests at an existing Redis, in the shape of
// the service's own settings (REDIS_MODE, REDIS_URL, ...) with TEST_ after
// REDIS_. scripts/redis-topology.sh prints them for the deployments it starts.
const (
	EnvMode        = "REDIS_TEST_MODE" // single (default), cluster or sentinel
	EnvURL         = "REDIS_TEST_URL"  // go-redis URL of that mode
	EnvUsername    = "REDIS_TEST_USERNAME"
	EnvPassword    = "REDIS_TEST_PASSWORD"
	EnvTLSCAFile   = "REDIS_TEST_TLS_CA_FILE"
	EnvTLSCertFile = "REDIS_TEST_TLS_CERT_FILE"
	EnvTLSKeyFile  = "REDIS_TEST_TLS_KEY_FILE"
)

// Mode returns the topology the tests run against: REDIS_TEST_MODE, or
// redisclient.ModeSingle when it is not set.
func Mode() string {
	if m := os.Getenv(EnvMode); m != "" {
		return m
	}
	return redisclient.ModeSingle
}

// Shared reports whether the tests run against an existing Redis named by
// REDIS_TEST_URL, which other tests use at the same time: tests must then
// keep to their own key prefix or user IDs.
func Shared() bool { return os.Getenv(EnvURL) != "" }

// Config describes the Redis for the test: the REDIS_TEST_* environment when
// REDIS_TEST_URL is set, otherwise a single server started for this test
// alone (Start).
func Config(t testing.TB) redisclient.Config {
	t.Helper()
	if !Shared() {
		if Mode() != redisclient.ModeSingle {
			t.Fatalf("redistest: %s=%s needs %s; start one with scripts/redis-topology.sh", EnvMode, Mode(), EnvURL)
		}
		return redisclient.Config{URL: "redis://" + Start(t).Addr}
	}
	return redisclient.Config{
		Mode:        Mode(),
		URL:         os.Getenv(EnvURL),
		Username:    os.Getenv(EnvUsername),
		Password:    os.Getenv(EnvPassword),
		TLSCAFile:   os.Getenv(EnvTLSCAFile),
		TLSCertFile: os.Getenv(EnvTLSCertFile),
		TLSKeyFile:  os.Getenv(EnvTLSKeyFile),
	}
}

// NewClient returns a client built by redisclient from cfg, closed at the
// end of the test; a cfg redisclient refuses ends the test.
func NewClient(t testing.TB, cfg redisclient.Config) redis.UniversalClient {
	t.Helper()
	rdb, err := redisclient.New(cfg)
	if err != nil {
		t.Fatalf("redistest: %v (from the %s settings)", err, "REDIS_TEST_*")
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// Env returns cfg as the service's settings (REDIS_MODE=..., REDIS_URL=...),
// for servicetest.Start; empty settings are left out.
func Env(cfg redisclient.Config) []string {
	var env []string
	for _, kv := range []struct{ name, value string }{
		{"REDIS_MODE", cfg.Mode},
		{"REDIS_URL", cfg.URL},
		{"REDIS_USERNAME", cfg.Username},
		{"REDIS_PASSWORD", cfg.Password},
		{"REDIS_TLS_CA_FILE", cfg.TLSCAFile},
		{"REDIS_TLS_CERT_FILE", cfg.TLSCertFile},
		{"REDIS_TLS_KEY_FILE", cfg.TLSKeyFile},
	} {
		if kv.value != "" {
			env = append(env, kv.name+"="+kv.value)
		}
	}
	return env
}
