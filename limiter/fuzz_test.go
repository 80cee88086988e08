package limiter

// Fuzz targets for what the limiter accepts from outside: IDs from clients
// and replies from Redis. `go test` runs their seeds (f.Add and
// testdata/fuzz/<FuzzName>/); `go test -run '^$' -fuzz '^FuzzName$'
// -parallel 1 ./limiter/` searches for more.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// idPattern is the README's definition of an ID, written again apart from
// validID so that the two can be compared.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9\-_.:@~]{1,128}$`)

// scriptRecorder is a Redis that records every script call and answers it
// with an error, so a test sees whether a call got as far as Redis.
type scriptRecorder struct {
	calls [][]string // the KEYS of each call, then its ARGV formatted
}

var errRecorded = errors.New("recorded: no Redis here")

func (r *scriptRecorder) record(keys []string, args []any) *redis.Cmd {
	call := append([]string{}, keys...)
	for _, a := range args {
		call = append(call, fmt.Sprint(a))
	}
	r.calls = append(r.calls, call)
	return redis.NewCmdResult(nil, errRecorded)
}

func (r *scriptRecorder) Eval(_ context.Context, _ string, keys []string, args ...any) *redis.Cmd {
	return r.record(keys, args)
}

func (r *scriptRecorder) EvalSha(_ context.Context, _ string, keys []string, args ...any) *redis.Cmd {
	return r.record(keys, args)
}

func (r *scriptRecorder) EvalRO(_ context.Context, _ string, keys []string, args ...any) *redis.Cmd {
	return r.record(keys, args)
}

func (r *scriptRecorder) EvalShaRO(_ context.Context, _ string, keys []string, args ...any) *redis.Cmd {
	return r.record(keys, args)
}

func (r *scriptRecorder) ScriptExists(context.Context, ...string) *redis.BoolSliceCmd {
	return redis.NewBoolSliceResult(nil, errRecorded)
}

func (r *scriptRecorder) ScriptLoad(context.Context, string) *redis.StringCmd {
	return redis.NewStringResult("", errRecorded)
}

func (r *scriptRecorder) Ping(context.Context) *redis.StatusCmd {
	return redis.NewStatusResult("", errRecorded)
}

// FuzzValidID checks validID against the README's rule, the shape of the
// Redis keys built from a valid ID (the hash tag must be exactly the user
// ID, or a user's two keys could land in different cluster slots, or two
// users share one), and that every exported call refuses an invalid ID
// before anything reaches Redis.
func FuzzValidID(f *testing.F) {
	for _, id := range []string{
		"a", "alice", "user-1_x.y:z@w~", "carol@example.com", "42", "...", ".a", "a.",
		strings.Repeat("z", MaxIDLength), strings.Repeat("z", MaxIDLength+1),
		"", ".", "..", "{alice}", "al}ice", "{", "}", "%7B", "a/b", "a b", "a\tb",
		"é", "\xff", "a\x00", "a\n", "a*", "a?", "a#", "a%2F", "\u00a0", "ａ",
	} {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, id string) {
		valid := validID(id)
		if want := idPattern.MatchString(id) && id != "." && id != ".."; valid != want {
			t.Fatalf("validID(%q) = %v, want %v", id, valid, want)
		}
		if valid {
			checkValidIDShape(t, id)
		}
		checkCallsOnID(t, id, valid)
	})
}

// checkValidIDShape spells out, byte by byte, what a valid ID can never
// hold, and what it makes of the Redis keys.
func checkValidIDShape(t *testing.T, id string) {
	t.Helper()
	if len(id) < 1 || len(id) > MaxIDLength {
		t.Errorf("valid ID %q is %d bytes, want 1 to %d", id, len(id), MaxIDLength)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c == '{' || c == '}' || c == '/' || c == '%' || c <= ' ' || c >= 0x7f {
			t.Errorf("valid ID %q holds byte %#x at %d", id, c, i)
		}
	}
	l := &Limiter{cfg: Config{KeyPrefix: DefaultKeyPrefix}}
	streams, keys := l.Keys(id)
	for _, k := range []string{streams, keys} {
		if strings.Count(k, "{") != 1 || strings.Count(k, "}") != 1 {
			t.Errorf("key %q of ID %q holds other than one '{' and one '}'", k, id)
		}
		open, end := strings.IndexByte(k, '{'), strings.IndexByte(k, '}')
		if open < 0 || end < open || k[open+1:end] != id {
			t.Errorf("hash tag of key %q is not the ID %q", k, id)
		}
	}
	if want := "limiter:{" + id + "}:streams"; streams != want {
		t.Errorf("streams key %q, want %q", streams, want)
	}
	if want := "limiter:{" + id + "}:keys"; keys != want {
		t.Errorf("keys key %q, want %q", keys, want)
	}
}

// checkCallsOnID calls every exported operation with id as the user and as
// the stream. An invalid ID must be refused with the right error before
// Redis; a valid one must reach Redis with the user's keys and the ID as
// given (no trimming, no case folding).
func checkCallsOnID(t *testing.T, id string, valid bool) {
	t.Helper()
	rec := &scriptRecorder{}
	l, err := New(rec, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	calls := []struct {
		name    string
		wantErr error // when id is invalid
		call    func() error
	}{
		{"Acquire(id, tv)", ErrInvalidUserID, func() error { _, err := l.Acquire(ctx, id, "tv"); return err }},
		{"Renew(id, tv)", ErrInvalidUserID, func() error { _, err := l.Renew(ctx, id, "tv", "k"); return err }},
		{"Release(id, tv)", ErrInvalidUserID, func() error { _, err := l.Release(ctx, id, "tv", ""); return err }},
		{"ReleaseSoonest(id)", ErrInvalidUserID, func() error { _, err := l.ReleaseSoonest(ctx, id); return err }},
		{"Active(id)", ErrInvalidUserID, func() error { _, err := l.Active(ctx, id); return err }},
		{"Acquire(alice, id)", ErrInvalidStreamID, func() error { _, err := l.Acquire(ctx, "alice", id); return err }},
		{"Renew(alice, id)", ErrInvalidStreamID, func() error { _, err := l.Renew(ctx, "alice", id, "k"); return err }},
		{"Release(alice, id)", ErrInvalidStreamID, func() error { _, err := l.Release(ctx, "alice", id, ""); return err }},
	}
	for _, c := range calls {
		rec.calls = nil
		err := c.call()
		if !valid {
			if !errors.Is(err, c.wantErr) {
				t.Errorf("%s with ID %q: err = %v, want %v", c.name, id, err, c.wantErr)
			}
			if len(rec.calls) != 0 {
				t.Errorf("%s with invalid ID %q reached Redis: %q", c.name, id, rec.calls)
			}
			continue
		}
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, errRecorded) {
			t.Errorf("%s with valid ID %q: err = %v, want the recorder's error", c.name, id, err)
		}
		if len(rec.calls) != 1 {
			t.Fatalf("%s with valid ID %q: %d script calls, want 1", c.name, id, len(rec.calls))
		}
		user, stream := id, "tv"
		if c.wantErr == ErrInvalidStreamID {
			user, stream = "alice", id
		}
		got := rec.calls[0]
		streams, keys := l.Keys(user)
		if len(got) < 2 || got[0] != streams || got[1] != keys {
			t.Errorf("%s: KEYS %q, want [%q %q]", c.name, got, streams, keys)
		}
		if strings.HasPrefix(c.name, "Acquire") || strings.HasPrefix(c.name, "Renew") || strings.HasPrefix(c.name, "Release(") {
			if len(got) < 3 || got[2] != stream {
				t.Errorf("%s: ARGV %q, want the stream ID %q first", c.name, got[2:], stream)
			}
		}
	}
}

// FuzzParseState feeds parseState replies of every shape, written in a
// small notation (see decodeReply) so that the seed corpus reads as replies.
// parseState must never panic, and must accept exactly the replies that the
// contract of scripts/common.lua allows, returning what they say.
func FuzzParseState(f *testing.F) {
	// The real replies are in testdata/fuzz/FuzzParseState, captured from
	// redis-server 7.0.15; these add shapes Redis should never send.
	for _, s := range []string{
		"",
		"~",
		"admitted",
		"#1",
		"[]",
		"[admitted s1 k #2 #1]",
		"[admitted s1 k #2 #1 [] extra]",
		"[admitted s1 k '2' #1 []]",
		"[admitted s1 k #2 #1 [s1]]",
		"[admitted s1 k #2 #1 [s1 soon]]",
		"[admitted s1 k #2 #1 [#1 '2']]",
		"[admitted s1 k #2 #1 [s1 #2]]",
		"[admitted s1 k #2 #1 [s1 ~]]",
		"[admitted s1 k #2 #1 [s1 [2]]]",
		"[admitted s1 k #2 #1 ~]",
		"[admitted ~ k #2 #1 []]",
		"[#1 s1 k #2 #1 []]",
		"[admitted s1 k %2 #1 []]",
		"[admitted s1 k #9223372036854775807 #-9223372036854775808 []]",
		"[ok '' '' #0 #1 [s1 NaN]]",
		"[ok '' '' #0 #1 [s1 inf]]",
		"[ok '' '' #0 #1 [s1 -inf]]",
		"[ok '' '' #0 #1 [s1 1e+20]]",
		"[ok '' '' #0 #1 [s1 9223372036854775808]]",
		"[ok '' '' #0 #1 [s1 9223372036854774784]]",
		"[ok '' '' #0 #1 [s1 9007199254740992]]",
		"[ok '' '' #0 #1 [s1 9007199254740993]]",
		"[ok '' '' #0 #1 [s1 9.007199254740994e15]]",
		"[ok '' '' #0 #1 [s1 0]]",
		"[ok '' '' #0 #1 [s1 -0]]",
		"[ok '' '' #0 #1 [s1 -1.5]]",
		"[ok '' '' #0 #1 [s1 1.5]]",
		"[ok '' '' #0 #1 [s1 0x10]]",
		"[ok '' '' #0 #1 [s1 ' 1']]",
		"[ok '' '' #0 #1 [s1 1_000]]",
		"[ok '' '' #0 #1 [s1 1e400]]",
		"[[[[[[[[]]]]]]]]",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, notation string) {
		reply := decodeReply(notation)
		// The notation must say what it decoded: a failure report shows it.
		if again := decodeReply(encodeReply(reply)); !sameReply(again, reply) {
			t.Fatalf("notation does not round-trip: %q -> %#v -> %q -> %#v", notation, reply, encodeReply(reply), again)
		}
		got, ok := parseState(reply)
		want, wantOK := contractState(reply)
		switch {
		case ok && !wantOK:
			t.Fatalf("parseState accepted %s, which the contract forbids; it made %s", encodeReply(reply), describeState(got))
		case !ok && wantOK:
			t.Fatalf("parseState refused %s, which the contract allows", encodeReply(reply))
		case ok && !reflect.DeepEqual(got, want):
			t.Fatalf("parseState(%s) = %s, want %s", encodeReply(reply), describeState(got), describeState(want))
		}
	})
}

// maxExpiryMs is the largest expiry the contract allows: 2^53 ms, the last
// integer a float64 score holds exactly (the year 287396). The scripts
// write Redis's clock plus a lease; a score past it, NaN, ±Inf or below 0
// can only come from a hand-edited set.
const maxExpiryMs = 1 << 53

// contractState is scripts/common.lua's reply contract, written out again:
// six fields of the right types, and live as (ID, expiry) pairs of strings
// where each expiry is a number of Unix ms from 0 to maxExpiryMs. A state
// built from any other expiry would say something the reply does not.
func contractState(reply any) (state, bool) {
	f, ok := reply.([]any)
	if !ok || len(f) != 6 {
		return state{}, false
	}
	status, ok0 := f[0].(string)
	streamID, ok1 := f[1].(string)
	streamKey, ok2 := f[2].(string)
	expiry, ok3 := f[3].(int64)
	now, ok4 := f[4].(int64)
	live, ok5 := f[5].([]any)
	if !ok0 || !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || len(live)%2 == 1 {
		return state{}, false
	}
	st := state{status: status, streamID: streamID, streamKey: streamKey, expiry: expiry, now: now, live: []Stream{}}
	for i := 0; i < len(live); i += 2 {
		id, okID := live[i].(string)
		score, okScore := live[i+1].(string)
		if !okID || !okScore {
			return state{}, false
		}
		ms, err := strconv.ParseFloat(score, 64)
		if err != nil || math.IsNaN(ms) || ms < 0 || ms > maxExpiryMs {
			return state{}, false
		}
		st.live = append(st.live, Stream{ID: id, ExpiresAt: time.UnixMilli(int64(ms)).UTC()})
	}
	return st, true
}

// describeState shows a state with its expiries in Unix ms, as the reply
// carries them.
func describeState(st state) string {
	live := make([]string, len(st.live))
	for i, s := range st.live {
		live[i] = fmt.Sprintf("%s@%dms", s.ID, s.ExpiresAt.UnixMilli())
	}
	return fmt.Sprintf("{status:%q stream:%q key:%q expiry:%d now:%d live:%v}",
		st.status, st.streamID, st.streamKey, st.expiry, st.now, live)
}

// decodeReply reads a reply, as go-redis hands one over, from a notation in
// which every input means something:
//
//	[ ... ]   a list ([]any); lists left open close at the end
//	'text'    a string up to the next lone ' ('' is a quote inside it)
//	#digits   an int64 ("#-5"; out of range saturates, no digits is 0)
//	%text     a float64, as a RESP3 double (text not a number is NaN)
//	~         nil
//	word      any other run of bytes up to a delimiter is a string
//
// Delimiters are space, tab, newline, comma, [, ] and '. The reply is the
// one value written, several values make a list, and nothing is nil.
func decodeReply(s string) any {
	top := []any{}
	stack := [][]any{}
	add := func(v any) {
		if len(stack) == 0 {
			top = append(top, v)
			return
		}
		stack[len(stack)-1] = append(stack[len(stack)-1], v)
	}
	isDelim := func(c byte) bool { return strings.IndexByte(" \t\n,[]'", c) >= 0 }
	token := func(i int) (string, int) {
		j := i
		for j < len(s) && !isDelim(s[j]) {
			j++
		}
		return s[i:j], j
	}
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == ',':
			i++
		case c == '[':
			stack = append(stack, []any{})
			i++
		case c == ']':
			i++
			if len(stack) == 0 {
				continue // a stray close means nothing
			}
			list := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			add(list)
		case c == '\'':
			var b strings.Builder
			for i++; i < len(s); i++ {
				if s[i] == '\'' {
					if i+1 < len(s) && s[i+1] == '\'' {
						b.WriteByte('\'')
						i++
						continue
					}
					i++
					break
				}
				b.WriteByte(s[i])
			}
			add(b.String())
		case c == '#':
			var text string
			text, i = token(i + 1)
			n, _ := strconv.ParseInt(text, 10, 64) // saturates on ErrRange, 0 on syntax
			add(n)
		case c == '%':
			var text string
			text, i = token(i + 1)
			x, err := strconv.ParseFloat(text, 64)
			if err != nil && !errors.Is(err, strconv.ErrRange) {
				x = math.NaN()
			}
			add(x)
		case c == '~':
			add(nil)
			i++
		default:
			var word string
			word, i = token(i)
			add(word)
		}
	}
	for len(stack) > 0 {
		list := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		add(list)
	}
	switch len(top) {
	case 0:
		return nil
	case 1:
		return top[0]
	}
	return top
}

// encodeReply writes a reply in decodeReply's notation.
func encodeReply(v any) string {
	var b strings.Builder
	var write func(v any)
	write = func(v any) {
		switch x := v.(type) {
		case nil:
			b.WriteString("~")
		case int64:
			b.WriteString("#" + strconv.FormatInt(x, 10))
		case float64:
			b.WriteString("%" + strconv.FormatFloat(x, 'g', -1, 64))
		case string:
			b.WriteString("'" + strings.ReplaceAll(x, "'", "''") + "'")
		case []any:
			b.WriteString("[")
			for i, e := range x {
				if i > 0 {
					b.WriteString(" ")
				}
				write(e)
			}
			b.WriteString("]")
		default:
			panic(fmt.Sprintf("no notation for %T", v))
		}
	}
	write(v)
	return b.String()
}

// sameReply is reflect.DeepEqual with NaN equal to itself.
func sameReply(a, b any) bool {
	if x, ok := a.(float64); ok {
		y, ok := b.(float64)
		return ok && (x == y || math.IsNaN(x) && math.IsNaN(y))
	}
	la, okA := a.([]any)
	lb, okB := b.([]any)
	if okA || okB {
		if !okA || !okB || len(la) != len(lb) {
			return false
		}
		for i := range la {
			if !sameReply(la[i], lb[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}
