// Package httpapi serves the limiter over HTTP with Echo v4. It holds no
// state: any number of replicas can run behind a load balancer. Every error
// becomes a JSON body {"error": code, "msg": sentence, ...} in one place,
// errors.go.
package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/limiterd/limiterd/limiter"
)

// MaxBodyBytes is the largest request body accepted; a larger one is 413.
const MaxBodyBytes = 1 << 20

// Streams is what the HTTP API needs of the limiter.
type Streams interface {
	Acquire(ctx context.Context, userID, streamID string) (limiter.Lease, error)
	Renew(ctx context.Context, userID, streamID, streamKey string) (limiter.Lease, error)
	Release(ctx context.Context, userID, streamID, streamKey string) (limiter.Release, error)
	ReleaseSoonest(ctx context.Context, userID string) (limiter.Release, error)
	Active(ctx context.Context, userID string) ([]limiter.Stream, error)
	Limit() int
}

// Pinger reports whether the service's backing store answers.
type Pinger interface {
	Ping(ctx context.Context) error
}

// RequestObserver is told of every request answered, for metrics. route is
// the route template (such as /api/streams/:user_id/:stream_id), never the
// request's own path, so that it takes a bounded set of values.
type RequestObserver interface {
	ObserveRequest(route, method string, status int, took time.Duration)
}

// Deps are what the server is built from.
type Deps struct {
	Streams Streams
	Ready   Pinger       // backs /readyz
	Logger  *slog.Logger // one line per request; nil discards them
	// Metrics, if set, is told of every request.
	Metrics RequestObserver
	// MetricsHandler, if set, serves GET /metrics.
	MetricsHandler http.Handler
}

// NewServer returns the service's HTTP handler with every route registered.
func NewServer(d Deps) *echo.Echo {
	if d.Logger == nil {
		d.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = errorHandler(d.Logger)
	e.Use(
		observe(d.Logger, d.Metrics),
		noStore, // before anything that can answer, even a 413
		middleware.Recover(),
		middleware.BodyLimit(strconv.Itoa(MaxBodyBytes)),
	)
	routes(e, d)
	return e
}

// noStore keeps every answer out of caches: acquires carry secret stream
// keys, and every other answer is about a moment that has passed.
func noStore(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
		return next(c)
	}
}
