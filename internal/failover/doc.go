// Package failover measures what a Redis failover costs limiterd (issue 6
// §3): a Redis Cluster master, or the master of a Sentinel group, is killed
// with SIGKILL under a steady load of players, and the tests report how long
// requests failed and how, when the service was fully healthy again, how many
// leases the failover lost, and how many users then held more streams than
// STREAM_LIMIT, by how much and for how long. Each topology is measured
// without and with REDIS_WAIT_REPLICAS=1 (with the throughput WAIT costs),
// with an up-to-date replica and with one 0.3 s behind; a last scenario
// restarts the killed Sentinel master before the Sentinels have switched.
//
// The deployments are started by scripts/redis-topology.sh; the service is
// the real limiterd binary (internal/servicetest). The measurement takes
// about 11 minutes and kills processes, so it runs only when asked:
//
//	LIMITERD_FAILOVER=1 go test -count=1 -timeout 20m -v -run TestFailover ./internal/failover/
//
// Every figure is logged on a line that starts with "failover: ".
// docs/FAILOVER.md holds the results and what they mean for the guarantees.
// TestFailoverQuick, which make test runs, is one failover per topology with
// a light load and only the checks. The package holds no code of its own.
package failover
