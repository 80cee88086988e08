package redisclient

import "github.com/redis/go-redis/v9"

// Parse exposes what New would build, for the tests to inspect: exactly one
// of the options is not nil when err is nil.
func Parse(cfg Config) (*redis.Options, *redis.ClusterOptions, *redis.FailoverOptions, error) {
	o, err := parse(cfg)
	return o.single, o.cluster, o.failover, err
}
