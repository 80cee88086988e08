package limiter

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
)

// replyErr is an error reply from Redis, as the client reports it.
type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		kind string
	}{
		{context.DeadlineExceeded, KindTimeout},
		{redis.ErrPoolTimeout, KindTimeout},
		{&net.OpError{Op: "read", Err: timeoutErr{}}, KindTimeout},
		{context.Canceled, KindUnavailable},
		{io.EOF, KindConnection},
		{redis.ErrClosed, KindConnection},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, KindConnection},
		{replyErr("LOADING Redis is loading the dataset in memory"), KindLoading},
		{replyErr("BUSY Redis is busy running a script"), KindBusy},
		{replyErr("MASTERDOWN Link with MASTER is down"), KindReadOnly},
		{replyErr("READONLY You can't write against a read only replica."), KindReadOnly},
		{replyErr("NOREPLICAS Not enough good replicas to write."), KindReadOnly},
		{replyErr("CLUSTERDOWN The cluster is down"), KindCluster},
		{replyErr("MOVED 3999 127.0.0.1:6381"), KindCluster},
		{replyErr("ASK 3999 127.0.0.1:6381"), KindCluster},
		{replyErr("CROSSSLOT Keys in request don't hash to the same slot"), KindCluster},
		{replyErr("TRYAGAIN Multiple keys request during rehashing of slot"), KindCluster},
		{replyErr("OOM command not allowed when used memory > 'maxmemory'."), KindOOM},
		{replyErr("NOAUTH Authentication required."), KindAuth},
		{replyErr("WRONGPASS invalid username-password pair or user is disabled."), KindAuth},
		{replyErr("NOPERM this user has no permissions to run the 'evalsha' command"), KindAuth},
		{replyErr("ERR max number of clients reached"), KindConnection},
		{replyErr("ERR The user executing the script can't run this command or subcommand script: 1f0d, on @user_script:12."), KindAuth},
		{replyErr("WRONGTYPE Operation against a key holding the wrong kind of value script: 1"), KindScript},
		{replyErr("ERR user_script:3: attempt to compare nil with number script: 1"), KindScript},
	}
	for _, tt := range tests {
		if got := errorKind(tt.err); got != tt.kind {
			t.Errorf("errorKind(%v) = %q, want %q", tt.err, got, tt.kind)
		}
		err := classify("acquire", tt.err)
		if got, want := errors.Is(err, ErrUnavailable), tt.kind != KindScript; got != want {
			t.Errorf("classify(%v) unavailable = %v, want %v", tt.err, got, want)
		}
		if !errors.Is(err, tt.err) {
			t.Errorf("classify(%v) = %v: lost its cause", tt.err, err)
		}
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string { return "i/o timeout" }
func (timeoutErr) Timeout() bool { return true }

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
