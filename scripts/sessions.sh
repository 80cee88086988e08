#!/usr/bin/env bash
# sessions.sh: shows one user's streams as Redis holds them, with plain
# redis-cli. Read-only. See docs/OPERATIONS.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=operator-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/operator-lib.sh"

usage() {
  cat <<EOF
Usage: $PROG [options] USER_ID

Shows USER_ID's live streams, soonest expiry first: the stream ID, when its
lease ends (UTC, on Redis's clock: TIME) and how long from now. Then the
leases that have ended but are still stored: the service ignores them and
drops them at the user's next call. Read-only.

Stream keys are the players' secrets: they are printed only with --show-keys.

  --show-keys    also print each stream's key

$COMMON_USAGE

Examples:
  $PROG alice          # make run's embedded Redis
  $PROG -p 6380 alice
  REDIS_URL=redis://10.0.0.5:6379/0 $PROG 'carol@example.com'
EOF
}

show_keys=0
own_flag() {
  case $1 in
  --show-keys) show_keys=1 ;;
  *) return 1 ;;
  esac
}
parse_user_args own_flag "$@"
connect

skey=$(streams_key "$user")
kkey=$(keys_key "$user")
now=$(redis_now_ms)
zrange=()
reply=$(rcli ZRANGE "$skey" 0 -1 WITHSCORES)
read_lines zrange "$reply"

if ((${#zrange[@]} == 0)); then
  printf 'user %s: no live streams (no key %s) at Redis time %s\n' "$user" "$skey" "$(fmt_time "$now")"
  exit 0
fi

# Every read before the first line of output: a refusal (NOPERM) or a lost
# connection prints one error, not half a table.
pttl=$(rcli PTTL "$skey")
declare -A stream_key=()
if ((show_keys)); then
  fields=()
  reply=$(rcli HGETALL "$kkey")
  read_lines fields "$reply"
  for ((i = 0; i + 1 < ${#fields[@]}; i += 2)); do
    stream_key[${fields[i]}]=${fields[i + 1]}
  done
fi

live=() ended=()
width=6 # "STREAM"
for ((i = 0; i + 1 < ${#zrange[@]}; i += 2)); do
  id=${zrange[i]}
  ms=$(score_ms "${zrange[i + 1]}")
  ((${#id} <= width)) || width=${#id}
  # A lease is live while its expiry is after now: the scripts prune at or
  # before now (ZREMRANGEBYSCORE -inf now).
  if ((ms > now)); then live+=("$id" "$ms"); else ended+=("$id" "$ms"); fi
done

# row ID MS WHEN prints one table line.
row() {
  if ((show_keys)); then
    printf '  %-*s  %-24s  %-10s  %s\n' "$width" "$1" "$(fmt_time "$2")" "$3" "${stream_key[$1]:-(none in $kkey)}"
  else
    printf '  %-*s  %-24s  %s\n' "$width" "$1" "$(fmt_time "$2")" "$3"
  fi
}
header() {
  if ((show_keys)); then
    printf '  %-*s  %-24s  %-10s  %s\n' "$width" STREAM "$1" "$2" 'STREAM KEY'
  else
    printf '  %-*s  %-24s  %s\n' "$width" STREAM "$1" "$2"
  fi
}
plural() { if (($1 == 1)); then printf '%d %s' "$1" "$2"; else printf '%d %ss' "$1" "$2"; fi; }

printf 'user %s: %s at Redis time %s\n' "$user" "$(plural $((${#live[@]} / 2)) 'live stream')" "$(fmt_time "$now")"
if ((${#live[@]} > 0)); then
  header 'EXPIRES AT (UTC)' 'EXPIRES IN'
  for ((i = 0; i < ${#live[@]}; i += 2)); do
    row "${live[i]}" "${live[i + 1]}" "$(fmt_dur $((live[i + 1] - now)))"
  done
fi
if ((${#ended[@]} > 0)); then
  printf "%s still stored (not counted: the service drops it at the user's next call):\n" \
    "$(plural $((${#ended[@]} / 2)) 'ended lease')"
  header 'ENDED AT (UTC)' 'ENDED'
  for ((i = 0; i < ${#ended[@]}; i += 2)); do
    row "${ended[i]}" "${ended[i + 1]}" "$(fmt_dur $((now - ended[i + 1]))) ago"
  done
fi

if ((pttl >= 0)); then
  printf 'Redis deletes %s and %s by itself in %s (at the end of the longest lease).\n' \
    "$skey" "$kkey" "$(fmt_dur "$pttl")"
elif ((pttl == -1)); then
  printf '%s has no expiry: the service always sets one (hand-made key?).\n' "$skey"
fi
