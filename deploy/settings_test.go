package deploy

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"
)

// repoRoot is the service's repository: this module lives in its deploy/.
const repoRoot = ".."

// comingSettings are settings being added to limiterd now (by other changes)
// that the README's table does not list yet. Drop a name from here once the
// README lists it; the test then reads it from the README like the others.
var comingSettings = []string{}

// secretSettings may hold credentials: they belong in a Secret, never in a
// ConfigMap.
var secretSettings = []string{"REDIS_URL", "REDIS_USERNAME", "REDIS_PASSWORD"}

// settingsElsewhere are the settings a ConfigMap or compose file does not
// carry, and why. Every other setting must be written out, so that a setting
// added to the README without a thought for deployment fails a test here.
var settingsElsewhere = map[string]string{
	"REDIS_URL":           "a secret: it may hold a password",
	"REDIS_USERNAME":      "a secret",
	"REDIS_PASSWORD":      "a secret",
	"EMBEDDED_REDIS_ADDR": "used only without REDIS_URL, never in a deployment",
	"REDIS_WAIT_REPLICAS": "opt-in, documented beside the ConfigMap",
	"REDIS_TLS_CA_FILE":   "rediss:// only, documented beside the ConfigMap",
	"REDIS_TLS_CERT_FILE": "rediss:// only, documented beside the ConfigMap",
	"REDIS_TLS_KEY_FILE":  "rediss:// only, documented beside the ConfigMap",
	"REDIS_POOL_SIZE":     "go-redis's default (10 per CPU) unless measured otherwise",
}

// settingRow matches a row of the README's settings table:
// | `LEASE_TTL` | `-lease-ttl` | ...
var settingRow = regexp.MustCompile("(?m)^\\| `([A-Z][A-Z0-9_]*)` \\| `-[a-z0-9-]+` \\|")

// knownSettings returns the service's settings: the README's table plus the
// coming ones.
func knownSettings(t *testing.T) map[string]bool {
	t.Helper()
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatalf("reading the service's README for its settings: %v", err)
	}
	known := map[string]bool{}
	for _, m := range settingRow.FindAllStringSubmatch(string(readme), -1) {
		known[m[1]] = true
	}
	// A README without the table (renamed columns, say) must not make every
	// key look unknown, nor every check pass: these are there since day one.
	for _, must := range []string{"LISTEN_ADDR", "REDIS_URL", "LEASE_TTL", "SHUTDOWN_TIMEOUT"} {
		if !known[must] {
			t.Fatalf("README.md's settings table not found (no row for %s): update settingRow", must)
		}
	}
	for _, name := range comingSettings {
		known[name] = true
	}
	return known
}

// checkSettingValues checks values the way limiterd's config does, for the
// settings whose rules are simple; a bad value would stop every replica at
// startup.
func checkSettingValues(env map[string]string) []string {
	var problems []string
	durations := map[string][2]time.Duration{
		"LEASE_TTL":        {3 * time.Second, 24 * time.Hour},
		"REDIS_TIMEOUT":    {10 * time.Millisecond, 10 * time.Second},
		"SHUTDOWN_TIMEOUT": {0, 10 * time.Minute},
	}
	enums := map[string][]string{
		"REDIS_FAILURE_MODE": {"closed", "open"},
		"LOG_FORMAT":         {"json", "text"},
		"LOG_LEVEL":          {"debug", "info", "warn", "error"},
		"REDIS_MODE":         {"single", "cluster", "sentinel"},
	}
	for name, v := range env {
		if r, ok := durations[name]; ok {
			d, err := time.ParseDuration(v)
			if err != nil || d < r[0] || d > r[1] {
				problems = append(problems, fmt.Sprintf("%s=%q: want a duration from %v to %v", name, v, r[0], r[1]))
			}
		}
		if allowed, ok := enums[name]; ok && !slices.Contains(allowed, v) {
			problems = append(problems, fmt.Sprintf("%s=%q: want one of %v", name, v, allowed))
		}
	}
	if v, ok := env["STREAM_LIMIT"]; ok {
		if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 1000 {
			problems = append(problems, fmt.Sprintf("STREAM_LIMIT=%q: want a whole number from 1 to 1000", v))
		}
	}
	if v, ok := env["LISTEN_ADDR"]; ok {
		if _, err := listenPort(v); err != nil {
			problems = append(problems, fmt.Sprintf("LISTEN_ADDR=%q: %v", v, err))
		}
	}
	return problems
}

// listenPort returns the port of a LISTEN_ADDR value.
func listenPort(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("want a fixed port from 1 to 65535 (a container port), got %q", port)
	}
	return n, nil
}

// duration parses a setting that checkSettingValues has accepted, or returns
// the default the service would use.
func duration(env map[string]string, name string, def time.Duration) time.Duration {
	if v, ok := env[name]; ok {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}
