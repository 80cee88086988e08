// Package telemetry is how limiterd is watched: Prometheus metrics for the
// limiter and the HTTP layer, and the process's structured logger. No metric
// carries a user or stream ID: every label takes a bounded set of values.
package telemetry

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/limiterd/limiterd/limiter"
)

// Metrics holds every metric of the service on a registry of its own. It is
// a limiter.Observer and an httpapi request observer.
type Metrics struct {
	registry        *prometheus.Registry
	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	decisions       *prometheus.CounterVec
	scriptCalls     *prometheus.CounterVec
	scriptDuration  *prometheus.HistogramVec
	redisErrors     *prometheus.CounterVec
}

// latencyBuckets span a loopback Redis round trip (~100µs) to the longest
// REDIS_TIMEOUT (10s).
var latencyBuckets = []float64{
	.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10,
}

// NewMetrics returns the service's metrics, with the Go runtime and process
// collectors registered beside them.
func NewMetrics() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "limiterd_http_requests_total",
			Help: "HTTP requests answered, by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "limiterd_http_request_duration_seconds",
			Help:    "Time from routing an HTTP request to its answer being written.",
			Buckets: latencyBuckets,
		}, []string{"route", "method"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "limiterd_decisions_total",
			Help: "What the limiter decided: admitted, renewed, refused, released, not_live, expired_on_heartbeat, key_mismatch, degraded_admission, degraded_renewal.",
		}, []string{"decision"}),
		scriptCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "limiterd_redis_script_calls_total",
			Help: "Lua script calls, by script and outcome (the script's status, or unavailable or error).",
		}, []string{"script", "outcome"}),
		scriptDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "limiterd_redis_script_duration_seconds",
			Help:    "Round trip of one script call to Redis, failures included.",
			Buckets: latencyBuckets,
		}, []string{"script"}),
		redisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "limiterd_redis_errors_total",
			Help: "Failed calls to Redis, by kind: timeout, connection, loading, busy, readonly, cluster, auth, oom, script, unavailable.",
		}, []string{"kind"}),
	}
	m.registry.MustRegister(
		m.requests, m.requestDuration, m.decisions, m.scriptCalls, m.scriptDuration, m.redisErrors,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Decisions exist from the start at zero, so that a rate or an alert on
	// a rare one (degraded_admission) has a series to work on.
	for _, d := range []string{
		limiter.DecisionAdmitted, limiter.DecisionRenewed, limiter.DecisionRefused,
		limiter.DecisionReleased, limiter.DecisionNotLive, limiter.DecisionExpiredOnHeartbeat,
		limiter.DecisionKeyMismatch, limiter.DecisionDegradedAdmission, limiter.DecisionDegradedRenewal,
	} {
		m.decisions.WithLabelValues(d)
	}
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// Registry is where the metrics live, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// ScriptDone counts a script call and its round trip (limiter.Observer).
func (m *Metrics) ScriptDone(op, outcome string, took time.Duration) {
	m.scriptCalls.WithLabelValues(op, outcome).Inc()
	m.scriptDuration.WithLabelValues(op).Observe(took.Seconds())
}

// RedisError counts a failed call to Redis (limiter.Observer).
func (m *Metrics) RedisError(kind string) { m.redisErrors.WithLabelValues(kind).Inc() }

// Decision counts a decision of the limiter (limiter.Observer).
func (m *Metrics) Decision(decision string) { m.decisions.WithLabelValues(decision).Inc() }

// ObserveRequest counts an HTTP request. route is the route template, such
// as /api/streams/:user_id/:stream_id, never the request's own path.
func (m *Metrics) ObserveRequest(route, method string, status int, took time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.requestDuration.WithLabelValues(route, method).Observe(took.Seconds())
}

// WatchPool exports the connection pool's statistics, read at each scrape.
func (m *Metrics) WatchPool(stats func() *redis.PoolStats) {
	m.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "limiterd_redis_pool_connections", Help: "Connections in the Redis pool, by state.",
			ConstLabels: prometheus.Labels{"state": "total"},
		}, func() float64 { return float64(stats().TotalConns) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "limiterd_redis_pool_connections", Help: "Connections in the Redis pool, by state.",
			ConstLabels: prometheus.Labels{"state": "idle"},
		}, func() float64 { return float64(stats().IdleConns) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "limiterd_redis_pool_hits_total", Help: "Times a free connection was found in the pool.",
		}, func() float64 { return float64(stats().Hits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "limiterd_redis_pool_misses_total", Help: "Times no free connection was in the pool and one was dialled or waited for.",
		}, func() float64 { return float64(stats().Misses) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "limiterd_redis_pool_timeouts_total", Help: "Times a request gave up waiting for a pool connection.",
		}, func() float64 { return float64(stats().Timeouts) }),
	)
}
