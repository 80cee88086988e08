package deploy

import (
	"context"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

const composeFile = "compose.yaml"

// loadCompose loads compose.yaml as `docker compose` does (compose-go is its
// loader): the Compose Specification's JSON schema refuses unknown keys,
// ${VAR:-default} is interpolated from env alone (never from the test's own
// environment), and paths are resolved against deploy/.
func loadCompose(t *testing.T, src []byte, env map[string]string) (*types.Project, error) {
	t.Helper()
	wd, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  wd,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(wd, composeFile), Content: src}},
		Environment: types.Mapping(env),
	})
}

func readCompose(t *testing.T) []byte {
	t.Helper()
	src, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// limiterdServices returns the services built from this repository, sorted.
func limiterdServices(p *types.Project) []types.ServiceConfig {
	var out []types.ServiceConfig
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		if s := p.Services[name]; s.Build != nil {
			out = append(out, s)
		}
	}
	return out
}

// redisCommand returns the redis service's redis-server command, and its
// --requirepass value.
func redisCommand(s types.ServiceConfig) (cmd []string, password string) {
	cmd = s.Command
	if i := slices.Index(cmd, "--requirepass"); i >= 0 && i+1 < len(cmd) {
		password = cmd[i+1]
	}
	return cmd, password
}

// checkCompose returns every way the local stack differs from how limiterd
// must run: the same settings as the Kubernetes ConfigMap, the same
// hardening, a Redis on deploy/redis.conf that the replicas can log in to,
// and a load balancer in front of every replica.
func checkCompose(p *types.Project, configMap map[string]string, known map[string]bool) []string {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	redis, ok := p.Services["redis"]
	if !ok {
		add("no redis service")
		return problems
	}
	if !strings.HasPrefix(redis.Image, "redis:7") {
		add("redis image %q, want redis:7 (the major version the tests run)", redis.Image)
	}
	cmd, password := redisCommand(redis)
	if len(cmd) < 2 || cmd[0] != "redis-server" {
		add("redis command %q: want redis-server <conf> ...", cmd)
		return problems
	}
	confAbs, _ := filepath.Abs("redis.conf")
	var confMounted, dataVolume bool
	for _, v := range redis.Volumes {
		if v.Type == types.VolumeTypeBind && v.Target == cmd[1] && v.Source == confAbs && v.ReadOnly {
			confMounted = true
		}
		if v.Type == types.VolumeTypeVolume && v.Target == "/data" {
			dataVolume = true
		}
	}
	if !confMounted {
		add("redis does not run on deploy/redis.conf: want it mounted read-only at %s, the command's config file", cmd[1])
	}
	if !dataVolume {
		add("redis has no volume at /data: the AOF would die with the container")
	}
	if password == "" {
		add("redis has no --requirepass: redis.conf's protected mode refuses the replicas' containers")
	}
	if redis.HealthCheck == nil || len(redis.HealthCheck.Test) == 0 {
		add("redis has no health check for the replicas to wait on")
	}

	replicas := limiterdServices(p)
	if len(replicas) < 2 {
		add("%d limiterd services, want at least 2 replicas", len(replicas))
	}
	repoAbs, _ := filepath.Abs(repoRoot)
	published := map[string]string{}
	for _, s := range replicas {
		name := s.Name
		if s.Build.Context != repoAbs || s.Build.Dockerfile != "deploy/Dockerfile" {
			add("%s builds %s with %s, want the repository root with deploy/Dockerfile", name, s.Build.Context, s.Build.Dockerfile)
		}
		env := map[string]string{}
		for k, v := range s.Environment {
			if v != nil {
				env[k] = *v
			}
		}
		for k := range env {
			if !known[k] {
				add("%s: environment %s is not a limiterd setting", name, k)
			}
		}
		for _, pr := range checkSettingValues(env) {
			add("%s: %s", name, pr)
		}
		// The local stack runs with production's settings.
		withoutURL := maps.Clone(env)
		delete(withoutURL, "REDIS_URL")
		if !maps.Equal(withoutURL, configMap) {
			add("%s: settings %v differ from the Kubernetes ConfigMap's %v", name, withoutURL, configMap)
		}
		u, err := url.Parse(env["REDIS_URL"])
		if err != nil || u.Scheme != "redis" || u.Hostname() != "redis" || u.Port() != "6379" {
			add("%s: REDIS_URL %q: want redis://:PASSWORD@redis:6379/0, the redis service", name, env["REDIS_URL"])
		} else if pw, _ := u.User.Password(); pw != password {
			add("%s: REDIS_URL's password is not redis's --requirepass", name)
		}
		if dep, ok := s.DependsOn["redis"]; !ok || dep.Condition != types.ServiceConditionHealthy {
			add("%s must depend on redis with condition service_healthy", name)
		}
		shutdown := duration(env, "SHUTDOWN_TIMEOUT", 15*time.Second)
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= shutdown {
			add("%s: stop_grace_period must exceed SHUTDOWN_TIMEOUT %v (docker's default is 10s)", name, shutdown)
		}
		if !s.ReadOnly {
			add("%s: read_only must be true", name)
		}
		if !slices.Contains(s.CapDrop, "ALL") || len(s.CapAdd) > 0 {
			add("%s: cap_drop must be [ALL], with no cap_add", name)
		}
		if !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			add("%s: security_opt must hold no-new-privileges:true", name)
		}
		uid, _, _ := strings.Cut(s.User, ":")
		if n, err := strconv.Atoi(uid); err != nil || n == 0 {
			add("%s: user %q, want a numeric non-root uid", name, s.User)
		}
		port, err := listenPort(env["LISTEN_ADDR"])
		if err != nil {
			add("%s: LISTEN_ADDR: %v", name, err)
		}
		for _, pc := range s.Ports {
			if int(pc.Target) != port {
				add("%s publishes container port %d, not LISTEN_ADDR's %d", name, pc.Target, port)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		for _, pc := range p.Services[name].Ports {
			if pc.HostIP != "127.0.0.1" {
				add("%s publishes port %s on %q: publish on 127.0.0.1 only, this is a local stack", name, pc.Published, pc.HostIP)
			}
			if other, dup := published[pc.Published]; dup {
				add("%s and %s both publish host port %s", other, name, pc.Published)
			}
			published[pc.Published] = name
		}
	}
	return problems
}

func TestComposeFileLoadsAndHangsTogether(t *testing.T) {
	p, err := loadCompose(t, readCompose(t), nil)
	if err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	m := loadManifests(t)
	for _, problem := range checkCompose(p, m.ConfigMap.Data, knownSettings(t)) {
		t.Error(problem)
	}
}

// A password given in the environment reaches both ends: redis-server's
// --requirepass and every replica's REDIS_URL.
func TestComposePasswordFromTheEnvironment(t *testing.T) {
	p, err := loadCompose(t, readCompose(t), map[string]string{"REDIS_PASSWORD": "from-the-shell"})
	if err != nil {
		t.Fatal(err)
	}
	if _, pw := redisCommand(p.Services["redis"]); pw != "from-the-shell" {
		t.Errorf("redis --requirepass = %q, want the environment's REDIS_PASSWORD", pw)
	}
	for _, s := range limiterdServices(p) {
		u, err := url.Parse(*s.Environment["REDIS_URL"])
		if err != nil {
			t.Fatal(err)
		}
		if pw, _ := u.User.Password(); pw != "from-the-shell" {
			t.Errorf("%s: REDIS_URL password = %q, want the environment's REDIS_PASSWORD", s.Name, pw)
		}
	}
}

// The checks (and the loader's schema) must be able to fail.
func TestComposeChecksCatchMistakes(t *testing.T) {
	src := string(readCompose(t))
	m := loadManifests(t)
	known := knownSettings(t)
	tests := []struct {
		name, old, new, want string
	}{
		// compose-go names whichever replica it validates first.
		{"unknown key in both replicas", "  read_only: true", "  read_only: true\n  readonly: true", ".readonly"},
		{"misspelt key", "    stop_grace_period: 10s", "    stop_grace_perod: 10s", "services.redis.stop_grace_perod"},
		{"grace period too short", "stop_grace_period: 20s", "stop_grace_period: 10s", "stop_grace_period"},
		{"writable", "  read_only: true", "  read_only: false", "read_only"},
		{"root", `user: "65532:65532"`, `user: "0:0"`, "non-root"},
		{"another password", "redis://:${REDIS_PASSWORD:-limiterd-local-only}@", "redis://:${REDIS_PASSWORD:-other}@", "--requirepass"},
		{"another Redis", "@redis:6379/0", "@localhost:6379/0", "REDIS_URL"},
		{"settings drift", "STREAM_LIMIT: \"3\"", "STREAM_LIMIT: \"4\"", "differ from the Kubernetes ConfigMap"},
		{"unknown setting", "    LOG_LEVEL: info\n", "    LOG_LEVEL: info\n    LOG_LEVL: info\n", "not a limiterd setting"},
		{"public port", `"127.0.0.1:8081:8080"`, `"8081:8080"`, "127.0.0.1 only"},
		{"no conf", "./redis.conf:/usr/local/etc/redis/redis.conf:ro", "./redis.conf:/etc/redis.conf:ro", "deploy/redis.conf"},
		{"Redis 6", "image: redis:7", "image: redis:6", "redis:7"},
		{"not waiting for Redis", "condition: service_healthy", "condition: service_started", "service_healthy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(src, tc.old) {
				t.Fatalf("%s no longer contains %q: update the test", composeFile, tc.old)
			}
			p, err := loadCompose(t, []byte(strings.Replace(src, tc.old, tc.new, 1)), nil)
			if err != nil {
				if strings.Contains(err.Error(), tc.want) {
					return
				}
				t.Fatalf("loading: %v; want a problem mentioning %q", err, tc.want)
			}
			problems := checkCompose(p, m.ConfigMap.Data, known)
			for _, pr := range problems {
				if strings.Contains(pr, tc.want) {
					return
				}
			}
			t.Fatalf("no problem mentions %q; got %q", tc.want, problems)
		})
	}
}

var nginxServer = regexp.MustCompile(`(?m)^\s*server\s+([A-Za-z0-9._-]+:\d+)[\s;]`)

// nginx in front must send traffic to every replica, at LISTEN_ADDR's port,
// and to nothing else.
func TestNginxUpstreamIsEveryReplica(t *testing.T) {
	p, err := loadCompose(t, readCompose(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	lb, ok := p.Services["lb"]
	if !ok {
		t.Fatal("no lb service")
	}
	confAbs, _ := filepath.Abs("nginx.conf")
	var mounted bool
	for _, v := range lb.Volumes {
		mounted = mounted || (v.Source == confAbs && v.Target == "/etc/nginx/nginx.conf" && v.ReadOnly)
	}
	if !mounted {
		t.Error("lb does not mount deploy/nginx.conf read-only at /etc/nginx/nginx.conf")
	}
	conf, err := os.ReadFile("nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, m := range nginxServer.FindAllStringSubmatch(string(conf), -1) {
		got = append(got, m[1])
	}
	for _, s := range limiterdServices(p) {
		port, err := listenPort(*s.Environment["LISTEN_ADDR"])
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, fmt.Sprintf("%s:%d", s.Name, port))
		if _, ok := lb.DependsOn[s.Name]; !ok {
			t.Errorf("lb does not depend on %s: nginx fails to start if it cannot resolve an upstream", s.Name)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("nginx upstream servers %q, want the replicas %q", got, want)
	}
}
