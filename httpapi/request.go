package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
)

// requestError is a request the API cannot read: its own status and code.
type requestError struct {
	status int
	code   string
	msg    string
}

func (e *requestError) Error() string { return e.code + ": " + e.msg }

func badBody(msg string) error  { return &requestError{http.StatusBadRequest, "invalid_body", msg} }
func badQuery(msg string) error { return &requestError{http.StatusBadRequest, "invalid_query", msg} }

var errEmptyStreamKey = &requestError{http.StatusBadRequest, "invalid_stream_key", "stream_key, when given, must not be empty"}

// pathParam returns a path parameter percent-decoded. Echo routes on the raw
// path whenever the request escaped something, and leaves params escaped
// then. A value that does not decode is returned as it is: its '%' makes it
// an invalid ID.
func pathParam(c echo.Context, name string) string {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v
	}
	if decoded, err := url.PathUnescape(v); err == nil {
		return decoded
	}
	return v
}

// decodeBody reads an optional JSON object into dst. An empty body (or null)
// leaves dst as it is.
func decodeBody(c echo.Context, dst any) error {
	req := c.Request()
	data, err := io.ReadAll(req.Body)
	if err != nil {
		var httpErr *echo.HTTPError
		if errors.As(err, &httpErr) { // over the body limit
			return httpErr
		}
		return badBody("the body could not be read")
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if ct := req.Header.Get(echo.HeaderContentType); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != echo.MIMEApplicationJSON && !strings.HasSuffix(mt, "+json")) {
			return &requestError{http.StatusUnsupportedMediaType, "unsupported_media_type",
				"the body must be JSON, sent with Content-Type: application/json (got " + strconv.Quote(ct) + ")"}
		}
	}
	if !utf8.Valid(data) { // encoding/json would quietly replace the bad bytes
		return badBody("the body is not valid UTF-8")
	}
	if err := json.Unmarshal(data, dst); err != nil {
		return badBody(describeJSONError(err))
	}
	return nil
}

// describeJSONError says what is wrong with a body in the API's terms, not
// in Go's.
func describeJSONError(err error) string {
	var (
		typeErr   *json.UnmarshalTypeError
		syntaxErr *json.SyntaxError
	)
	switch {
	case errors.Is(err, errStreamIDType):
		return err.Error()
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return fmt.Sprintf("%s must not be a JSON %s", typeErr.Field, typeErr.Value)
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("the body is not valid JSON (at byte %d)", syntaxErr.Offset)
	}
	return "the body must be a JSON object"
}

// releaseArgs are the optional arguments of a release: in a JSON body or in
// the query string, not both with different values.
type releaseArgs struct {
	StreamID  *string // nil when not given
	StreamKey string  // "" when not given: release without checking the key
}

func readReleaseArgs(c echo.Context) (releaseArgs, error) {
	var body struct {
		StreamID  *jsonID `json:"stream_id"`
		StreamKey *string `json:"stream_key"`
	}
	if err := decodeBody(c, &body); err != nil {
		return releaseArgs{}, err
	}
	query, err := url.ParseQuery(c.Request().URL.RawQuery)
	if err != nil {
		return releaseArgs{}, badQuery("the query string is malformed: " + err.Error())
	}
	streamID, err := oneValue("stream_id", (*string)(body.StreamID), query)
	if err != nil {
		return releaseArgs{}, err
	}
	streamKey, err := oneValue("stream_key", body.StreamKey, query)
	if err != nil {
		return releaseArgs{}, err
	}
	args := releaseArgs{StreamID: streamID}
	if streamKey != nil {
		if *streamKey == "" {
			return releaseArgs{}, errEmptyStreamKey
		}
		args.StreamKey = *streamKey
	}
	return args, nil
}

// oneValue returns the field's value from the body or the query, nil when
// neither has it, and an error when they disagree or the query repeats it.
func oneValue(name string, fromBody *string, query url.Values) (*string, error) {
	values := query[name]
	switch {
	case len(values) > 1:
		return nil, badQuery(name + " is given more than once")
	case len(values) == 1 && fromBody != nil && *fromBody != values[0]:
		return nil, badQuery(name + " differs between the body and the query")
	case len(values) == 1:
		return &values[0], nil
	}
	return fromBody, nil
}

var errStreamIDType = errors.New("stream_id must be a string or a whole number")

// jsonID is an ID in a JSON body: a string, or a whole number as the players
// of the service limiterd replaced send them.
type jsonID string

func (id *jsonID) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		return json.Unmarshal(data, (*string)(id))
	}
	for _, c := range data {
		if c < '0' || c > '9' {
			return errStreamIDType
		}
	}
	*id = jsonID(data)
	return nil
}
