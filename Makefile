# limiterd: `make run` serves on :8080 (embedded Redis unless REDIS_URL is set);
# `make test` runs every test, those against a real redis-server included.
GO      ?= go
BIN     ?= bin/limiterd
LDFLAGS ?= -s -w

.PHONY: run build test vet fmt-check check clean check-linearizability test-deploy

run:
	$(GO) run ./cmd/limiterd

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/limiterd

# -race needs cgo (gcc); the suite starts its own redis-server processes on
# free loopback ports and never touches a Redis on :6379.
test:
	$(GO) test -race -count=1 ./...

# A longer linearizability run than make test's 3 s: LINEARIZABILITY_DURATION
# of load on 3 limiterd processes sharing one redis-server, checked with
# porcupine (internal/jepsen). On failure it prints the path of an HTML picture.
LINEARIZABILITY_DURATION ?= 60s
check-linearizability:
	LINEARIZABILITY_DURATION=$(LINEARIZABILITY_DURATION) LINEARIZABILITY_CHECK_TIMEOUT=10m \
		$(GO) test -count=1 -timeout 30m -run TestLinearizability -v ./internal/jepsen/

# Tests of the deployment files: deploy/ is a Go module of its own.
test-deploy:
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

check: fmt-check vet test

clean:
	rm -rf bin
