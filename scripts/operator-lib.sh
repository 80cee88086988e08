# shellcheck shell=bash
# operator-lib.sh: the part shared by the operator scripts beside it
# (sessions.sh, top-users.sh, free-user.sh). It is sourced by them, not run.
#
# It turns the connection flags and the service's own environment (REDIS_URL,
# KEY_PREFIX, REDIS_MODE, REDIS_USERNAME, REDIS_PASSWORD, REDIS_TLS_*) into
# redis-cli arguments, runs redis-cli with a time bound, and turns its
# failures into one clear line on stderr. Needs bash 4.4 or later.

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  echo "${0##*/}: needs bash 4.4 or later (this is bash $BASH_VERSION)" >&2
  exit 1
fi
# A failure inside $(...) fails the assignment, so set -e stops the script
# after the first message rather than carrying on with an empty value.
shopt -s inherit_errexit

PROG=${0##*/}
# Times are printed in UTC whatever the operator's zone; sort and awk compare
# bytes.
export TZ=UTC LC_ALL=C

# The flags every script takes, for its usage text.
# shellcheck disable=SC2034 # used by the scripts that source this file
COMMON_USAGE="Where Redis is (first that applies):
  -u URL         redis://[user:pass@]host:port/db (rediss:// for TLS)
  -h HOST        host (default 127.0.0.1); with -p, wins over REDIS_URL
  -p PORT        port (default 6379: the embedded Redis of make run; it logs
                 inspect=\"redis-cli -p PORT\" when it took another port)
  REDIS_URL      the service's setting, used when no -u, -h or -p is given
Other options:
  -k PREFIX      key prefix (default \$KEY_PREFIX, else limiter)
  -t SECONDS     give up on a Redis call after this long (default 5)
  --help         this text
The service's REDIS_MODE (cluster: follow redirects), REDIS_USERNAME,
REDIS_PASSWORD and REDIS_TLS_CA_FILE / _CERT_FILE / _KEY_FILE are honoured;
REDISCLI_AUTH is passed to redis-cli as it is. REDIS_CLI names the redis-cli
binary (default redis-cli)."

opt_url='' opt_host='' opt_port='' opt_prefix='' opt_timeout=5
SHIFT=0 # words used by the last take_common_flag

# die prints one line on stderr and exits 1. In a $(...) it ends only the
# subshell, whose failure set -e then turns into the script's exit.
die() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  exit 1
}

# usage_error is for a wrong command line: exit 2.
usage_error() {
  printf '%s: %s\n' "$PROG" "$*" >&2
  printf "Run '%s --help' for usage.\n" "$PROG" >&2
  exit 2
}

# take_common_flag FLAG [VALUE]: when FLAG is one of the common flags, stores
# it, sets SHIFT to the words it used and succeeds; otherwise fails.
take_common_flag() {
  local flag=$1
  case $flag in
  -u | -h | -p | -k | --prefix | -t | --timeout) ;;
  *) return 1 ;;
  esac
  (($# >= 2)) || usage_error "$flag needs a value"
  local value=$2
  case $flag in
  -u) opt_url=$value ;;
  -h) opt_host=$value ;;
  -p) opt_port=$value ;;
  -k | --prefix) opt_prefix=$value ;;
  -t | --timeout) opt_timeout=$value ;;
  esac
  # shellcheck disable=SC2034 # read by the caller: shift "$SHIFT"
  SHIFT=2
}

# connect checks the settings and fills CLI (the redis-cli command and its
# connection arguments), TARGET (where, for messages, without password),
# PREFIX and MODE.
connect() {
  PREFIX=${opt_prefix:-${KEY_PREFIX:-limiter}}
  if [[ -z $PREFIX || $PREFIX == *[{}]* || $PREFIX == *[[:space:]]* ]]; then
    usage_error "key prefix '$PREFIX' must be non-empty, without braces or whitespace (as KEY_PREFIX in the service)"
  fi
  [[ $opt_port == '' || $opt_port =~ ^[0-9]{1,5}$ ]] || usage_error "-p: '$opt_port' is not a port number"
  [[ $opt_timeout =~ ^[0-9]+([.][0-9]+)?$ ]] || usage_error "-t: '$opt_timeout' is not a number of seconds"
  [[ $opt_url == '' || ($opt_host == '' && $opt_port == '') ]] || usage_error "give either -u URL or -h/-p, not both"

  MODE=${REDIS_MODE:-single}
  local cli=${REDIS_CLI:-redis-cli}
  command -v "$cli" >/dev/null 2>&1 ||
    die "$cli not found: install redis-cli (Debian/Ubuntu: apt-get install redis-tools) or set REDIS_CLI to its path"
  # --raw: one reply element per line, unquoted; -e: a Redis error reply
  # exits non-zero instead of being printed as if it were data.
  CLI=("$cli" --raw -e --no-auth-warning)

  local url=''
  if [[ -n $opt_host || -n $opt_port ]]; then
    CLI+=(-h "${opt_host:-127.0.0.1}" -p "${opt_port:-6379}")
    TARGET="${opt_host:-127.0.0.1}:${opt_port:-6379}"
  else
    url=${opt_url:-${REDIS_URL:-}}
    if [[ -n $url ]]; then
      [[ $MODE != sentinel ]] ||
        die "REDIS_MODE=sentinel: REDIS_URL names a sentinel, not the primary. Ask it: redis-cli -h SENTINEL_HOST -p SENTINEL_PORT SENTINEL get-master-addr-by-name MASTER_NAME, then pass -h HOST -p PORT"
      # redis-cli ignores the query (?addr=..., the other cluster nodes) and
      # connects to the first host.
      CLI+=(-u "$url")
      TARGET=$(redact_url "$url")
    else
      TARGET='127.0.0.1:6379 (no REDIS_URL, -u, -h or -p: the default of make run)'
    fi
  fi
  case $MODE in
  single | sentinel) ;;
  cluster) CLI+=(-c) ;;
  *) usage_error "REDIS_MODE '$MODE' is not single, cluster or sentinel" ;;
  esac
  if [[ -n ${REDIS_USERNAME:-} ]]; then
    CLI+=(--user "$REDIS_USERNAME")
  fi
  if [[ -n ${REDIS_PASSWORD:-} && -z ${REDISCLI_AUTH:-} ]]; then
    export REDISCLI_AUTH=$REDIS_PASSWORD # never on the command line, where ps shows it
  fi
  if [[ -n ${REDIS_TLS_CA_FILE:-} ]]; then CLI+=(--cacert "$REDIS_TLS_CA_FILE"); fi
  if [[ -n ${REDIS_TLS_CERT_FILE:-} ]]; then CLI+=(--cert "$REDIS_TLS_CERT_FILE"); fi
  if [[ -n ${REDIS_TLS_KEY_FILE:-} ]]; then CLI+=(--key "$REDIS_TLS_KEY_FILE"); fi

  # redis-cli 7.0 has no timeout for a server that accepts and never answers.
  if command -v timeout >/dev/null 2>&1; then
    CLI=(timeout "$opt_timeout" "${CLI[@]}")
  fi
  ERRFILE=$(mktemp "${TMPDIR:-/tmp}/${PROG%.sh}.XXXXXX")
  trap 'rm -f "$ERRFILE"' EXIT

  # Fail early, with one clear line, when Redis is unreachable. redis-cli
  # whose AUTH is refused goes on as the default user when that one needs
  # no password: stop there too, rather than act as someone else.
  rcli PING >/dev/null
  if grep -q 'AUTH failed' "$ERRFILE"; then
    die "Redis at $TARGET refused the credentials: $(tr '\n' ' ' <"$ERRFILE")(check REDIS_USERNAME, REDIS_PASSWORD, REDISCLI_AUTH or the URL)"
  fi
}

# redact_url hides the password of a URL: redis://u:***@host:port/0.
redact_url() {
  local url=$1
  if [[ $url =~ ^([a-z]+://)([^@/]*):([^@/]*)@(.*)$ ]]; then
    url="${BASH_REMATCH[1]}${BASH_REMATCH[2]}:***@${BASH_REMATCH[4]}"
  fi
  printf '%s' "$url"
}

# rcli ARGS...: one Redis command; prints its raw reply. On failure prints a
# line that says what failed, and why, and fails.
rcli() {
  local out rc=0
  out=$("${CLI[@]}" "$@" 2>"$ERRFILE") || rc=$?
  if ((rc == 0)); then
    printf '%s\n' "$out"
    return 0
  fi
  local err
  err=$(tr '\n' ' ' <"$ERRFILE")
  err=${err% }
  if ((rc == 124)); then
    die "no answer from Redis at $TARGET within ${opt_timeout}s ($1): is it hung, or is this the wrong address? (-t sets the limit)"
  fi
  case $err in
  *"Could not connect"* | *"Connection refused"* | *"Name or service not known"* | *"No route to host"*)
    die "cannot reach Redis at $TARGET: $err" ;;
  *NOAUTH* | *WRONGPASS* | *"invalid password"* | *"invalid username"*)
    die "Redis at $TARGET refused us: $err (put the password in REDIS_URL, REDIS_PASSWORD or REDISCLI_AUTH)" ;;
  *NOPERM*)
    die "Redis at $TARGET does not let this user run $1: $err (the service's own user is too narrow for these scripts: use an operator user, docs/OPERATIONS.md)" ;;
  esac
  die "redis-cli $1 failed against $TARGET: ${err:-exit status $rc}${out:+ $out}"
}

# read_lines NAME TEXT sets the array NAME to the non-empty lines of TEXT (a
# raw redis-cli reply: one element per line, an empty list as one empty line).
# Run rcli in an assignment first, never in <(...), where its failure would be
# lost.
read_lines() {
  local -n into=$1
  into=()
  local line
  while IFS= read -r line; do
    if [[ -n $line ]]; then into+=("$line"); fi
  done <<<"$2"
}

# redis_now_ms prints Redis's clock in Unix milliseconds (TIME), the clock
# lease expiries are on; the operator's own clock plays no part.
redis_now_ms() {
  local reply
  reply=$(rcli TIME)
  local -a t
  read_lines t "$reply"
  [[ ${#t[@]} -ge 2 && ${t[0]} =~ ^[0-9]+$ && ${t[1]} =~ ^[0-9]+$ ]] ||
    die "unexpected TIME reply from $TARGET: $reply"
  echo $((t[0] * 1000 + 10#${t[1]} / 1000))
}

# score_ms turns a sorted-set score into whole milliseconds; the service
# writes integers, a hand-made member may not.
score_ms() {
  local s=$1
  if [[ $s =~ ^[0-9]+$ ]]; then
    echo "$s"
  elif [[ $s =~ ^([0-9]+)[.][0-9]+$ ]]; then
    echo "${BASH_REMATCH[1]}"
  else
    awk -v s="$s" 'BEGIN { if (s + 0 == s && s > 0 && s < 1e15) printf "%.0f\n", s; else exit 1 }' ||
      die "score '$s' is not a lease expiry in Unix ms (hand-edited key?)"
  fi
}

# fmt_time MS prints an absolute UTC time: 2026-12-04T15:50:06.571Z.
fmt_time() {
  local ms=$1 date
  printf -v date '%(%Y-%m-%dT%H:%M:%S)T' $((ms / 1000))
  printf '%s.%03dZ' "$date" $((ms % 1000))
}

# fmt_dur MS prints a duration rounded to the second, as Go does: 45s, 1m30s,
# 2h0m5s.
fmt_dur() {
  local s=$((($1 + 500) / 1000))
  if ((s >= 3600)); then
    printf '%dh%dm%ds' $((s / 3600)) $((s % 3600 / 60)) $((s % 60))
  elif ((s >= 60)); then
    printf '%dm%ds' $((s / 60)) $((s % 60))
  else
    printf '%ds' "$s"
  fi
}

# check_user_id applies the service's rule: 1 to 128 letters, digits and
# -_.:@~, not . or .. (IDs are stored percent-decoded).
check_user_id() {
  local id=$1
  if [[ $id =~ ^[A-Za-z0-9._:@~-]{1,128}$ && $id != . && $id != .. ]]; then
    return 0
  fi
  local hint=''
  if [[ $id == *%* ]]; then
    hint=" (user IDs are stored percent-decoded: write carol@example.com, not carol%40example.com)"
  fi
  usage_error "'$id' is not a user ID: want 1 to 128 letters, digits or -_.:@~${hint}"
}

# streams_key and keys_key name a user's two keys, as limiter.Keys does.
streams_key() { printf '%s:{%s}:streams' "$PREFIX" "$1"; }
keys_key() { printf '%s:{%s}:keys' "$PREFIX" "$1"; }

# glob_escape makes a string match itself in a SCAN MATCH pattern.
glob_escape() {
  local s=$1 out='' c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
    '*' | '?' | '[' | ']' | "\\") out+="\\$c" ;;
    *) out+=$c ;;
    esac
  done
  printf '%s' "$out"
}

# parse_user_args OWN_FLAG "$@" reads the arguments of a script that takes
# one USER_ID: --help, the common flags, and the script's own switches, which
# it hands to the function named OWN_FLAG (it returns 0 when it took the
# flag). It sets user and checks it.
parse_user_args() {
  local own_flag=$1
  shift
  user=''
  while (($# > 0)); do
    case $1 in
    --help) usage; exit 0 ;;
    --) shift; break ;;
    -?*)
      if "$own_flag" "$1"; then
        shift
      else
        take_common_flag "$@" || usage_error "unknown option $1"
        shift "$SHIFT"
      fi ;;
    *)
      [[ -z $user ]] || usage_error "one USER_ID only (got '$user' and '$1')"
      user=$1; shift ;;
    esac
  done
  if (($# > 0)); then
    [[ -z $user && $# -eq 1 ]] || usage_error "one USER_ID only"
    user=$1
  fi
  [[ -n $user ]] || usage_error "no USER_ID given"
  check_user_id "$user"
}
