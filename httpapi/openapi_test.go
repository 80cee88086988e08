package httpapi_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unicode/utf8"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/limiterd/limiterd/httpapi"
	"github.com/limiterd/limiterd/internal/telemetry"
)

// contractFile is the API contract this package is held to.
const contractFile = "../docs/openapi.yaml"

// contract is contractFile, loaded and validated once per test process.
var contract struct {
	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	err    error
}

// loadContract returns the contract and a router over it, failing t when the
// file does not load or is not a valid OpenAPI document.
func loadContract(t testing.TB) (*openapi3.T, routers.Router) {
	t.Helper()
	contract.once.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromFile(contractFile)
		if err != nil {
			contract.err = fmt.Errorf("loading %s: %w", contractFile, err)
			return
		}
		// Validate also checks every example in the document against its schema.
		if err := doc.Validate(loader.Context, openapi3.EnableMultiError()); err != nil {
			contract.err = fmt.Errorf("%s is not a valid OpenAPI document: %w", contractFile, err)
			return
		}
		router, err := gorillamux.NewRouter(doc)
		if err != nil {
			contract.err = fmt.Errorf("routing %s: %w", contractFile, err)
			return
		}
		contract.doc, contract.router = doc, router
	})
	if contract.err != nil {
		t.Fatal(contract.err)
	}
	return contract.doc, contract.router
}

// contractTally counts what the checked servers held to the contract, for
// the summary TestMain prints.
var contractTally struct {
	requests  atomic.Int64 // requests validated: a mismatch failed the test
	responses atomic.Int64 // responses validated: a mismatch failed the test
	refused   atomic.Int64 // requests the server refused as malformed or unrouted: not validated
	alsoByDoc atomic.Int64 // of those, the ones the contract refuses too
}

func TestMain(m *testing.M) {
	code := m.Run()
	fmt.Printf("openapi: validated %d requests and %d responses\n",
		contractTally.requests.Load(), contractTally.responses.Load())
	fmt.Printf("openapi: %d requests refused as malformed (400, 413, 415) or not routed by the contract (404, 405, OPTIONS) were not validated; the contract refuses %d of them too\n",
		contractTally.refused.Load(), contractTally.alsoByDoc.Load())
	os.Exit(code)
}

// checkedServer serves h like httptest.NewServer, and holds every exchange to
// the contract, reporting a mismatch on t: the test that started the server
// and so made the request. It closes when t ends.
func checkedServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	doc, router := loadContract(t)
	srv := httptest.NewServer(&contractCheck{t: t, doc: doc, router: router, next: h})
	t.Cleanup(srv.Close)
	return srv
}

// contractCheck is an http.Handler in front of the real server that
// validates each request and its response against the contract.
//
// The rule for requests: a request the server accepted must be one the
// contract allows. Tests also send malformed requests on purpose (bad IDs,
// bad JSON, a form Content-Type, bodies over 1 MiB, unknown routes), and
// those break the contract by design. So a request is validated unless the
// server refused it as malformed (400, 413 or 415) or the contract has no
// operation for it (an unknown path or method). Any other answer (2xx, and
// 403, 409, 410, 500, 503, which are about the state of the service, not
// the shape of the request) requires a valid request. Requests not
// validated are counted, with how many of them the contract refuses too:
// the rest are refusals a schema cannot express (a query that disagrees
// with the body, trailing bytes after the JSON, a body over 1 MiB).
//
// The rule for responses: every response is validated, those to refused
// requests included, and a status the operation does not list is a
// failure. A request the contract does not route must be answered as
// components.responses says: NotFound for an unknown path, MethodNotAllowed
// for an unlisted method on a listed path (Options for OPTIONS), or
// BodyTooLarge, since the body limit is checked before routing. (The
// validator skips the responses to HEAD.)
type contractCheck struct {
	t      *testing.T
	doc    *openapi3.T
	router routers.Router
	next   http.Handler
}

func (c *contractCheck) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		c.t.Errorf("%s %s: reading the request body: %v", r.Method, r.URL.RequestURI(), err)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	// The server reads the same bytes; ContentLength stays as sent, so a
	// body sent chunked is still one of unknown length to the body limit.
	r.Body = io.NopCloser(bytes.NewReader(body))
	sent := r.Clone(context.Background())

	rec := httptest.NewRecorder()
	c.next.ServeHTTP(rec, r)
	res := rec.Result()
	// Validate before answering: once the client has its answer the test
	// may end, and a failure must be reported while it runs.
	c.check(sent, body, res, rec.Body.Bytes())

	maps.Copy(w.Header(), res.Header)
	w.WriteHeader(res.StatusCode)
	w.Write(rec.Body.Bytes())
}

func (c *contractCheck) check(req *http.Request, reqBody []byte, res *http.Response, resBody []byte) {
	ctx := context.Background()
	exchange := fmt.Sprintf("%s %s answered %d", req.Method, req.URL.RequestURI(), res.StatusCode)

	route, params, err := c.router.FindRoute(req)
	unrouted := err != nil
	switch {
	case errors.Is(err, routers.ErrPathNotFound):
		route = c.unroutedRoute(req, http.StatusNotFound, "NotFound")
	case errors.Is(err, routers.ErrMethodNotAllowed):
		route = c.unroutedRoute(req, http.StatusMethodNotAllowed, "MethodNotAllowed")
	case err != nil:
		c.t.Errorf("%s: the contract's router: %v", exchange, err)
		return
	}
	// The router leaves path parameters as they were sent; the server and
	// the contract speak of them percent-decoded (al%69ce is alice).
	for name, v := range params {
		if decoded, err := url.PathUnescape(v); err == nil {
			params[name] = decoded
		}
	}
	// The contract says a body of only whitespace is no body; a schema
	// cannot, so the validator is shown no body.
	if len(bytes.TrimSpace(reqBody)) == 0 {
		req.Body, req.ContentLength = http.NoBody, 0
	} else {
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	input := &openapi3filter.RequestValidationInput{
		Request: req, PathParams: params, Route: route, Options: validationOptions(),
	}

	if unrouted {
		contractTally.refused.Add(1)
		contractTally.alsoByDoc.Add(1) // the contract has no such operation
	} else {
		reqErr := openapi3filter.ValidateRequest(ctx, input)
		switch res.StatusCode {
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
			contractTally.refused.Add(1)
			if reqErr != nil {
				contractTally.alsoByDoc.Add(1)
			}
		default:
			contractTally.requests.Add(1)
			if reqErr != nil {
				c.t.Errorf("%s, but the request breaks %s: %v", exchange, contractFile, reqErr)
			}
		}
	}

	resInput := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: input,
		Status:                 res.StatusCode,
		Header:                 res.Header,
		Options:                validationOptions(),
	}
	resInput.SetBodyBytes(resBody)
	contractTally.responses.Add(1)
	if err := openapi3filter.ValidateResponse(ctx, resInput); err != nil {
		c.t.Errorf("%s, and the response breaks %s: %v\nheaders: %v\nbody: %s",
			exchange, contractFile, err, res.Header, abbreviate(resBody))
	}
}

// validationOptions report every mismatch of an exchange, not the first,
// and fail a response whose status the operation does not list. Schemas are
// left out of the messages, which quote the body instead.
func validationOptions() *openapi3filter.Options {
	return &openapi3filter.Options{
		MultiError:              true,
		IncludeResponseStatus:   true,
		SchemaValidationOptions: []openapi3.SchemaValidationOption{openapi3.DisableSchemaErrorDetails()},
	}
}

// unroutedRoute is a stand-in operation for a request the contract does not
// route: it may only answer status as the named component response, or 413.
func (c *contractCheck) unroutedRoute(req *http.Request, status int, response string) *routers.Route {
	responses := []openapi3.NewResponsesOption{
		openapi3.WithStatus(status, c.component(response)),
		openapi3.WithStatus(http.StatusRequestEntityTooLarge, c.component("BodyTooLarge")),
	}
	if status == http.StatusMethodNotAllowed && req.Method == http.MethodOptions {
		responses = append(responses, openapi3.WithStatus(http.StatusNoContent, c.component("Options")))
	}
	return &routers.Route{
		Spec:      c.doc,
		Path:      req.URL.Path,
		PathItem:  &openapi3.PathItem{},
		Method:    req.Method,
		Operation: &openapi3.Operation{Responses: openapi3.NewResponses(responses...)},
	}
}

func (c *contractCheck) component(name string) *openapi3.ResponseRef {
	ref := c.doc.Components.Responses[name]
	if ref == nil {
		c.t.Errorf("%s has no components.responses.%s", contractFile, name)
	}
	return ref
}

func abbreviate(b []byte) string {
	const most = 300
	switch {
	case !utf8.Valid(b):
		return fmt.Sprintf("(%d bytes, not UTF-8)", len(b))
	case len(b) > most:
		return string(b[:most]) + "…"
	}
	return string(b)
}

func TestContractIsAValidOpenAPIDocument(t *testing.T) {
	doc, _ := loadContract(t)
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi: %q, want 3.0.3, the version the validator checks fully", doc.OpenAPI)
	}
}

// documentableMethods are the methods an OpenAPI 3.0 path item can list.
// Echo keeps other entries among its routes (RouteNotFound handlers, and
// methods such as PROPFIND when a route takes Any); the contract cannot
// describe those.
var documentableMethods = []string{
	http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete,
	http.MethodOptions, http.MethodHead, http.MethodPatch, http.MethodTrace,
}

// echoPathToOpenAPI turns /api/streams/:user_id into /api/streams/{user_id}.
func echoPathToOpenAPI(path string) string {
	segments := strings.Split(path, "/")
	for i, s := range segments {
		if name, ok := strings.CutPrefix(s, ":"); ok {
			segments[i] = "{" + name + "}"
		}
	}
	return strings.Join(segments, "/")
}

func TestEveryRouteIsInTheContractAndEveryOperationIsServed(t *testing.T) {
	doc, _ := loadContract(t)
	// The server as cmd/limiterd builds it, so that /metrics is served too.
	f := failing{err: errors.New("not called: only routes are compared")}
	e := httpapi.NewServer(httpapi.Deps{Streams: f, Ready: f, MetricsHandler: telemetry.NewMetrics().Handler()})

	served := map[string]bool{}
	for _, r := range e.Routes() {
		if !slices.Contains(documentableMethods, r.Method) {
			continue
		}
		if strings.Contains(r.Path, "*") {
			t.Errorf("%s %s: a wildcard route cannot be described by the contract", r.Method, r.Path)
			continue
		}
		served[r.Method+" "+echoPathToOpenAPI(r.Path)] = true
	}
	documented := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented[method+" "+path] = true
		}
	}
	if len(served) == 0 {
		t.Fatal("the server registers no routes")
	}
	for _, route := range slices.Sorted(maps.Keys(served)) {
		if !documented[route] {
			t.Errorf("%s is served but not in %s", route, contractFile)
		}
	}
	for _, route := range slices.Sorted(maps.Keys(documented)) {
		if !served[route] {
			t.Errorf("%s is in %s but not served", route, contractFile)
		}
	}
}

// The metrics route is not reached by the rest of the suite; its answer is
// held to the contract here, with the registry cmd/limiterd serves.
func TestMetricsAnswerAsDocumented(t *testing.T) {
	f := failing{err: errors.New("not called")}
	srv := checkedServer(t, httpapi.NewServer(httpapi.Deps{Streams: f, Ready: f, MetricsHandler: telemetry.NewMetrics().Handler()}))
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(raw), "limiterd_") {
		t.Errorf("GET /metrics: %d %s", resp.StatusCode, abbreviate(raw))
	}
}

// The rest of the suite never sends these, yet the contract describes how
// the server answers them: OPTIONS and HEAD on a listed path, and a body
// whose Content-Length is over the limit, which is refused before routing.
func TestRoutingEdgesAnswerAsDocumented(t *testing.T) {
	f := failing{err: errors.New("not called")}
	srv := checkedServer(t, httpapi.NewServer(httpapi.Deps{Streams: f, Ready: f}))
	tooLarge := strings.Repeat("x", httpapi.MaxBodyBytes+1)
	tests := []struct {
		method, path, body string
		status             int
	}{
		{"OPTIONS", "/api/streams/alice/tv", "", http.StatusNoContent},
		{"HEAD", "/healthz", "", http.StatusMethodNotAllowed},
		{"GET", "/healthz", tooLarge, http.StatusRequestEntityTooLarge},
		{"GET", "/no/such/route", tooLarge, http.StatusRequestEntityTooLarge},
		{"GET", "/api/streams/alice/", "", http.StatusNotFound},
	}
	for _, tt := range tests {
		req, err := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.path, resp.StatusCode, tt.status)
		}
	}
}

// errorCodesInSource returns the error codes written as literals in the
// package's code: the Code of an errorBody, the code of a requestError.
func errorCodesInSource(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]string{} // code -> where
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			typ, _ := lit.Type.(*ast.Ident)
			if typ == nil {
				return true
			}
			var code ast.Expr
			for i, elt := range lit.Elts {
				switch kv, keyed := elt.(*ast.KeyValueExpr); {
				case keyed && typ.Name == "errorBody" && isIdent(kv.Key, "Code"),
					keyed && typ.Name == "requestError" && isIdent(kv.Key, "code"):
					code = kv.Value
				case !keyed && typ.Name == "requestError" && i == 1:
					code = elt
				}
			}
			if s, ok := code.(*ast.BasicLit); ok && s.Kind == token.STRING {
				value, _ := strconv.Unquote(s.Value)
				codes[value] = fset.Position(s.Pos()).String()
			}
			return true
		})
	}
	return codes
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

func TestEveryErrorCodeIsInTheContract(t *testing.T) {
	doc, _ := loadContract(t)
	schema := doc.Components.Schemas["ErrorCode"]
	if schema == nil || schema.Value == nil {
		t.Fatalf("%s has no components.schemas.ErrorCode", contractFile)
	}
	documented := map[string]bool{}
	for _, v := range schema.Value.Enum {
		documented[fmt.Sprint(v)] = true
	}
	inCode := errorCodesInSource(t)
	if len(inCode) < 10 {
		t.Fatalf("found only %d error codes in the source (%v): has errors.go changed shape?", len(inCode), inCode)
	}
	for _, code := range slices.Sorted(maps.Keys(inCode)) {
		if !documented[code] {
			t.Errorf("error code %q (%s) is not in ErrorCode in %s", code, inCode[code], contractFile)
		}
	}
	for _, code := range slices.Sorted(maps.Keys(documented)) {
		if _, ok := inCode[code]; !ok {
			t.Errorf("error code %q is in %s but not in the code", code, contractFile)
		}
	}
}
