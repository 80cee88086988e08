// Package jepsen checks that limiterd, run as several processes in front of
// one Redis, behaves like one sequential lease table per user: the
// linearizability test drives real limiterd binaries with many concurrent
// HTTP clients, records every call with its start and end times, and checks
// the history with porcupine against the sequential model in model_test.go.
//
// The package has only tests:
//
//	go test -race -count=1 ./internal/jepsen/
//	LINEARIZABILITY_DURATION=60s LINEARIZABILITY_CHECK_TIMEOUT=10m go test -count=1 -timeout 30m -run TestLinearizability -v ./internal/jepsen/
//
// The load runs in one-second epochs. Between two epochs no call is in
// flight, and checked calls release every lease, so each user's epoch is
// checked on its own: porcupine's memory grows with the square of a
// partition's length, and one partition per user for a whole minute does
// not fit in memory.
//
// Settings, read from the environment by the test:
//
//	LINEARIZABILITY_DURATION       how long to send load (Go duration; default 3s)
//	LINEARIZABILITY_CHECK_TIMEOUT  longest porcupine may search (default 2m); a
//	                               search cut short fails the test
//	LINEARIZABILITY_OUT            directory for porcupine's HTML visualisation
//	                               of a failing history (default os.TempDir())
package jepsen
