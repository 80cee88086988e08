package httpapi

import "github.com/labstack/echo/v4"

// routes is the whole HTTP surface of the service.
func routes(e *echo.Echo, d Deps) {
	e.GET("/healthz", healthz())
	e.GET("/readyz", readyz(d.Ready))
	if d.MetricsHandler != nil {
		e.GET("/metrics", echo.WrapHandler(d.MetricsHandler))
	}

	e.GET("/api/streams/:user_id/:stream_id", acquire(d.Streams, d.Logger))
	e.POST("/api/streams/:user_id/:stream_id/heartbeat", heartbeat(d.Streams, d.Logger))
	e.PATCH("/api/streams/:user_id/:stream_id", release(d.Streams))
	e.DELETE("/api/streams/:user_id/:stream_id", release(d.Streams))
	e.GET("/api/users/:user_id/streams", activeStreams(d.Streams))

	// The release route of the service limiterd replaced, kept for its players.
	e.PATCH("/api/users/:user_id", legacyRelease(d.Streams))
}
