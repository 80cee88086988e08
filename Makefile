# limiterd: `make run` serves on :8080 (embedded Redis unless REDIS_URL is set);
# `make test` runs every test, those against a real redis-server included.
GO      ?= go
BIN     ?= bin/limiterd
LDFLAGS ?= -s -w

.PHONY: run build test vet fmt-check check clean check-linearizability test-deploy \
	test-cluster test-sentinel test-tls test-topologies fuzz \
	bench bench-doc bench-go failover

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

# make test-cluster | test-sentinel | test-tls: start that Redis deployment
# (scripts/redis-topology.sh) in a temporary directory, run the Redis-backed
# suites against it through the REDIS_TEST_* settings, and always stop it.
TOPOLOGY_PKGS ?= ./limiter/ ./httpapi/

test-topologies: test-cluster test-sentinel test-tls

test-cluster test-sentinel test-tls: test-%:
	@dir=$$(mktemp -d) && trap 'scripts/redis-topology.sh stop "$$dir"; rm -rf "$$dir"' EXIT && \
	scripts/redis-topology.sh start $* "$$dir" >/dev/null && \
	set -a && . "$$dir/test.env" && set +a && \
	$(GO) test -race -count=1 $(TOPOLOGY_PKGS) && \
	if [ $* = sentinel ]; then \
	  REDIS_TEST_SENTINEL_FAILOVER=1 $(GO) test -race -count=1 -run '^TestSentinelFailover$$' ./limiter/; \
	fi

# Each fuzz target for FUZZTIME, one after another with one worker each;
# make test already runs their seed corpora (testdata/fuzz).
FUZZTIME ?= 5m
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzValidID$$' -fuzztime $(FUZZTIME) -parallel 1 ./limiter/
	$(GO) test -run '^$$' -fuzz '^FuzzParseState$$' -fuzztime $(FUZZTIME) -parallel 1 ./limiter/
	$(GO) test -run '^$$' -fuzz '^FuzzRoutes$$' -fuzztime $(FUZZTIME) -parallel 1 ./httpapi/

# make bench: measures limiterd on loopback (its own redis-server, the real
# binary) and prints a Markdown table (docs/BENCHMARKS.md). Needs redis-server,
# redis-benchmark and wrk; installs wrk when missing.
BENCHFLAGS ?=
bench: build
	@command -v wrk >/dev/null 2>&1 || { echo "installing wrk"; apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
	$(GO) build -o bin/limiterbench ./cmd/limiterbench
	bin/limiterbench -limiterd $(BIN) -svg bin/benchmark-latency.svg $(BENCHFLAGS)

# bench-doc: three runs, medians; rewrites docs/BENCHMARKS.md's table and picture.
bench-doc:
	$(MAKE) bench BENCHFLAGS='-runs 3 -update docs/BENCHMARKS.md -svg docs/benchmark-latency.svg'

# bench-go: go test benchmarks, with allocations, of the limiter and the handlers.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./limiter/ ./httpapi/

# make failover: kill a Redis master under load (Cluster and Sentinel, without
# and with REDIS_WAIT_REPLICAS=1, with a lagging replica, and a Sentinel master
# restarted too early) and log what each cost: docs/FAILOVER.md. About 11
# minutes; it SIGKILLs only the redis-servers it starts.
failover:
	LIMITERD_FAILOVER=1 $(GO) test -count=1 -timeout 20m -v -run TestFailover ./internal/failover/

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

check: fmt-check vet test

clean:
	rm -rf bin
