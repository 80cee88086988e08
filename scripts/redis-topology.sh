#!/usr/bin/env bash
# redis-topology.sh: starts and stops local Redis deployments on loopback, for
# running limiterd and its tests against each topology it supports.
#
#   scripts/redis-topology.sh start cluster|sentinel|tls DIR [BASE_PORT]
#   scripts/redis-topology.sh stop DIR
#   scripts/redis-topology.sh env DIR [service|test]
#
#   cluster   Redis Cluster: 3 masters with 1 replica each, ports BASE..BASE+5
#             (cluster bus on BASE+10000..BASE+10005)
#   sentinel  1 master (BASE), 1 replica (BASE+1), 3 Sentinels (BASE+2..BASE+4);
#             the data nodes and the Sentinels each require a password
#   tls       1 Redis on BASE that speaks only TLS and wants a client
#             certificate; a CA, server and client certificate made with
#             openssl; the user "limiterd" of docs/redis-acl.md
#
# BASE_PORT comes from the argument, else REDIS_TOPOLOGY_BASE_PORT, else a free
# range is picked. Everything lives in DIR: configuration, logs, pid files,
# certificates, and two env files:
#   DIR/service.env  the service's settings (REDIS_MODE, REDIS_URL, ...)
#   DIR/test.env     the same for the test suites (REDIS_TEST_*), as an admin
# start prints service.env on stdout once the deployment is healthy (it waits
# at most REDIS_TOPOLOGY_TIMEOUT seconds, default 60) and reports progress on
# stderr. stop is idempotent: it stops whatever DIR still runs. The values in
# the env files are quoted for sh: load them with `set -a; . DIR/test.env`.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
timeout=${REDIS_TOPOLOGY_TIMEOUT:-60}

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

log() { echo "redis-topology: $*" >&2; }
die() {
  log "$*"
  exit 1
}

# in_use PORT: true when something listens on 127.0.0.1:PORT.
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pick_base COUNT [BUS_OFFSET]: a base port whose COUNT ports (and their bus
# ports) are free. Ports stay below the kernel's ephemeral range (32768 up).
pick_base() {
  local count=$1 bus=${2:-0} base p ok
  for _ in $(seq 50); do
    base=$((20000 + RANDOM % 2000))
    ok=1
    for ((p = base; p < base + count; p++)); do
      if in_use "$p" || { [ "$bus" -gt 0 ] && in_use $((p + bus)); }; then
        ok=0
        break
      fi
    done
    if [ "$ok" = 1 ]; then
      echo "$base"
      return
    fi
  done
  die "no free range of $count ports found"
}

secret() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }

# cli PORT ARGS...: redis-cli to a node of this deployment, with the
# deployment's TLS files and admin password (from the environment, never
# from the command line, where ps would show it).
cli() {
  local port=$1
  shift
  if [ -n "${admin_pw:-}" ]; then
    REDISCLI_AUTH=$admin_pw redis-cli -h 127.0.0.1 -p "$port" "${tls_args[@]}" "$@"
  else # an empty REDISCLI_AUTH still sends AUTH
    redis-cli -h 127.0.0.1 -p "$port" "${tls_args[@]}" "$@"
  fi
}
tls_args=()

# start_server NAME [--sentinel] CONF_LINES...: writes DIR/NAME.conf and
# starts redis-server with it, daemonized, its pid in DIR/NAME.pid.
start_server() {
  local name=$1 flags=()
  shift
  if [ "$1" = --sentinel ]; then
    flags=(--sentinel)
    shift
  fi
  mkdir -p "$dir/$name"
  {
    echo "bind 127.0.0.1"
    echo "daemonize yes"
    echo "pidfile $dir/$name.pid"
    echo "logfile $dir/$name.log"
    echo "dir $dir/$name"
    echo "save \"\""
    echo "appendonly no"
    printf '%s\n' "$@"
  } >"$dir/$name.conf"
  chmod 600 "$dir/$name.conf"
  redis-server "$dir/$name.conf" "${flags[@]}" || die "redis-server $name did not start: see $dir/$name.log"
}

# wait_for WHAT COMMAND...: runs COMMAND until it succeeds, for at most
# $timeout seconds since start.
wait_for() {
  local what=$1
  shift
  until "$@" >/dev/null 2>&1; do
    # A server that could not listen has already given up: say so at once.
    if grep -qs 'aborting' "$dir"/*.log || [ "$SECONDS" -ge "$timeout" ]; then
      log "not healthy after ${SECONDS}s: $what"
      for f in "$dir"/*.log; do
        [ -f "$f" ] && { log "--- tail of $f"; tail -n 5 "$f" >&2; }
      done
      return 1
    fi
    sleep 0.2
  done
}

# env_line NAME VALUE: NAME=VALUE, quoted for sh when VALUE needs it.
env_line() {
  case $2 in
  *[!A-Za-z0-9_./:@-]*) printf "%s='%s'\n" "$1" "$2" ;;
  *) printf '%s=%s\n' "$1" "$2" ;;
  esac
}

# ---- cluster -----------------------------------------------------------------

cluster_healthy() {
  local p info nodes
  for ((p = base; p < base + 6; p++)); do
    info=$(cli "$p" cluster info) || return 1
    grep -q '^cluster_state:ok' <<<"$info" || return 1
    grep -q '^cluster_slots_ok:16384' <<<"$info" || return 1
    grep -q '^cluster_known_nodes:6' <<<"$info" || return 1
  done
  nodes=$(cli "$base" cluster nodes) || return 1
  [ "$(grep -c 'master.* connected' <<<"$nodes")" = 3 ] || return 1
  [ "$(grep -c 'slave.* connected' <<<"$nodes")" = 3 ] || return 1
  for ((p = base; p < base + 6; p++)); do
    info=$(cli "$p" info replication) || return 1
    if grep -q '^role:slave' <<<"$info"; then
      grep -q '^master_link_status:up' <<<"$info" || return 1
    fi
  done
}

start_cluster() {
  local p addrs=() url
  for ((p = base; p < base + 6; p++)); do
    start_server "node-$p" "port $p" "cluster-enabled yes" \
      "cluster-config-file $dir/node-$p/nodes.conf" "cluster-node-timeout 5000"
    addrs+=("127.0.0.1:$p")
  done
  for ((p = base; p < base + 6; p++)); do
    wait_for "node $p answers" cli "$p" ping
  done
  cli "$base" --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes \
    >"$dir/cluster-create.log" 2>&1 || die "redis-cli --cluster create failed: see $dir/cluster-create.log"
  wait_for "cluster_state:ok, 16384 slots, 3 masters with a replica each" cluster_healthy

  url="redis://127.0.0.1:$base?"
  for ((p = base + 1; p < base + 6; p++)); do
    url+="addr=127.0.0.1:$p&"
  done
  url=${url%&}
  {
    env_line REDIS_MODE cluster
    env_line REDIS_URL "$url"
  } >"$dir/service.env"
  {
    env_line REDIS_TEST_MODE cluster
    env_line REDIS_TEST_URL "$url"
  } >"$dir/test.env"
}

# ---- sentinel ----------------------------------------------------------------

sentinel_healthy() {
  local p master info
  info=$(cli "$base" info replication) || return 1
  grep -q '^role:master' <<<"$info" || return 1
  grep -q "^slave0:ip=127.0.0.1,port=$((base + 1)),state=online" <<<"$info" || return 1
  for ((p = base + 2; p < base + 5; p++)); do
    master=$(REDISCLI_AUTH=$sentinel_pw redis-cli -h 127.0.0.1 -p "$p" sentinel get-master-addr-by-name limiterd) || return 1
    [ "$master" = "$(printf '127.0.0.1\n%s' "$base")" ] || return 1
    info=$(REDISCLI_AUTH=$sentinel_pw redis-cli -h 127.0.0.1 -p "$p" sentinel master limiterd) || return 1
    grep -A1 -x 'flags' <<<"$info" | grep -qx 'master' || return 1
    grep -A1 -x 'num-slaves' <<<"$info" | grep -qx '1' || return 1
    grep -A1 -x 'num-other-sentinels' <<<"$info" | grep -qx '2' || return 1
  done
}

start_sentinel() {
  local p url
  admin_pw=$(secret)
  sentinel_pw=$(secret)
  start_server "master-$base" "port $base" "requirepass $admin_pw" "masterauth $admin_pw"
  start_server "replica-$((base + 1))" "port $((base + 1))" "requirepass $admin_pw" \
    "masterauth $admin_pw" "replicaof 127.0.0.1 $base"
  wait_for "master and replica answer" cli $((base + 1)) ping
  for ((p = base + 2; p < base + 5; p++)); do
    # Sentinel rewrites its configuration file: each has its own.
    start_server "sentinel-$p" --sentinel "port $p" "requirepass $sentinel_pw" \
      "sentinel monitor limiterd 127.0.0.1 $base 2" \
      "sentinel auth-pass limiterd $admin_pw" \
      "sentinel down-after-milliseconds limiterd 3000" \
      "sentinel failover-timeout limiterd 10000" \
      "sentinel parallel-syncs limiterd 1"
  done
  wait_for "the replica is in sync; every Sentinel knows the master, the replica and 2 other Sentinels" sentinel_healthy

  # The URL's password is the Sentinels'; REDIS_PASSWORD is the data nodes'.
  url="redis://:$sentinel_pw@127.0.0.1:$((base + 2))?addr=127.0.0.1:$((base + 3))&addr=127.0.0.1:$((base + 4))&master_name=limiterd"
  {
    env_line REDIS_MODE sentinel
    env_line REDIS_URL "$url"
    env_line REDIS_PASSWORD "$admin_pw"
  } >"$dir/service.env"
  {
    env_line REDIS_TEST_MODE sentinel
    env_line REDIS_TEST_URL "$url"
    env_line REDIS_TEST_PASSWORD "$admin_pw"
  } >"$dir/test.env"
}

# ---- tls ---------------------------------------------------------------------

make_certs() {
  local d=$dir/tls
  mkdir -p "$d"
  (
    cd "$d"
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
      -subj /CN=redis-topology-ca -keyout ca.key -out ca.crt
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj /CN=localhost -keyout server.key -out server.csr
    printf '%s\n' 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost' 'extendedKeyUsage=serverAuth' >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile server.ext -out server.crt
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj /CN=limiterd -keyout client.key -out client.csr
    printf '%s\n' 'extendedKeyUsage=clientAuth' >client.ext
    openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
      -extfile client.ext -out client.crt
  ) >"$dir/openssl.log" 2>&1 || die "openssl failed: see $dir/openssl.log"
}

start_tls() {
  local d=$dir/tls acl service_pw
  command -v openssl >/dev/null || die "openssl is needed to make the certificates"
  make_certs
  admin_pw=$(secret)
  service_pw=$(secret)
  start_server "tls-$base" "port 0" "tls-port $base" \
    "tls-cert-file $d/server.crt" "tls-key-file $d/server.key" \
    "tls-ca-cert-file $d/ca.crt" "tls-auth-clients yes" "requirepass $admin_pw"
  tls_args=(--tls --cacert "$d/ca.crt" --cert "$d/client.crt" --key "$d/client.key")
  wait_for "TLS ping as admin" cli "$base" ping

  # The service's user: the rule of docs/redis-acl.md, sent on stdin so that
  # its password is never an argument.
  acl=$(grep -m1 '^ACL SETUSER limiterd ' "$repo/docs/redis-acl.md") ||
    die "docs/redis-acl.md has no ACL SETUSER limiterd line"
  [[ $acl == *'>CHANGE_ME'* ]] || die "the ACL line of docs/redis-acl.md has no >CHANGE_ME"
  [ "$(printf '%s\n' "${acl/>CHANGE_ME/>$service_pw}" | cli "$base")" = OK ] ||
    die "ACL SETUSER limiterd failed"
  [ "$(REDISCLI_AUTH=$service_pw redis-cli -h 127.0.0.1 -p "$base" "${tls_args[@]}" --user limiterd ping)" = PONG ] ||
    die "TLS ping as limiterd failed"
  [[ $(REDISCLI_AUTH=$service_pw redis-cli -h 127.0.0.1 -p "$base" "${tls_args[@]}" --user limiterd get x 2>&1) == *NOPERM* ]] ||
    die "limiterd may run GET: the ACL did not apply"

  {
    env_line REDIS_MODE single
    env_line REDIS_URL "rediss://127.0.0.1:$base/0"
    env_line REDIS_USERNAME limiterd
    env_line REDIS_PASSWORD "$service_pw"
    env_line REDIS_TLS_CA_FILE "$d/ca.crt"
    env_line REDIS_TLS_CERT_FILE "$d/client.crt"
    env_line REDIS_TLS_KEY_FILE "$d/client.key"
  } >"$dir/service.env"
  {
    env_line REDIS_TEST_MODE single
    env_line REDIS_TEST_URL "rediss://127.0.0.1:$base/0"
    env_line REDIS_TEST_USERNAME default
    env_line REDIS_TEST_PASSWORD "$admin_pw"
    env_line REDIS_TEST_TLS_CA_FILE "$d/ca.crt"
    env_line REDIS_TEST_TLS_CERT_FILE "$d/client.crt"
    env_line REDIS_TEST_TLS_KEY_FILE "$d/client.key"
  } >"$dir/test.env"
}

# ---- stop --------------------------------------------------------------------

# stop_all: stops every server whose pid file is in DIR, Sentinels first (so
# that they do not start a failover while the data nodes go), and waits for
# each to exit.
stop_all() {
  local f pid pids=() deadline
  [ -d "$dir" ] || return 0
  for f in "$dir"/sentinel-*.pid "$dir"/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    # Only a redis-server of ours: a stale pid file must not kill a stranger.
    if [[ $pid =~ ^[0-9]+$ ]] && grep -qa redis "/proc/$pid/cmdline" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    rm -f "$f"
  done
  deadline=$((SECONDS + 10))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  [ ${#pids[@]} -eq 0 ] || log "stopped ${#pids[@]} servers in $dir"
}

on_exit() {
  if [ "$1" -ne 0 ]; then
    stop_all
  fi
}

# ---- main --------------------------------------------------------------------

[ $# -ge 2 ] || usage
cmd=$1
case $cmd in
start)
  [ $# -ge 3 ] || usage
  kind=$2
  dir=$3
  base=${4:-${REDIS_TOPOLOGY_BASE_PORT:-}}
  case $kind in
  cluster) count=6 bus=10000 ;;
  sentinel) count=5 bus=0 ;;
  tls) count=1 bus=0 ;;
  *) usage ;;
  esac
  command -v redis-server >/dev/null || die "redis-server is not installed"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if compgen -G "$dir/*.pid" >/dev/null; then
    die "$dir already holds a running deployment: stop it first"
  fi
  if [ -z "$base" ]; then
    base=$(pick_base "$count" "$bus")
  fi
  if ! [[ $base =~ ^[0-9]+$ ]] || [ "$base" -lt 1024 ] || [ $((base + count - 1 + bus)) -gt 65535 ]; then
    die "BASE_PORT $base: want a number from 1024 that leaves room for $count ports"
  fi
  # A failed start stops what it started.
  trap 'on_exit $?' EXIT
  SECONDS=0
  log "starting $kind on 127.0.0.1:$base in $dir"
  "start_$kind"
  echo "$kind" >"$dir/topology"
  log "$kind healthy after ${SECONDS}s"
  cat "$dir/service.env"
  ;;
stop)
  dir=$2
  stop_all
  ;;
env)
  dir=$2
  file=$dir/${3:-service}.env
  [ -f "$file" ] || die "no $file: start a deployment first"
  cat "$file"
  ;;
*) usage ;;
esac
