#!/usr/bin/env bash
# top-users.sh: counts live streams across all users and lists the users who
# hold the most, with plain redis-cli. Read-only. See docs/OPERATIONS.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=operator-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/operator-lib.sh"

usage() {
  cat <<EOF
Usage: $PROG [options] [N]

Lists the N users (default 10; 0 for all) who hold the most live streams,
most first, then one line of totals: users with a live stream, live streams,
and ended leases still stored.

Walks the keyspace with SCAN MATCH '<prefix>:{*}:streams' COUNT 1000 (never
KEYS), so it does not block Redis; on a big keyspace it takes a while. A user's
live streams are the members whose expiry is after Redis's clock:
ZCOUNT key (NOW +inf. ZCARD would also count leases that have ended but are
not yet pruned (the service drops them at the user's next call); those are
left out, and totalled apart.

  -n N           same as the N argument
  --summary      print only the totals line
  --scan-count C SCAN's COUNT hint (default 1000); lower is gentler on Redis
  --no-eval      count with TYPE, ZCOUNT and ZCARD per key instead of one
                 read-only EVAL per 500 keys: much slower; for an operator
                 user that may not run EVAL (ACL)

On a cluster (REDIS_MODE=cluster, or a node with cluster_enabled:1) it walks
every primary that CLUSTER NODES lists, at the address the node announces.

$COMMON_USAGE

Examples:
  $PROG                # make run's embedded Redis
  $PROG 20
  REDIS_URL=redis://10.0.0.5:6379/0 $PROG --summary
EOF
}

top=10 summary=0 scan_count=1000 use_eval=1
n_given=''
while (($# > 0)); do
  case $1 in
  --help) usage; exit 0 ;;
  --summary) summary=1; shift ;;
  --no-eval) use_eval=0; shift ;;
  -n | --scan-count)
    (($# >= 2)) || usage_error "$1 needs a value"
    [[ $2 =~ ^[0-9]+$ ]] || usage_error "$1: '$2' is not a whole number"
    if [[ $1 == -n ]]; then n_given=$2; else scan_count=$2; fi
    shift 2 ;;
  -?*)
    take_common_flag "$@" || usage_error "unknown option $1"
    shift "$SHIFT" ;;
  *)
    [[ -z $n_given ]] || usage_error "one N only"
    [[ $1 =~ ^[0-9]+$ ]] || usage_error "N: '$1' is not a whole number"
    n_given=$1; shift ;;
  esac
done
top=$((10#${n_given:-$top}))
((scan_count > 0)) || usage_error "--scan-count must be at least 1"
connect

# Counts the live (score > ARGV[1]) and stored members of each key, two
# numbers per key; -1 -1 for a key that is not a sorted set. Reads only. The
# keys come as KEYS, or, on a cluster node, after ARGV[1]: one EVAL's KEYS
# must share a slot, and the keys of one SCAN page of a node do not.
# shellcheck disable=SC2016 # Lua, not shell
count_lua='local keys = KEYS
if #keys == 0 then keys = {unpack(ARGV, 2)} end
local out = {}
for _, k in ipairs(keys) do
  local t = redis.call("TYPE", k)
  if type(t) == "table" then t = t.ok end
  if t == "zset" then
    out[#out + 1] = redis.call("ZCOUNT", k, ARGV[1], "+inf")
    out[#out + 1] = redis.call("ZCARD", k)
  elseif t == "none" then
    out[#out + 1] = 0
    out[#out + 1] = 0
  else
    out[#out + 1] = -1
    out[#out + 1] = -1
  end
end
return out'

# A cluster spreads users over its primaries, and SCAN sees one node: walk
# each primary. INFO cluster fails on miniredis (make run): not a cluster.
nodes=('')
node='' # the cluster primary being walked; empty: the node connected to
if [[ $MODE == cluster ]] || { "${CLI[@]}" INFO cluster 2>/dev/null || true; } | grep -q '^cluster_enabled:1'; then
  reply=$(rcli CLUSTER NODES)
  # Fields: id host:port@bus flags ...; skip failed primaries.
  mapfile -t nodes < <(awk '$3 ~ /master/ && $3 !~ /fail|noaddr/ { sub(/@.*/, "", $2); print $2 }' <<<"$reply" | sort)
  ((${#nodes[@]} > 0)) || die "CLUSTER NODES on $TARGET lists no primary"
fi

pattern="$(glob_escape "$PREFIX"):{*}:streams"
head_part="$PREFIX:{"
tail_part="}:streams"
rows=$(mktemp "${TMPDIR:-/tmp}/$PROG.rows.XXXXXX")
trap 'rm -f "$ERRFILE" "$rows"' EXIT

# count_batch NOW KEY...: appends "live<TAB>stored<TAB>user" per key to $rows.
count_batch() {
  local now=$1
  shift
  local -a counts=()
  if ((use_eval)); then
    local reply
    if [[ -n $node ]]; then
      reply=$(rcli EVAL "$count_lua" 0 "($now" "$@")
    else
      reply=$(rcli EVAL "$count_lua" "$#" "$@" "($now")
    fi
    read_lines counts "$reply"
  else
    local k t live stored
    for k; do
      t=$(rcli TYPE "$k")
      case $t in
      zset)
        live=$(rcli ZCOUNT "$k" "($now" +inf)
        stored=$(rcli ZCARD "$k")
        counts+=("$live" "$stored") ;;
      none) counts+=(0 0) ;;
      *) counts+=(-1 -1) ;;
      esac
    done
  fi
  ((${#counts[@]} == 2 * $#)) || die "expected $((2 * $#)) counts from Redis, got ${#counts[@]}"
  local i=0 user
  for k; do
    user=${k#"$head_part"}
    user=${user%"$tail_part"}
    if ((counts[i] < 0)); then
      echo "$PROG: skipped $k: not a sorted set (hand-made key?)" >&2
    else
      printf '%d\t%d\t%s\n' "${counts[i]}" "${counts[i + 1]}" "$user" >>"$rows"
    fi
    i=$((i + 2))
  done
}

# scan_node walks the keyspace of the node connected to, or of NODE
# (host:port, a cluster primary), counting each page as it comes.
scan_node() {
  node=$1
  local -a saved=("${CLI[@]}")
  if [[ -n $node ]]; then CLI+=(-h "${node%:*}" -p "${node##*:}"); fi
  local cursor=0 reply now i
  local -a page=() keys=()
  while :; do
    reply=$(rcli SCAN "$cursor" MATCH "$pattern" COUNT "$scan_count")
    read_lines page "$reply"
    ((${#page[@]} >= 1)) || die "unexpected SCAN reply from ${node:-$TARGET}"
    cursor=${page[0]}
    keys=("${page[@]:1}")
    # Each page is counted at Redis's time of that page, as the service would.
    now=$(redis_now_ms)
    for ((i = 0; i < ${#keys[@]}; i += 500)); do
      count_batch "$now" "${keys[@]:i:500}"
    done
    [[ $cursor != 0 ]] || break
  done
  CLI=("${saved[@]}")
}

started=$(redis_now_ms)
for n in "${nodes[@]}"; do
  scan_node "$n"
done

# SCAN may return a key twice: keep each user once.
deduped=$(awk -F'\t' '!seen[$3]++' "$rows")
if ((!summary)); then
  printf 'users with the most live streams at Redis time %s\n' "$(fmt_time "$started")"
  printf '(live: expiry after now, ZCOUNT KEY (NOW +inf; ended leases not yet pruned are not counted)\n'
  ranked=$(printf '%s\n' "$deduped" | awk -F'\t' '$1 > 0 { print $1 "\t" $3 }' | sort -t "$(printf '\t')" -k1,1nr -k2,2)
  if ((top > 0)); then ranked=$(printf '%s\n' "$ranked" | head -n "$top"); fi
  if [[ -n $ranked ]]; then
    printf '%s\n' "$ranked" | awk -F'\t' 'BEGIN { printf "%6s  %6s  %s\n", "RANK", "LIVE", "USER" }
      { printf "%6d  %6d  %s\n", NR, $1, $2 }'
  else
    echo '  (none)'
  fi
fi
where=''
if [[ -n ${nodes[0]} ]]; then where=" on ${#nodes[@]} cluster primaries: ${nodes[*]}"; fi
printf '%s\n' "$deduped" | awk -F'\t' -v pat="$pattern" -v where="$where" '
  function n(count, word) { return count " " word (count == 1 ? "" : "s") }
  BEGIN { users = live = stored = keys = 0 }
  NF == 3 { keys++; live += $1; stored += $2; if ($1 > 0) users++ }
  END {
    printf "%s %s %s; %s still stored, not counted (%s matched %s%s)\n",
      n(users, "user"), (users == 1 ? "holds" : "hold"), n(live, "live stream"),
      n(stored - live, "ended lease"), n(keys, "key"), pat, where
  }'
