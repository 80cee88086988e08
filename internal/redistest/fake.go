package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
)

// Fake starts a loopback server that speaks just enough RESP for a go-redis
// client: it reads each command and writes what reply returns for it, raw
// RESP such as "+PONG\r\n" or "-MOVED 1234 127.0.0.1:1\r\n". An empty reply
// answers "-ERR unknown command", which is also what go-redis's HELLO gets,
// so clients fall back to RESP2. It returns the address; the server and its
// connections close at the end of the test. reply may be called from several
// goroutines at once.
func Fake(t testing.TB, reply func(cmd []string) string) string {
	t.Helper()
	return acceptAll(t, func(c net.Conn) {
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			cmd, err := readCommand(r)
			if err != nil {
				return
			}
			out := reply(cmd)
			if out == "" {
				out = fmt.Sprintf("-ERR unknown command '%s'\r\n", cmd[0])
			}
			if _, err := io.WriteString(c, out); err != nil {
				return
			}
		}
	})
}

// readCommand reads one command as clients send them: an array of bulk
// strings.
func readCommand(r *bufio.Reader) ([]string, error) {
	n, err := readHeader(r, '*')
	if err != nil {
		return nil, err
	}
	if n < 1 || n > 1<<20 {
		return nil, fmt.Errorf("redistest: fake: command of %d arguments", n)
	}
	cmd := make([]string, n)
	for i := range cmd {
		size, err := readHeader(r, '$')
		if err != nil {
			return nil, err
		}
		if size < 0 || size > 64<<20 {
			return nil, fmt.Errorf("redistest: fake: argument of %d bytes", size)
		}
		buf := make([]byte, size+2) // and CRLF
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		cmd[i] = string(buf[:size])
	}
	cmd[0] = strings.ToUpper(cmd[0])
	return cmd, nil
}

func readHeader(r *bufio.Reader, kind byte) (int, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	line = strings.TrimRight(line, "\r\n")
	if len(line) < 2 || line[0] != kind {
		return 0, fmt.Errorf("redistest: fake: want %q, got %q", kind, line)
	}
	return strconv.Atoi(line[1:])
}

// FakeClusterNode starts a Fake that acts as a Redis Cluster of one node,
// for plain and Cluster clients alike: CLUSTER SLOTS gives it every slot,
// PING and ASKING answer as Redis does, and every script (EVAL, EVALSHA) gets
// scriptReply, one RESP error or value without its CRLF, in which "SELF"
// stands for the node's own address: "-MOVED 1234 SELF" sends the client
// back where it came from.
func FakeClusterNode(t testing.TB, scriptReply string) string {
	t.Helper()
	var addr string
	known := make(chan struct{}) // addr is set
	addr = Fake(t, func(cmd []string) string {
		<-known
		switch {
		case cmd[0] == "PING":
			return "+PONG\r\n"
		case cmd[0] == "ASKING":
			return "+OK\r\n"
		case cmd[0] == "CLUSTER" && len(cmd) > 1 && strings.EqualFold(cmd[1], "SLOTS"):
			host, port, _ := net.SplitHostPort(addr)
			return fmt.Sprintf("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$%d\r\n%s\r\n:%s\r\n", len(host), host, port)
		case cmd[0] == "EVALSHA" || cmd[0] == "EVAL":
			return strings.ReplaceAll(scriptReply, "SELF", addr) + "\r\n"
		}
		return ""
	})
	close(known)
	return addr
}
