package httpapi

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/limiterd/limiterd/limiter"
)

// errorBody is every error response: a stable machine code, a sentence for
// people, and context where the code has some.
type errorBody struct {
	Code          string       `json:"error"`
	Msg           string       `json:"msg"`
	Limit         int          `json:"limit,omitempty"`
	ActiveStreams []streamBody `json:"active_streams,omitempty"`
}

// problem is the one place that maps an error to a status and a body.
func problem(err error) (int, errorBody) {
	var (
		limitErr *limiter.LimitError
		reqErr   *requestError
		httpErr  *echo.HTTPError
	)
	switch {
	case errors.As(err, &limitErr):
		// Players of the replaced service match this status and sentence.
		return http.StatusForbidden, errorBody{
			Code: "stream_limit_reached", Msg: "Request denied: too many concurrent streams",
			Limit: limitErr.Limit, ActiveStreams: newStreamBodies(limitErr.Active),
		}
	case errors.Is(err, limiter.ErrInvalidUserID):
		return http.StatusBadRequest, errorBody{Code: "invalid_user_id", Msg: "user_id must be 1 to 128 letters, digits or -_.:@~"}
	case errors.Is(err, limiter.ErrInvalidStreamID):
		return http.StatusBadRequest, errorBody{Code: "invalid_stream_id", Msg: "stream_id must be 1 to 128 letters, digits or -_.:@~"}
	case errors.Is(err, limiter.ErrLeaseInactive):
		return http.StatusGone, errorBody{Code: "lease_expired", Msg: "The stream has no live lease (it expired or was released): acquire it again"}
	case errors.Is(err, limiter.ErrKeyMismatch):
		return http.StatusConflict, errorBody{Code: "stream_key_mismatch", Msg: "stream_key is not the key of this stream's live lease"}
	case errors.Is(err, limiter.ErrUnavailable):
		return http.StatusServiceUnavailable, errorBody{Code: "redis_unavailable", Msg: "The stream store is unavailable: retry shortly"}
	case errors.As(err, &reqErr):
		return reqErr.status, errorBody{Code: reqErr.code, Msg: reqErr.msg}
	case errors.As(err, &httpErr):
		return httpErr.Code, routingError(httpErr.Code)
	}
	return http.StatusInternalServerError, errorBody{Code: "internal", Msg: "Internal error: it has been logged"}
}

// routingError describes the errors Echo itself raises.
func routingError(status int) errorBody {
	switch status {
	case http.StatusNotFound:
		return errorBody{Code: "not_found", Msg: "No such route"}
	case http.StatusMethodNotAllowed:
		return errorBody{Code: "method_not_allowed", Msg: "This route does not take that method (see Allow)"}
	case http.StatusRequestEntityTooLarge:
		return errorBody{Code: "body_too_large", Msg: "The request body is over 1 MiB"}
	}
	text := http.StatusText(status)
	return errorBody{Code: strings.ReplaceAll(strings.ToLower(text), " ", "_"), Msg: text}
}

// errorHandler writes every error as JSON. The client never sees internal
// causes; the request log line (observe) carries them.
func errorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		status, body := problem(err)
		if status == http.StatusServiceUnavailable {
			c.Response().Header().Set("Retry-After", "1")
		}
		if err := c.JSON(status, body); err != nil {
			log.Debug("writing an error response", "err", err)
		}
	}
}
