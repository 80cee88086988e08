package httpapi

import (
	"context"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// maxRequestIDLength bounds an incoming X-Request-ID: it is echoed and logged.
const maxRequestIDLength = 128

// observe is the outermost middleware. It gives the request an ID (the
// caller's X-Request-ID when it is short and printable, else a new one),
// returns it in X-Request-ID, answers any error through the error handler so
// that the status is known, then logs one line and counts the request.
func observe(log *slog.Logger, metrics RequestObserver) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			req := c.Request()
			id := req.Header.Get(echo.HeaderXRequestID)
			if !printableID(id) {
				id = newRequestID()
			}
			c.Response().Header().Set(echo.HeaderXRequestID, id)

			err := next(c)
			if err != nil {
				c.Error(err)
			}
			took := time.Since(start)
			route, status := c.Path(), c.Response().Status
			if route == "" { // matched no route: never log the raw path, it is unbounded
				route = "unmatched"
			}
			if metrics != nil {
				metrics.ObserveRequest(route, req.Method, status, took)
			}
			level := requestLevel(route, status)
			if !log.Enabled(req.Context(), level) {
				return nil
			}
			attrs := []slog.Attr{
				slog.String("request_id", id),
				slog.String("method", req.Method),
				slog.String("route", route),
				slog.Int("status", status),
				slog.Duration("took", took),
			}
			if log.Enabled(req.Context(), slog.LevelDebug) {
				// User IDs are personal data: only in debug logs.
				attrs = append(attrs, slog.String("user_id", pathParam(c, "user_id")))
			}
			if err != nil && status >= http.StatusInternalServerError {
				attrs = append(attrs, slog.Any("err", err))
			}
			log.LogAttrs(context.Background(), level, "request", attrs...)
			return nil
		}
	}
}

// requestLevel logs failures of the service above the rest, and probes of
// health and metrics below, so that info logs show the traffic that matters.
func requestLevel(route string, status int) slog.Level {
	switch {
	case status == http.StatusServiceUnavailable:
		return slog.LevelWarn
	case status >= http.StatusInternalServerError:
		return slog.LevelError
	case route == "/healthz" || route == "/readyz" || route == "/metrics":
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

func printableID(id string) bool {
	if id == "" || len(id) > maxRequestIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// newRequestID returns 32 random hex digits: unique enough to find a request
// in the logs, and cheap (no system call).
func newRequestID() string {
	var b [16]byte
	for i := 0; i < len(b); i += 8 {
		v := rand.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return hex.EncodeToString(b[:])
}
