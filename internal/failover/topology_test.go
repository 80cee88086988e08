package failover

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// topologyScript starts and stops the deployments; the tests run in this
// package's directory.
const topologyScript = "../../scripts/redis-topology.sh"

// Bounds on the waits of this file. They stop a hang; none is a speed target.
const (
	startBound    = 2 * time.Minute  // redis-topology.sh start (it gives up after 60 s itself)
	failoverBound = 60 * time.Second // from the kill to the promotion, and from the restart to the resync
	adminTimeout  = time.Second      // one admin command to one node
)

// topology is a deployment started by redis-topology.sh for one test.
type topology struct {
	kind string            // "cluster" or "sentinel"
	dir  string            // the script's DIR: configuration, logs, pid files
	env  map[string]string // DIR/service.env: REDIS_MODE, REDIS_URL, REDIS_PASSWORD

	clients    map[string]*redis.Client         // admin clients, by node address
	sentinels  map[string]*redis.SentinelClient // admin clients, by Sentinel address
	masterName string                           // the Sentinels' name of the master
}

// startTopology starts a deployment of kind in a temporary directory and
// stops it at the end of the test.
func startTopology(t *testing.T, kind string) *topology {
	t.Helper()
	script, err := filepath.Abs(topologyScript)
	if err != nil {
		t.Fatal(err)
	}
	tp := &topology{kind: kind, dir: t.TempDir(), clients: map[string]*redis.Client{}, sentinels: map[string]*redis.SentinelClient{}}
	// Registered before the start: stop is idempotent, and a start that
	// fails half way may have left servers running.
	t.Cleanup(func() {
		for _, c := range tp.clients {
			c.Close()
		}
		for _, s := range tp.sentinels {
			s.Close()
		}
		out, err := exec.Command("bash", script, "stop", tp.dir).CombinedOutput()
		if err != nil {
			t.Errorf("redis-topology.sh stop %s: %v\n%s", tp.dir, err, out)
		}
		if t.Failed() {
			tp.logTails(t)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), startBound)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script, "start", kind, tp.dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("redis-topology.sh start %s: %v\n%s", kind, err, stderr.String())
	}
	tp.env, err = parseEnv(out)
	if err != nil {
		t.Fatalf("redis-topology.sh start %s printed %q: %v", kind, out, err)
	}
	for _, name := range []string{"REDIS_MODE", "REDIS_URL"} {
		if tp.env[name] == "" {
			t.Fatalf("redis-topology.sh start %s printed no %s: %q", kind, name, out)
		}
	}
	if tp.env["REDIS_MODE"] != kind {
		t.Fatalf("redis-topology.sh start %s printed REDIS_MODE=%s", kind, tp.env["REDIS_MODE"])
	}
	return tp
}

// parseEnv reads the NAME=VALUE lines redis-topology.sh prints, whose values
// are quoted for sh with single quotes when they need it.
func parseEnv(out []byte) (map[string]string, error) {
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("line %q is not NAME=VALUE", line)
		}
		if len(value) >= 2 && value[0] == '\'' && value[len(value)-1] == '\'' {
			value = value[1 : len(value)-1]
		}
		if strings.Contains(value, "'") {
			return nil, fmt.Errorf("line %q: a quote inside the value", line)
		}
		env[name] = value
	}
	return env, sc.Err()
}

// serviceEnv returns the deployment's settings for servicetest.Start.
func (tp *topology) serviceEnv() []string {
	var env []string
	for _, name := range slices.Sorted(maps.Keys(tp.env)) {
		env = append(env, name+"="+tp.env[name])
	}
	return env
}

// seeds returns the addresses REDIS_URL names (cluster nodes or Sentinels)
// and the URL's password (the Sentinels', in sentinel mode).
func (tp *topology) seeds(t *testing.T) (addrs []string, password string, query url.Values) {
	t.Helper()
	u, err := url.Parse(tp.env["REDIS_URL"])
	if err != nil {
		t.Fatalf("REDIS_URL from redis-topology.sh: %v", err)
	}
	q := u.Query()
	password, _ = u.User.Password()
	return append([]string{u.Host}, q["addr"]...), password, q
}

// client returns an admin client of one data node (cluster node, master or
// replica) with the deployment's password.
func (tp *topology) client(addr string) *redis.Client {
	if c, ok := tp.clients[addr]; ok {
		return c
	}
	c := redis.NewClient(&redis.Options{
		Addr: addr, Password: tp.env["REDIS_PASSWORD"],
		DialTimeout: adminTimeout, ReadTimeout: adminTimeout, WriteTimeout: adminTimeout,
		MaxRetries: -1, ContextTimeoutEnabled: true,
	})
	tp.clients[addr] = c
	return c
}

// sentinel returns an admin client of the Sentinel at addr, and the name the
// Sentinels give the master.
func (tp *topology) sentinel(t *testing.T, addr string) (*redis.SentinelClient, string) {
	t.Helper()
	_, password, q := tp.seeds(t)
	tp.masterName = q.Get("master_name")
	if tp.masterName == "" {
		t.Fatalf("REDIS_URL from redis-topology.sh names no master_name")
	}
	if tp.sentinels[addr] == nil {
		tp.sentinels[addr] = redis.NewSentinelClient(&redis.Options{
			Addr: addr, Password: password,
			DialTimeout: adminTimeout, ReadTimeout: adminTimeout, WriteTimeout: adminTimeout,
			MaxRetries: -1, ContextTimeoutEnabled: true,
		})
	}
	return tp.sentinels[addr], tp.masterName
}

func adminCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*adminTimeout)
}

// info returns the fields of one INFO section of the node at addr.
func (tp *topology) info(addr, section string) (map[string]string, error) {
	ctx, cancel := adminCtx()
	defer cancel()
	text, err := tp.client(addr).Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	fields := map[string]string{}
	for _, line := range strings.Split(text, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(k, "#") {
			fields[k] = v
		}
	}
	return fields, nil
}

// victim is the master a test kills, and what it takes to bring it back.
type victim struct {
	addr       string
	replica    string // the address of its one replica, which is promoted
	replicaPID int
	pid        int
	configFile string
	slots      []slotRange // cluster: the slots it serves
}

type slotRange struct{ from, to int }

func (v victim) String() string {
	s := fmt.Sprintf("%s (pid %d, replica %s", v.addr, v.pid, v.replica)
	for i, r := range v.slots {
		if i == 0 {
			s += ", slots "
		} else {
			s += ","
		}
		s += fmt.Sprintf("%d-%d", r.from, r.to)
	}
	return s + ")"
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	id, addr, masterID string
	master, myself     bool
	slots              []slotRange
}

func parseClusterNodes(text string) ([]clusterNode, error) {
	var nodes []clusterNode
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("CLUSTER NODES line %q has %d fields, want at least 8", line, len(f))
		}
		addr, _, _ := strings.Cut(f[1], "@")
		flags := strings.Split(f[2], ",")
		n := clusterNode{id: f[0], addr: addr, masterID: f[3],
			master: slices.Contains(flags, "master"), myself: slices.Contains(flags, "myself")}
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") { // a slot being migrated
				continue
			}
			from, to, isRange := strings.Cut(s, "-")
			if !isRange {
				to = from
			}
			a, err1 := strconv.Atoi(from)
			b, err2 := strconv.Atoi(to)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("CLUSTER NODES line %q: slot %q", line, s)
			}
			n.slots = append(n.slots, slotRange{a, b})
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// slotsOf returns the cluster slot of each user's keys, as Redis computes it
// (the {USER_ID} hash tag).
func (tp *topology) slotsOf(t *testing.T, users []string) []int {
	t.Helper()
	addrs, _, _ := tp.seeds(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmds := make([]*redis.IntCmd, len(users))
	_, err := tp.client(addrs[0]).Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, u := range users {
			cmds[i] = p.ClusterKeySlot(ctx, "{"+u+"}")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("CLUSTER KEYSLOT: %v", err)
	}
	slots := make([]int, len(users))
	for i, c := range cmds {
		slots[i] = int(c.Val())
	}
	return slots
}

// pickVictim chooses the master to kill and returns, for each user, whether
// its keys live on that master. In a cluster it is the master that serves the
// most users; with Sentinel, the one master, which serves them all.
func (tp *topology) pickVictim(t *testing.T, users []string) (victim, []bool) {
	t.Helper()
	var v victim
	affected := make([]bool, len(users))
	switch tp.kind {
	case "cluster":
		addrs, _, _ := tp.seeds(t)
		ctx, cancel := adminCtx()
		text, err := tp.client(addrs[0]).ClusterNodes(ctx).Result()
		cancel()
		if err != nil {
			t.Fatalf("CLUSTER NODES: %v", err)
		}
		nodes, err := parseClusterNodes(text)
		if err != nil {
			t.Fatal(err)
		}
		slots := tp.slotsOf(t, users)
		best := -1
		for _, n := range nodes {
			if !n.master || len(n.slots) == 0 {
				continue
			}
			count := 0
			for _, s := range slots {
				if inSlots(s, n.slots) {
					count++
				}
			}
			if count > best {
				best, v.addr, v.slots = count, n.addr, n.slots
				v.replica = ""
				for _, r := range nodes {
					if r.masterID == n.id {
						v.replica = r.addr
					}
				}
			}
		}
		if v.replica == "" {
			t.Fatalf("master %s has no replica in CLUSTER NODES:\n%s", v.addr, text)
		}
		for i, s := range slots {
			affected[i] = inSlots(s, v.slots)
		}
	case "sentinel":
		addrs, _, _ := tp.seeds(t)
		if v.addr = tp.sentinelNames(t, addrs[0]); v.addr == "" {
			t.Fatalf("the Sentinel %s names no master", addrs[0])
		}
		repl, err := tp.info(v.addr, "replication")
		if err != nil {
			t.Fatalf("INFO replication of the master %s: %v", v.addr, err)
		}
		v.replica = replicaAddr(repl["slave0"])
		if v.replica == "" || repl["connected_slaves"] != "1" {
			t.Fatalf("the master %s has not exactly one replica: %v", v.addr, repl)
		}
		for i := range affected {
			affected[i] = true
		}
	default:
		t.Fatalf("no victim for a %s deployment", tp.kind)
	}
	server, err := tp.info(v.addr, "server")
	if err != nil {
		t.Fatalf("INFO server of %s: %v", v.addr, err)
	}
	v.pid, err = strconv.Atoi(server["process_id"])
	if err != nil || v.pid <= 1 {
		t.Fatalf("INFO server of %s: process_id %q", v.addr, server["process_id"])
	}
	v.configFile = server["config_file"]
	if v.configFile == "" {
		t.Fatalf("INFO server of %s: no config_file, so it could not be restarted", v.addr)
	}
	replica, err := tp.info(v.replica, "server")
	if err != nil {
		t.Fatalf("INFO server of %s: %v", v.replica, err)
	}
	v.replicaPID, err = strconv.Atoi(replica["process_id"])
	if err != nil || v.replicaPID <= 1 {
		t.Fatalf("INFO server of %s: process_id %q", v.replica, replica["process_id"])
	}
	return v, affected
}

func inSlots(slot int, ranges []slotRange) bool {
	for _, r := range ranges {
		if slot >= r.from && slot <= r.to {
			return true
		}
	}
	return false
}

// replicaAddr reads "ip=127.0.0.1,port=20001,state=online,..." (an INFO
// replication slaveN field) as host:port.
func replicaAddr(field string) string {
	var ip, port string
	for _, kv := range strings.Split(field, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "ip":
			ip = v
		case "port":
			port = v
		}
	}
	if ip == "" || port == "" {
		return ""
	}
	return ip + ":" + port
}

// replicationLag returns how many bytes of the replication stream the
// victim's replica had not yet confirmed, as the master last heard (replicas
// confirm once a second, so this is an upper bound of what it lacks).
func (tp *topology) replicationLag(v victim) (int64, error) {
	repl, err := tp.info(v.addr, "replication")
	if err != nil {
		return 0, err
	}
	master, err := strconv.ParseInt(repl["master_repl_offset"], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("master_repl_offset %q", repl["master_repl_offset"])
	}
	for _, kv := range strings.Split(repl["slave0"], ",") {
		if k, val, _ := strings.Cut(kv, "="); k == "offset" {
			replica, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return 0, err
			}
			return master - replica, nil
		}
	}
	return 0, errors.New("no replica offset in INFO replication")
}

// stallReplica makes the victim's replica fall behind: it freezes the
// replica (SIGSTOP) and writes a junk value of junkSize under junkKey on the
// victim, which fills the kernel's socket buffers of the replication link.
// What the victim writes next waits in its own memory behind the junk, so
// that killing the victim loses it, as a crash loses what a lagging replica
// (a slow link, a busy replica) has not received yet. Without the junk, the
// kernel would still hand a dead master's last writes to the replica. The
// caller kills the victim some time after behind (when the junk was written:
// from then on, nothing the victim writes reaches the replica), then calls
// resume.
func (tp *topology) stallReplica(t *testing.T, v victim, junkKey string) (behind time.Time, resume func()) {
	t.Helper()
	resume = func() { syscall.Kill(v.replicaPID, syscall.SIGCONT) }
	if err := syscall.Kill(v.replicaPID, syscall.SIGSTOP); err != nil {
		t.Fatalf("kill -STOP %d (the replica %s): %v", v.replicaPID, v.replica, err)
	}
	t.Cleanup(resume) // a stopped server would not stop at the end of the test
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Its own client: the admin client's 1 s timeouts are short for 64 MiB
	// on a busy machine.
	c := redis.NewClient(&redis.Options{Addr: v.addr, Password: tp.env["REDIS_PASSWORD"], ContextTimeoutEnabled: true, MaxRetries: -1})
	defer c.Close()
	if err := c.Set(ctx, junkKey, strings.Repeat("x", junkSize), 0).Err(); err != nil {
		resume()
		t.Fatalf("SET %s (%d bytes) on %s: %v", junkKey, junkSize, v.addr, err)
	}
	return time.Now(), resume
}

// junkSize is above what the kernel buffers of one loopback connection hold
// here (net.ipv4.tcp_rmem and tcp_wmem maxima of 32 MiB and 4 MiB).
const junkSize = 64 << 20

// kill ends the victim with SIGKILL, as a crash would, and waits until the
// process is gone.
func (tp *topology) kill(t *testing.T, v victim) time.Time {
	t.Helper()
	if err := syscall.Kill(v.pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -KILL %d (%s): %v", v.pid, v.addr, err)
	}
	at := time.Now()
	deadline := at.Add(5 * time.Second)
	for alive(v.pid) {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server %d (%s) still alive 5s after SIGKILL", v.pid, v.addr)
		}
		time.Sleep(time.Millisecond)
	}
	return at
}

// alive reports whether pid runs; a zombie (killed, not yet reaped by its
// parent, which for a daemonized server is init) does not.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z' && stat[i+2] != 'X'
	}
	return true
}

// waitPromoted waits until the victim's replica has taken the master's role.
func (tp *topology) waitPromoted(t *testing.T, v victim, since time.Time) time.Time {
	t.Helper()
	for deadline := since.Add(failoverBound); ; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the replica %s of %s was not promoted within %v", v.replica, v.addr, failoverBound)
		}
		if repl, err := tp.info(v.replica, "replication"); err == nil && repl["role"] == "master" {
			return time.Now()
		}
	}
}

// waitAgreed waits until the whole deployment names the promoted replica as
// the master: every Sentinel (they learn it from the leader's hello messages,
// every 2 s), or every Cluster node still running (from gossip).
func (tp *topology) waitAgreed(t *testing.T, v victim, since time.Time) time.Time {
	t.Helper()
	addrs, _, _ := tp.seeds(t)
	for deadline := since.Add(failoverBound); ; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not every node of the %s named %s the master within %v", tp.kind, v.replica, failoverBound)
		}
		agreed := true
		for _, addr := range addrs {
			if tp.kind == "sentinel" {
				agreed = agreed && tp.sentinelNames(t, addr) == v.replica
				continue
			}
			if addr == v.addr {
				continue // killed, or restarted and still catching up
			}
			ctx, cancel := adminCtx()
			text, err := tp.client(addr).ClusterNodes(ctx).Result()
			cancel()
			nodes, perr := parseClusterNodes(text)
			if err != nil || perr != nil {
				agreed = false
				continue
			}
			for _, n := range nodes {
				if n.addr == v.replica && !n.master {
					agreed = false
				}
			}
		}
		if agreed {
			return time.Now()
		}
	}
}

// sentinelNames returns the master address the Sentinel at addr gives, or ""
// if it does not answer.
func (tp *topology) sentinelNames(t *testing.T, addr string) string {
	t.Helper()
	s, name := tp.sentinel(t, addr)
	ctx, cancel := adminCtx()
	defer cancel()
	master, err := s.GetMasterAddrByName(ctx, name).Result()
	if err != nil || len(master) != 2 {
		return ""
	}
	return master[0] + ":" + master[1]
}

// scriptCalls returns how many scripts (EVALSHA and EVAL) the node at addr
// has run since it started. A replica runs none: since Redis 5 it receives
// a script's writes, not the script.
func (tp *topology) scriptCalls(addr string) (int64, error) {
	stats, err := tp.info(addr, "commandstats")
	if err != nil {
		return 0, err
	}
	var n int64
	for _, cmd := range []string{"cmdstat_evalsha", "cmdstat_eval"} {
		for _, kv := range strings.Split(stats[cmd], ",") {
			if k, val, _ := strings.Cut(kv, "="); k == "calls" {
				c, err := strconv.ParseInt(val, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("%s: %q", cmd, stats[cmd])
				}
				n += c
			}
		}
	}
	return n, nil
}

// restart starts the victim again from its configuration file, as an
// operator or an orchestrator replacing the lost node would. The deployments
// keep no data on disk, so it comes back empty: the Cluster (its nodes.conf)
// or the Sentinels make it a replica of the promoted master.
func (tp *topology) restart(t *testing.T, v victim) time.Time {
	t.Helper()
	out, err := exec.Command("redis-server", v.configFile).CombinedOutput()
	if err != nil {
		t.Fatalf("restarting redis-server %s from %s: %v\n%s", v.addr, v.configFile, err, out)
	}
	return time.Now()
}

// waitResynced waits until the restarted victim is a replica whose link to
// its master is up, so that every master has a replica again.
func (tp *topology) waitResynced(t *testing.T, v victim, since time.Time) time.Time {
	t.Helper()
	for deadline := since.Add(failoverBound); ; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the restarted %s was not an in-sync replica within %v", v.addr, failoverBound)
		}
		repl, err := tp.info(v.addr, "replication")
		if err == nil && repl["role"] == "slave" && repl["master_link_status"] == "up" && repl["master_host"]+":"+repl["master_port"] == v.replica {
			return time.Now()
		}
	}
}

// logTails logs the end of every server log of the deployment.
func (tp *topology) logTails(t *testing.T) {
	logs, _ := filepath.Glob(filepath.Join(tp.dir, "*.log"))
	for _, f := range logs {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		t.Logf("--- tail of %s:\n%s", f, strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
}
