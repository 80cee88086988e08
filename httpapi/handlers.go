package httpapi

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/limiterd/limiterd/limiter"
)

// leaseBody answers an acquire or a heartbeat.
type leaseBody struct {
	StreamKey         string    `json:"stream_key"`
	UserID            string    `json:"user_id"`
	StreamID          string    `json:"stream_id"`
	ActiveStreams     int       `json:"active_streams,omitempty"` // unknown, so absent, when degraded
	Limit             int       `json:"limit"`
	LeaseExpiresAt    time.Time `json:"lease_expires_at"`
	LeaseTTLSeconds   int       `json:"lease_ttl_seconds"`
	RenewAfterSeconds int       `json:"renew_after_seconds"`
	Degraded          bool      `json:"degraded,omitempty"` // granted without Redis (REDIS_FAILURE_MODE=open)
}

func newLeaseBody(l limiter.Lease, limit int) leaseBody {
	ttl := int(l.TTL.Round(time.Second) / time.Second)
	return leaseBody{
		StreamKey:         l.StreamKey,
		UserID:            l.UserID,
		StreamID:          l.StreamID,
		ActiveStreams:     l.Active,
		Limit:             limit,
		LeaseExpiresAt:    l.ExpiresAt,
		LeaseTTLSeconds:   ttl,
		RenewAfterSeconds: max(ttl/3, 1), // three heartbeats a lease: one lost is no harm
		Degraded:          l.DegradedBy != nil,
	}
}

// answerLease writes a lease, and logs one granted without Redis: each such
// answer is a hole in the limit that operators must be able to count.
func answerLease(c echo.Context, log *slog.Logger, s Streams, lease limiter.Lease) error {
	if lease.DegradedBy != nil {
		log.Warn("degraded answer: Redis unavailable, lease granted without the limit (REDIS_FAILURE_MODE=open)",
			"request_id", c.Response().Header().Get(echo.HeaderXRequestID),
			"route", c.Path(), "err", lease.DegradedBy)
	}
	return c.JSON(http.StatusOK, newLeaseBody(lease, s.Limit()))
}

// streamBody is a live stream as listed; stream keys are never listed.
type streamBody struct {
	StreamID       string    `json:"stream_id"`
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
}

func newStreamBodies(streams []limiter.Stream) []streamBody {
	out := make([]streamBody, len(streams)) // [] rather than null when empty
	for i, s := range streams {
		out[i] = streamBody{StreamID: s.ID, LeaseExpiresAt: s.ExpiresAt}
	}
	return out
}

type releaseBody struct {
	StreamID      string `json:"stream_id,omitempty"`
	Released      bool   `json:"released"`
	ActiveStreams int    `json:"active_streams"`
	Limit         int    `json:"limit"`
}

func newReleaseBody(r limiter.Release, limit int) releaseBody {
	return releaseBody{StreamID: r.StreamID, Released: r.Released, ActiveStreams: r.Active, Limit: limit}
}

func healthz() echo.HandlerFunc {
	return func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	}
}

func readyz(ready Pinger) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := ready.Ping(c.Request().Context()); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	}
}

func acquire(s Streams, log *slog.Logger) echo.HandlerFunc {
	return func(c echo.Context) error {
		lease, err := s.Acquire(c.Request().Context(), pathParam(c, "user_id"), pathParam(c, "stream_id"))
		if err != nil {
			return err
		}
		return answerLease(c, log, s, lease)
	}
}

func heartbeat(s Streams, log *slog.Logger) echo.HandlerFunc {
	return func(c echo.Context) error {
		var body struct {
			StreamKey *string `json:"stream_key"`
		}
		if err := decodeBody(c, &body); err != nil {
			return err
		}
		switch {
		case body.StreamKey == nil:
			return badBody("stream_key is required: the key the acquire returned")
		case *body.StreamKey == "":
			return errEmptyStreamKey
		}
		lease, err := s.Renew(c.Request().Context(), pathParam(c, "user_id"), pathParam(c, "stream_id"), *body.StreamKey)
		if err != nil {
			return err
		}
		return answerLease(c, log, s, lease)
	}
}

// release ends one stream; a stream_key, in the body or the query, makes it
// conditional on the key.
func release(s Streams) echo.HandlerFunc {
	return func(c echo.Context) error {
		args, err := readReleaseArgs(c)
		if err != nil {
			return err
		}
		stream := pathParam(c, "stream_id")
		if args.StreamID != nil && *args.StreamID != stream {
			return &requestError{http.StatusBadRequest, "invalid_stream_id", "stream_id in the body or query differs from the one in the path"}
		}
		r, err := s.Release(c.Request().Context(), pathParam(c, "user_id"), stream, args.StreamKey)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, newReleaseBody(r, s.Limit()))
	}
}

// legacyRelease releases the stream named by stream_id (body or query), or,
// with none named, the user's lease that expires soonest: the old service's
// "decrement by one".
func legacyRelease(s Streams) echo.HandlerFunc {
	return func(c echo.Context) error {
		args, err := readReleaseArgs(c)
		if err != nil {
			return err
		}
		ctx, user := c.Request().Context(), pathParam(c, "user_id")
		if args.StreamID == nil && args.StreamKey != "" {
			// Releasing "the soonest" under a key would free a stream the
			// key does not name: refuse rather than ignore the key.
			return &requestError{http.StatusBadRequest, "invalid_stream_id", "stream_key needs the stream_id it belongs to"}
		}
		var r limiter.Release
		if args.StreamID == nil {
			r, err = s.ReleaseSoonest(ctx, user)
		} else {
			r, err = s.Release(ctx, user, *args.StreamID, args.StreamKey)
		}
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, newReleaseBody(r, s.Limit()))
	}
}

func activeStreams(s Streams) echo.HandlerFunc {
	return func(c echo.Context) error {
		user := pathParam(c, "user_id")
		streams, err := s.Active(c.Request().Context(), user)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]any{
			"user_id":        user,
			"limit":          s.Limit(),
			"active_streams": newStreamBodies(streams),
		})
	}
}
