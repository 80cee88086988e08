// Package faults holds fault-injection tests: the real limiterd binary
// (internal/servicetest) under a steady load of players, against a real
// redis-server (internal/redistest) that a test kills, pauses, restarts or
// empties of its scripts, and limiterd replicas that a test kills or stops.
// Each test logs what it measured on lines that start with "faults: ".
//
// The package holds no code; run it with
//
//	go test -race -count=1 -v ./internal/faults/
package faults
