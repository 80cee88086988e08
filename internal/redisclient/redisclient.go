// Package redisclient builds the one Redis client the service uses, whatever
// the Redis topology: a single server (or a managed endpoint that looks like
// one), a Redis Cluster, or a master and replicas watched by Sentinels. The
// limiter needs nothing more for a Cluster: each script touches one user's two
// keys, and their {USER_ID} hash tag puts both in one slot.
//
// Every error New returns starts with the name of the setting at fault
// (REDIS_URL, REDIS_TLS_CA_FILE, ...) and never contains a password.
package redisclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Modes, the values of Config.Mode.
const (
	ModeSingle   = "single"   // one server: redis[s]://[user:pass@]host:port/db or unix://
	ModeCluster  = "cluster"  // Redis Cluster: redis[s]://[user:pass@]host:port?addr=host2:port2...
	ModeSentinel = "sentinel" // Sentinels: redis[s]://[sentinel-user:pass@]host:port?addr=...&master_name=NAME
)

// Config says how to reach Redis. Only URL is required.
type Config struct {
	// Mode is ModeSingle (the default when empty), ModeCluster or ModeSentinel.
	Mode string
	// URL is in go-redis's URL form for the mode. In sentinel mode its user
	// and password are the Sentinels' own; the master's and replicas' come
	// from the query (username=, password=) or from Username and Password.
	URL string
	// Username and Password, when not empty, replace the URL's for the data
	// nodes (in sentinel mode: the master and replicas, not the Sentinels).
	Username, Password string
	// TLSCAFile is a PEM file of the CAs to trust instead of the system's.
	// TLSCertFile and TLSKeyFile are the client certificate and key for
	// servers that require one (tls-auth-clients). All need a rediss:// URL.
	TLSCAFile, TLSCertFile, TLSKeyFile string
	// Timeout bounds dialling, each read and write, and the wait for a pooled
	// connection; zero keeps go-redis's defaults (or the URL's). Calls also
	// end at their context's deadline.
	Timeout time.Duration
	// PoolSize is the most connections per node; zero keeps go-redis's
	// default (or the URL's pool_size).
	PoolSize int
}

// New returns a client for cfg: a *redis.Client for a single server or for
// Sentinels (it follows the master they name), a *redis.ClusterClient for a
// Cluster. It does not connect: the first command does.
func New(cfg Config) (rdb redis.UniversalClient, err error) {
	opts, err := parse(cfg)
	if err != nil {
		return nil, err
	}
	// go-redis panics on some options it cannot use; startup must fail with
	// an error instead.
	defer func() {
		if r := recover(); r != nil {
			rdb, err = nil, fmt.Errorf("REDIS_URL: go-redis refused the options: %s", redact(fmt.Sprint(r), cfg))
		}
	}()
	switch {
	case opts.cluster != nil:
		return redis.NewClusterClient(opts.cluster), nil
	case opts.failover != nil:
		return redis.NewFailoverClient(opts.failover), nil
	default:
		return redis.NewClient(opts.single), nil
	}
}

// RedactedURL returns rawURL with its passwords (user info and the password
// query parameters) replaced by "xxxxx", for logs. A URL that does not parse
// comes back as a fixed placeholder, since where its password ends is unknown.
func RedactedURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	q := u.Query()
	for _, name := range []string{"password", "sentinel_password"} {
		if q.Has(name) {
			q.Set(name, "xxxxx")
		}
	}
	u.RawQuery = q.Encode()
	return u.Redacted()
}

// options is what parse makes of a Config: exactly one field is set.
type options struct {
	single   *redis.Options
	cluster  *redis.ClusterOptions
	failover *redis.FailoverOptions
}

func parse(cfg Config) (options, error) {
	var opts options
	mode := cfg.Mode
	if mode == "" {
		mode = ModeSingle
	}
	if mode != ModeSingle && mode != ModeCluster && mode != ModeSentinel {
		return opts, fmt.Errorf("REDIS_MODE: %q is not one of %s, %s, %s", mode, ModeSingle, ModeCluster, ModeSentinel)
	}
	if cfg.Timeout < 0 {
		return opts, fmt.Errorf("REDIS_TIMEOUT: %v is negative", cfg.Timeout)
	}
	if cfg.PoolSize < 0 || cfg.PoolSize > math.MaxInt32 {
		return opts, fmt.Errorf("redisclient: pool size %d is out of range", cfg.PoolSize)
	}
	u, err := checkURL(mode, cfg)
	if err != nil {
		return opts, err
	}

	var tlsConf *tls.Config
	switch mode {
	case ModeSingle:
		o, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return opts, urlError(err, cfg)
		}
		if err := cfg.apply(sharedOptions{
			&o.Username, &o.Password, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout,
			&o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns, &o.ContextTimeoutEnabled,
		}); err != nil {
			return opts, err
		}
		opts.single, tlsConf = o, o.TLSConfig
	case ModeCluster:
		o, err := redis.ParseClusterURL(cfg.URL)
		if err != nil {
			return opts, urlError(err, cfg)
		}
		if err := cfg.apply(sharedOptions{
			&o.Username, &o.Password, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout,
			&o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns, &o.ContextTimeoutEnabled,
		}); err != nil {
			return opts, err
		}
		opts.cluster, tlsConf = o, o.TLSConfig
	case ModeSentinel:
		o, err := redis.ParseFailoverURL(cfg.URL)
		if err != nil {
			return opts, urlError(err, cfg)
		}
		if o.MasterName == "" {
			return opts, errors.New("REDIS_URL: sentinel mode needs the master's name in the query: ?master_name=NAME")
		}
		if o.RouteByLatency || o.RouteRandomly {
			return opts, errors.New("REDIS_URL: route_by_latency and route_randomly send commands to replicas; the limiter's scripts write, so they must go to the master")
		}
		if o.ReplicaOnly {
			return opts, errors.New("REDIS_URL: replica_only sends commands to replicas; the limiter's scripts write, so they must go to the master")
		}
		if err := cfg.apply(sharedOptions{
			&o.Username, &o.Password, &o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout,
			&o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns, &o.ContextTimeoutEnabled,
		}); err != nil {
			return opts, err
		}
		opts.failover, tlsConf = o, o.TLSConfig
	}

	if u.Scheme != "rediss" {
		return opts, nil
	}
	if tlsConf == nil { // go-redis sets one for rediss://; keep it that way
		return opts, errors.New("REDIS_URL: rediss:// gave no TLS configuration")
	}
	return opts, configureTLS(tlsConf, cfg)
}

// checkURL parses the URL for the checks go-redis does not make, and says
// which mode a URL looks meant for when it does not fit the one set.
func checkURL(mode string, cfg Config) (*url.URL, error) {
	if cfg.URL == "" {
		return nil, errors.New("REDIS_URL: empty")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		// url.Error repeats the whole URL, and the inner error may quote a
		// piece of it: say nothing of it when it holds a password.
		var uerr *url.Error
		if errors.As(err, &uerr) && !mayHoldPassword(cfg.URL) {
			return nil, fmt.Errorf("REDIS_URL: not a URL: %s", redact(uerr.Err.Error(), cfg))
		}
		return nil, errors.New("REDIS_URL: not a URL (a password with reserved characters such as @ : / ? # % must be percent-encoded)")
	}
	switch {
	case u.Scheme == "unix" && mode != ModeSingle:
		return nil, fmt.Errorf("REDIS_URL: unix:// sockets are for REDIS_MODE=%s only", ModeSingle)
	case u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix":
		return nil, fmt.Errorf("REDIS_URL: scheme %q is not redis://, rediss:// (TLS) or unix://", u.Scheme)
	}
	q := u.Query()
	if mode == ModeSingle && q.Has("addr") {
		return nil, errors.New("REDIS_URL: addr= names more servers: set REDIS_MODE=cluster or REDIS_MODE=sentinel")
	}
	if mode != ModeSentinel && q.Has("master_name") {
		return nil, errors.New("REDIS_URL: master_name= is for REDIS_MODE=sentinel")
	}
	if mode == ModeCluster {
		// ParseClusterURL ignores the path; a database number there would
		// be silently dropped.
		if p := strings.Trim(u.Path, "/"); p != "" && p != "0" {
			return nil, fmt.Errorf("REDIS_URL: a Redis Cluster has only database 0, not %q", p)
		}
	}
	for _, setting := range []struct{ name, value string }{
		{"REDIS_TLS_CA_FILE", cfg.TLSCAFile},
		{"REDIS_TLS_CERT_FILE", cfg.TLSCertFile},
		{"REDIS_TLS_KEY_FILE", cfg.TLSKeyFile},
	} {
		if setting.value != "" && u.Scheme != "rediss" {
			return nil, fmt.Errorf("%s: set, but REDIS_URL is not a rediss:// (TLS) URL", setting.name)
		}
	}
	return u, nil
}

// configureTLS adds the CA and the client certificate to the TLS settings
// go-redis made for a rediss:// URL.
func configureTLS(c *tls.Config, cfg Config) error {
	c.MinVersion = max(c.MinVersion, tls.VersionTLS12) // ParseClusterURL leaves it unset
	if cfg.TLSCAFile != "" {
		pem, err := os.ReadFile(cfg.TLSCAFile)
		if err != nil {
			return fmt.Errorf("REDIS_TLS_CA_FILE: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("REDIS_TLS_CA_FILE: no PEM certificate in %s", cfg.TLSCAFile)
		}
		c.RootCAs = pool
	}
	switch {
	case cfg.TLSCertFile == "" && cfg.TLSKeyFile == "":
		return nil
	case cfg.TLSKeyFile == "":
		return errors.New("REDIS_TLS_CERT_FILE: set without REDIS_TLS_KEY_FILE")
	case cfg.TLSCertFile == "":
		return errors.New("REDIS_TLS_KEY_FILE: set without REDIS_TLS_CERT_FILE")
	}
	certPEM, err := os.ReadFile(cfg.TLSCertFile)
	if err != nil {
		return fmt.Errorf("REDIS_TLS_CERT_FILE: %w", err)
	}
	keyPEM, err := os.ReadFile(cfg.TLSKeyFile)
	if err != nil {
		return fmt.Errorf("REDIS_TLS_KEY_FILE: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE: %w", err)
	}
	c.Certificates = []tls.Certificate{cert}
	return nil
}

// checkPool refuses pool sizes go-redis would panic on (it stores them in
// 32 bits) or misread (negative).
// sharedOptions points at the fields that go-redis's Options, ClusterOptions
// and FailoverOptions all have, so that one function sets them for any mode.
type sharedOptions struct {
	username, password          *string
	dial, read, write, poolWait *time.Duration
	poolSize                    *int
	minIdle, maxIdle, maxActive int
	contextTimeoutEnabled       *bool
}

// apply sets the options cfg overrides and checks the pool's sizes.
func (cfg Config) apply(o sharedOptions) error {
	if cfg.Username != "" {
		*o.username = cfg.Username
	}
	if cfg.Password != "" {
		*o.password = cfg.Password
	}
	if cfg.Timeout > 0 {
		*o.dial, *o.read, *o.write, *o.poolWait = cfg.Timeout, cfg.Timeout, cfg.Timeout, cfg.Timeout
	}
	if cfg.PoolSize > 0 {
		*o.poolSize = cfg.PoolSize
	}
	*o.contextTimeoutEnabled = true
	return checkPool(*o.poolSize, o.minIdle, o.maxIdle, o.maxActive)
}

func checkPool(sizes ...int) error {
	for _, n := range sizes {
		if n < 0 || n > math.MaxInt32 {
			return fmt.Errorf("REDIS_URL: pool size %d is out of range", n)
		}
	}
	return nil
}

// urlError names the setting in go-redis's parse error and takes any
// password out of it.
func urlError(err error, cfg Config) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	return fmt.Errorf("REDIS_URL: %s", redact(err.Error(), cfg))
}

// redact replaces every password cfg holds, wherever it appears in msg.
func redact(msg string, cfg Config) string {
	secrets := []string{cfg.Password}
	if u, err := url.Parse(cfg.URL); err == nil {
		if p, ok := u.User.Password(); ok {
			secrets = append(secrets, p, url.PathEscape(p), url.QueryEscape(p))
		}
		q := u.Query()
		for _, name := range []string{"password", "sentinel_password"} {
			for _, p := range q[name] {
				secrets = append(secrets, p, url.QueryEscape(p))
			}
		}
	}
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, "xxxxx")
		}
	}
	return msg
}

// mayHoldPassword reports whether a URL that did not parse has user info
// with a colon, where a password would be.
func mayHoldPassword(raw string) bool {
	rest := raw
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		return strings.Contains(rest[:i], ":")
	}
	return false
}
