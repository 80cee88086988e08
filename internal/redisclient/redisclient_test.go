package redisclient_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/internal/redisclient"
	"github.com/limiterd/limiterd/internal/redistest"
)

// secret is the password in every URL and setting below: no error may show it.
const secret = "s3cr3t-pw"

// parsed is the part of go-redis's options these tests check, whatever the mode.
type parsed struct {
	Mode                           string
	Addrs                          []string
	Username, Password             string
	SentinelUsername, SentinelPass string
	MasterName                     string
	DB                             int
	Timeouts                       [4]time.Duration // dial, read, write, pool
	ContextTimeouts                bool
	PoolSize                       int
	TLS, TLSRootCAs, TLSClientCert bool
	TLSServerName                  string
	TLSMinVersion                  uint16
	TLSSkipVerify                  bool
	Network                        string
}

func parse(t *testing.T, cfg redisclient.Config) (parsed, error) {
	t.Helper()
	single, cluster, failover, err := redisclient.Parse(cfg)
	if err != nil {
		return parsed{}, err
	}
	var p parsed
	var tc *tls.Config
	switch {
	case single != nil:
		p = parsed{Mode: "single", Addrs: []string{single.Addr}, Network: single.Network,
			Username: single.Username, Password: single.Password, DB: single.DB,
			Timeouts:        [4]time.Duration{single.DialTimeout, single.ReadTimeout, single.WriteTimeout, single.PoolTimeout},
			ContextTimeouts: single.ContextTimeoutEnabled, PoolSize: single.PoolSize}
		tc = single.TLSConfig
	case cluster != nil:
		p = parsed{Mode: "cluster", Addrs: cluster.Addrs,
			Username: cluster.Username, Password: cluster.Password,
			Timeouts:        [4]time.Duration{cluster.DialTimeout, cluster.ReadTimeout, cluster.WriteTimeout, cluster.PoolTimeout},
			ContextTimeouts: cluster.ContextTimeoutEnabled, PoolSize: cluster.PoolSize}
		tc = cluster.TLSConfig
	case failover != nil:
		p = parsed{Mode: "sentinel", Addrs: failover.SentinelAddrs, MasterName: failover.MasterName,
			Username: failover.Username, Password: failover.Password, DB: failover.DB,
			SentinelUsername: failover.SentinelUsername, SentinelPass: failover.SentinelPassword,
			Timeouts:        [4]time.Duration{failover.DialTimeout, failover.ReadTimeout, failover.WriteTimeout, failover.PoolTimeout},
			ContextTimeouts: failover.ContextTimeoutEnabled, PoolSize: failover.PoolSize}
		tc = failover.TLSConfig
	default:
		t.Fatal("Parse returned no options and no error")
	}
	if tc != nil {
		p.TLS = true
		p.TLSRootCAs = tc.RootCAs != nil
		p.TLSClientCert = len(tc.Certificates) == 1
		p.TLSServerName = tc.ServerName
		p.TLSMinVersion = tc.MinVersion
		p.TLSSkipVerify = tc.InsecureSkipVerify
	}
	return p, nil
}

func timeouts(d time.Duration) [4]time.Duration { return [4]time.Duration{d, d, d, d} }

func TestParse(t *testing.T) {
	certs := redistest.NewCerts(t)
	tests := []struct {
		name string
		cfg  redisclient.Config
		want parsed
	}{
		{
			name: "single by default, timeouts from Timeout",
			cfg:  redisclient.Config{URL: "redis://127.0.0.1:6379/2", Timeout: 500 * time.Millisecond},
			want: parsed{Mode: "single", Network: "tcp", Addrs: []string{"127.0.0.1:6379"}, DB: 2,
				Timeouts: timeouts(500 * time.Millisecond), ContextTimeouts: true},
		},
		{
			name: "single: credentials from the URL",
			cfg:  redisclient.Config{Mode: "single", URL: "redis://limiterd:" + secret + "@redis.internal:6380"},
			want: parsed{Mode: "single", Network: "tcp", Addrs: []string{"redis.internal:6380"},
				Username: "limiterd", Password: secret, ContextTimeouts: true},
		},
		{
			name: "single: Username and Password replace the URL's",
			cfg: redisclient.Config{URL: "redis://old:old@redis.internal:6380",
				Username: "limiterd", Password: secret},
			want: parsed{Mode: "single", Network: "tcp", Addrs: []string{"redis.internal:6380"},
				Username: "limiterd", Password: secret, ContextTimeouts: true},
		},
		{
			name: "single: Password alone keeps the URL's user",
			cfg:  redisclient.Config{URL: "redis://limiterd@redis.internal:6380", Password: secret},
			want: parsed{Mode: "single", Network: "tcp", Addrs: []string{"redis.internal:6380"},
				Username: "limiterd", Password: secret, ContextTimeouts: true},
		},
		{
			name: "single: the URL's query is honoured, Timeout zero keeps it",
			cfg:  redisclient.Config{URL: "redis://h:1?dial_timeout=3&read_timeout=2s&pool_size=7"},
			want: parsed{Mode: "single", Network: "tcp", Addrs: []string{"h:1"},
				Timeouts: [4]time.Duration{3 * time.Second, 2 * time.Second, 0, 0}, ContextTimeouts: true, PoolSize: 7},
		},
		{
			name: "single: PoolSize replaces the URL's",
			cfg:  redisclient.Config{URL: "redis://h:1?pool_size=7", PoolSize: 100},
			want: parsed{Mode: "single", Network: "tcp", Addrs: []string{"h:1"}, ContextTimeouts: true, PoolSize: 100},
		},
		{
			name: "single: unix socket",
			cfg:  redisclient.Config{URL: "unix:///run/redis.sock?db=3"},
			want: parsed{Mode: "single", Network: "unix", Addrs: []string{"/run/redis.sock"}, DB: 3, ContextTimeouts: true},
		},
		{
			name: "single: rediss without files trusts the system's CAs",
			cfg:  redisclient.Config{URL: "rediss://redis.example:6380"},
			want: parsed{Mode: "single", Network: "tcp", Addrs: []string{"redis.example:6380"}, ContextTimeouts: true,
				TLS: true, TLSServerName: "redis.example", TLSMinVersion: tls.VersionTLS12},
		},
		{
			name: "single: rediss with a CA and a client certificate",
			cfg: redisclient.Config{URL: "rediss://127.0.0.1:6380/0",
				TLSCAFile: certs.CA, TLSCertFile: certs.ClientCert, TLSKeyFile: certs.ClientKey},
			want: parsed{Mode: "single", Network: "tcp", Addrs: []string{"127.0.0.1:6380"}, ContextTimeouts: true,
				TLS: true, TLSRootCAs: true, TLSClientCert: true, TLSServerName: "127.0.0.1", TLSMinVersion: tls.VersionTLS12},
		},
		{
			name: "cluster: seed addresses from the host and addr=",
			cfg: redisclient.Config{Mode: "cluster", URL: "redis://u:" + secret + "@10.0.0.1:7000?addr=10.0.0.2:7000&addr=10.0.0.3:7000",
				Timeout: time.Second},
			want: parsed{Mode: "cluster", Addrs: []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"},
				Username: "u", Password: secret, Timeouts: timeouts(time.Second), ContextTimeouts: true},
		},
		{
			name: "cluster: database 0 may be written",
			cfg:  redisclient.Config{Mode: "cluster", URL: "redis://10.0.0.1:7000/0", Username: "limiterd", Password: secret},
			want: parsed{Mode: "cluster", Addrs: []string{"10.0.0.1:7000"},
				Username: "limiterd", Password: secret, ContextTimeouts: true},
		},
		{
			name: "cluster: rediss gets TLS 1.2 at least, which ParseClusterURL leaves out",
			cfg:  redisclient.Config{Mode: "cluster", URL: "rediss://10.0.0.1:7000", TLSCAFile: certs.CA},
			want: parsed{Mode: "cluster", Addrs: []string{"10.0.0.1:7000"}, ContextTimeouts: true,
				TLS: true, TLSRootCAs: true, TLSServerName: "10.0.0.1", TLSMinVersion: tls.VersionTLS12},
		},
		{
			name: "sentinel: the URL's user is the Sentinels', the query's the master's",
			cfg: redisclient.Config{Mode: "sentinel",
				URL: "redis://sentinel-user:" + secret + "@127.0.0.1:26379/1?addr=127.0.0.1:26380&addr=127.0.0.1:26381&master_name=limiterd&username=app&password=master-pw"},
			want: parsed{Mode: "sentinel", Addrs: []string{"127.0.0.1:26379", "127.0.0.1:26380", "127.0.0.1:26381"},
				MasterName: "limiterd", DB: 1, SentinelUsername: "sentinel-user", SentinelPass: secret,
				Username: "app", Password: "master-pw", ContextTimeouts: true},
		},
		{
			name: "sentinel: Username and Password are the master's, not the Sentinels'",
			cfg: redisclient.Config{Mode: "sentinel", URL: "redis://:sentinel-pw@127.0.0.1:26379?master_name=limiterd",
				Username: "limiterd", Password: secret, Timeout: 250 * time.Millisecond, PoolSize: 20},
			want: parsed{Mode: "sentinel", Addrs: []string{"127.0.0.1:26379"}, MasterName: "limiterd",
				SentinelPass: "sentinel-pw", Username: "limiterd", Password: secret,
				Timeouts: timeouts(250 * time.Millisecond), ContextTimeouts: true, PoolSize: 20},
		},
		{
			name: "sentinel: rediss, with mTLS towards Sentinels and data nodes alike",
			cfg: redisclient.Config{Mode: "sentinel", URL: "rediss://127.0.0.1:26379?master_name=m",
				TLSCAFile: certs.CA, TLSCertFile: certs.ClientCert, TLSKeyFile: certs.ClientKey},
			want: parsed{Mode: "sentinel", Addrs: []string{"127.0.0.1:26379"}, MasterName: "m", ContextTimeouts: true,
				TLS: true, TLSRootCAs: true, TLSClientCert: true, TLSServerName: "127.0.0.1", TLSMinVersion: tls.VersionTLS12},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse(t, tt.cfg)
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseErrorsNameTheSettingAndHideSecrets(t *testing.T) {
	certs := redistest.NewCerts(t)
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	base := "redis://u:" + secret + "@127.0.0.1:6379"
	tests := []struct {
		name     string
		cfg      redisclient.Config
		setting  string // the error must start with it
		mentions string // and say this
	}{
		{"unknown mode", redisclient.Config{Mode: "ring", URL: base}, "REDIS_MODE:", `"ring"`},
		{"empty URL", redisclient.Config{}, "REDIS_URL:", "empty"},
		{"negative timeout", redisclient.Config{URL: base, Timeout: -time.Second}, "REDIS_TIMEOUT:", "negative"},
		{"scheme", redisclient.Config{URL: "http://u:" + secret + "@h:1"}, "REDIS_URL:", `"http"`},
		{"not a URL, password inside", redisclient.Config{URL: "redis://u:" + secret + "%zz@h:1"}, "REDIS_URL:", "percent-encoded"},
		{"not a URL, port", redisclient.Config{URL: "redis://h:port", Password: secret}, "REDIS_URL:", "invalid port"},
		{"unknown query option", redisclient.Config{URL: base + "?pool=3"}, "REDIS_URL:", "unexpected option: pool"},
		{"bad database", redisclient.Config{URL: base + "/x"}, "REDIS_URL:", "database"},
		{"bad duration", redisclient.Config{URL: base + "?dial_timeout=soon"}, "REDIS_URL:", "dial_timeout"},
		{"pool size go-redis panics on", redisclient.Config{URL: base + "?pool_size=4294967296"}, "REDIS_URL:", "out of range"},
		{"negative pool size", redisclient.Config{URL: base + "?pool_size=-1"}, "REDIS_URL:", "out of range"},
		{"several addresses in single mode", redisclient.Config{URL: base + "?addr=127.0.0.1:6380"}, "REDIS_URL:", "REDIS_MODE=cluster"},
		{"master_name outside sentinel mode", redisclient.Config{Mode: "cluster", URL: base + "?master_name=m"}, "REDIS_URL:", "REDIS_MODE=sentinel"},
		{"cluster database", redisclient.Config{Mode: "cluster", URL: base + "/3"}, "REDIS_URL:", "only database 0"},
		{"cluster over a unix socket", redisclient.Config{Mode: "cluster", URL: "unix:///run/redis.sock"}, "REDIS_URL:", "unix://"},
		{"sentinel without master_name", redisclient.Config{Mode: "sentinel", URL: base}, "REDIS_URL:", "master_name"},
		{"sentinel routing to replicas (go-redis panics)", redisclient.Config{Mode: "sentinel", URL: base + "?master_name=m&route_randomly=true"}, "REDIS_URL:", "master"},
		{"sentinel replica only", redisclient.Config{Mode: "sentinel", URL: base + "?master_name=m&replica_only=true"}, "REDIS_URL:", "master"},
		{"CA without TLS", redisclient.Config{URL: base, TLSCAFile: certs.CA}, "REDIS_TLS_CA_FILE:", "rediss://"},
		{"client cert without TLS", redisclient.Config{Mode: "cluster", URL: base, TLSCertFile: certs.ClientCert, TLSKeyFile: certs.ClientKey}, "REDIS_TLS_CERT_FILE:", "rediss://"},
		{"key without TLS", redisclient.Config{URL: base, TLSKeyFile: certs.ClientKey}, "REDIS_TLS_KEY_FILE:", "rediss://"},
		{"cert without key", redisclient.Config{URL: "rediss://h:1", Password: secret, TLSCertFile: certs.ClientCert}, "REDIS_TLS_CERT_FILE:", "REDIS_TLS_KEY_FILE"},
		{"key without cert", redisclient.Config{URL: "rediss://h:1", Password: secret, TLSKeyFile: certs.ClientKey}, "REDIS_TLS_KEY_FILE:", "REDIS_TLS_CERT_FILE"},
		{"CA file missing", redisclient.Config{URL: "rediss://h:1", Password: secret, TLSCAFile: missing}, "REDIS_TLS_CA_FILE:", "no such file"},
		{"CA file not PEM", redisclient.Config{URL: "rediss://h:1", Password: secret, TLSCAFile: notPEM}, "REDIS_TLS_CA_FILE:", "no PEM certificate"},
		{"cert file missing", redisclient.Config{URL: "rediss://h:1", TLSCertFile: missing, TLSKeyFile: certs.ClientKey}, "REDIS_TLS_CERT_FILE:", "no such file"},
		{"key file missing", redisclient.Config{URL: "rediss://h:1", TLSCertFile: certs.ClientCert, TLSKeyFile: missing}, "REDIS_TLS_KEY_FILE:", "no such file"},
		{"key of another certificate", redisclient.Config{URL: "rediss://h:1", TLSCertFile: certs.ClientCert, TLSKeyFile: certs.ServerKey}, "REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE:", "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(t, tt.cfg)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tt.setting) || !strings.Contains(msg, tt.mentions) {
				t.Errorf("error %q: want it to start with %q and mention %q", msg, tt.setting, tt.mentions)
			}
			if strings.Contains(msg, secret) || strings.Contains(msg, "%zz") {
				t.Errorf("error %q shows the password", msg)
			}
			// New refuses what Parse refuses, with the same words.
			if rdb, err := redisclient.New(tt.cfg); err == nil || err.Error() != msg {
				if rdb != nil {
					rdb.Close()
				}
				t.Errorf("New: err = %v, want %q", err, msg)
			}
		})
	}
}

func TestNewReturnsTheClientOfTheMode(t *testing.T) {
	tests := []struct {
		cfg  redisclient.Config
		want any
	}{
		{redisclient.Config{URL: "redis://127.0.0.1:1"}, &redis.Client{}},
		{redisclient.Config{Mode: "cluster", URL: "redis://127.0.0.1:1?addr=127.0.0.1:2"}, &redis.ClusterClient{}},
		{redisclient.Config{Mode: "sentinel", URL: "redis://127.0.0.1:1?master_name=m"}, &redis.Client{}},
	}
	for _, tt := range tests {
		rdb, err := redisclient.New(tt.cfg)
		if err != nil {
			t.Errorf("%+v: %v", tt.cfg, err)
			continue
		}
		if reflect.TypeOf(rdb) != reflect.TypeOf(tt.want) {
			t.Errorf("mode %q: got a %T, want a %T", tt.cfg.Mode, rdb, tt.want)
		}
		rdb.Close()
	}
}

func TestRedactedURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"redis://u:" + secret + "@h:1/0", "redis://u:xxxxx@h:1/0"},
		{"redis://:" + secret + "@h:1?master_name=m&password=" + secret, "redis://:xxxxx@h:1?master_name=m&password=xxxxx"},
		{"redis://h:1?addr=h:2", "redis://h:1?addr=h%3A2"},
		{"redis://u:" + secret + "%zz@h:1", "(unparsable URL)"},
	}
	for _, tt := range tests {
		if got := redisclient.RedactedURL(tt.in); got != tt.want {
			t.Errorf("RedactedURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestTLS connects to a real redis-server that requires TLS client
// certificates, with the settings an operator would give.
func TestTLS(t *testing.T) {
	srv, certs := redistest.StartTLS(t)
	other := redistest.NewCerts(t) // a CA the server does not know
	url := "rediss://" + srv.TLSAddr + "/0"
	tests := []struct {
		name    string
		cfg     redisclient.Config
		wantErr string // "" for a working connection, "*" for any error, or a word of the error
	}{
		{"CA and client certificate", redisclient.Config{URL: url, TLSCAFile: certs.CA, TLSCertFile: certs.ClientCert, TLSKeyFile: certs.ClientKey}, ""},
		{"localhost is in the server's certificate", redisclient.Config{URL: strings.Replace(url, "127.0.0.1", "localhost", 1), TLSCAFile: certs.CA, TLSCertFile: certs.ClientCert, TLSKeyFile: certs.ClientKey}, ""},
		// With TLS 1.3 the server refuses a client certificate after the
		// client's side of the handshake: the client sees the alert or, if
		// it writes first, a reset.
		{"no client certificate", redisclient.Config{URL: url, TLSCAFile: certs.CA}, "*"},
		{"a client certificate from another CA", redisclient.Config{URL: url, TLSCAFile: certs.CA, TLSCertFile: other.ClientCert, TLSKeyFile: other.ClientKey}, "*"},
		{"server not trusted (system CAs)", redisclient.Config{URL: url, TLSCertFile: certs.ClientCert, TLSKeyFile: certs.ClientKey}, "certificate"},
		{"plain text to the TLS port", redisclient.Config{URL: "redis://" + srv.TLSAddr}, "*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Timeout = 2 * time.Second
			rdb, err := redisclient.New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer rdb.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err = rdb.Ping(ctx).Err()
			t.Logf("ping: %v", err)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("ping: %v", err)
			case tt.wantErr == "*" && err == nil:
				t.Error("ping worked, want an error")
			case tt.wantErr != "" && tt.wantErr != "*" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("ping: err = %v, want one about %q", err, tt.wantErr)
			}
		})
	}
}
