package limiter

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/redis/go-redis/v9"
)

// replyErr is an error reply from Redis, as the client reports it.
type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}

func TestClassify(t *testing.T) {
	tests := []struct {
		err         error
		unavailable bool
	}{
		{context.DeadlineExceeded, true},
		{context.Canceled, true},
		{io.EOF, true},
		{redis.ErrPoolTimeout, true},
		{redis.ErrClosed, true},
		{replyErr("LOADING Redis is loading the dataset in memory"), true},
		{replyErr("BUSY Redis is busy running a script"), true},
		{replyErr("MASTERDOWN Link with MASTER is down"), true},
		{replyErr("READONLY You can't write against a read only replica."), true},
		{replyErr("CLUSTERDOWN The cluster is down"), true},
		{replyErr("MOVED 3999 127.0.0.1:6381"), true},
		{replyErr("TRYAGAIN Multiple keys request during rehashing of slot"), true},
		{replyErr("OOM command not allowed when used memory > 'maxmemory'."), true},
		{replyErr("NOPERM this user has no permissions to run the 'evalsha' command"), true},
		{replyErr("ERR max number of clients reached"), true},
		{replyErr("WRONGTYPE Operation against a key holding the wrong kind of value script: 1"), false},
		{replyErr("ERR user_script:3: attempt to compare nil with number script: 1"), false},
	}
	for _, tt := range tests {
		err := classify("acquire", tt.err)
		if got := errors.Is(err, ErrUnavailable); got != tt.unavailable {
			t.Errorf("classify(%v) unavailable = %v, want %v", tt.err, got, tt.unavailable)
		}
		if !errors.Is(err, tt.err) {
			t.Errorf("classify(%v) = %v: lost its cause", tt.err, err)
		}
	}
}

func TestParseStateRejectsWhatTheContractForbids(t *testing.T) {
	good := []any{"admitted", "s1", "k", int64(2), int64(1), []any{"s1", "2"}}
	if _, ok := parseState(good); !ok {
		t.Fatal("a well-formed reply was rejected")
	}
	for _, reply := range []any{
		nil,
		"admitted",
		[]any{"admitted", "s1", "k", int64(2), int64(1)},
		[]any{int64(1), "s1", "k", int64(2), int64(1), []any{}},
		[]any{"admitted", "s1", "k", "2", int64(1), []any{}},
		[]any{"admitted", "s1", "k", int64(2), int64(1), []any{"s1"}},
		[]any{"admitted", "s1", "k", int64(2), int64(1), []any{"s1", "soon"}},
		[]any{"admitted", "s1", "k", int64(2), int64(1), []any{int64(1), "2"}},
	} {
		if _, ok := parseState(reply); ok {
			t.Errorf("parseState(%v) accepted it", reply)
		}
	}
}
