package scripts

import (
	"strings"
	"testing"
)

// Each operation script is a contract: its header must say what it takes and
// what it answers, and it must be sent with common.lua in front.
func TestEveryScriptDocumentsItsContract(t *testing.T) {
	common, err := files.ReadFile("common.lua")
	if err != nil {
		t.Fatal(err)
	}
	ops, err := files.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, op := range ops {
		if op.Name() == "common.lua" {
			continue
		}
		seen++
		src, err := Source(op.Name())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(src, string(common)) {
			t.Errorf("%s is not sent with common.lua in front", op.Name())
		}
		header := strings.TrimPrefix(src, string(common))
		for _, part := range []string{"-- " + op.Name() + ":", "-- KEYS", "-- ARGV", "-- Reply"} {
			if !strings.Contains(header, part) {
				t.Errorf("%s: header lacks %q", op.Name(), part)
			}
		}
	}
	if seen != 4 {
		t.Errorf("%d operation scripts, want 4 (acquire, renew, release, active)", seen)
	}
}
