#!/usr/bin/env bash
# free-user.sh: frees a user stuck at the limit by deleting the user's two
# keys, after showing them and asking. See docs/OPERATIONS.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=operator-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/operator-lib.sh"

usage() {
  cat <<EOF
Usage: $PROG [options] [-y] USER_ID

Ends every stream of USER_ID: deletes <prefix>:{USER_ID}:streams and
<prefix>:{USER_ID}:keys (DEL, nothing else). It first shows the user's
streams (as sessions.sh, without keys) and asks; the answer is read from
stdin, and anything but y or yes keeps the keys.

The user's players get 410 lease_expired on their next heartbeat and must
acquire again. Often waiting is enough: a lease nobody renews ends after
LEASE_TTL by itself.

  -y, --yes      do not ask

$COMMON_USAGE

Examples:
  $PROG alice
  REDIS_URL=redis://10.0.0.5:6379/0 $PROG -y alice
EOF
}

yes=0
own_flag() {
  case $1 in
  -y | --yes) yes=1 ;;
  *) return 1 ;;
  esac
}
parse_user_args own_flag "$@"
connect

skey=$(streams_key "$user")
kkey=$(keys_key "$user")
exists=$(rcli EXISTS "$skey" "$kkey")
if ((exists == 0)); then
  echo "nothing to free: $skey and $kkey do not exist (no stream, or the leases ended and Redis deleted them)"
  exit 0
fi

# What is about to go, without stream keys, through sessions.sh itself.
sessions=(bash "$(dirname "${BASH_SOURCE[0]}")/sessions.sh" -k "$PREFIX" -t "$opt_timeout")
if [[ -n $opt_host || -n $opt_port ]]; then
  sessions+=(-h "${opt_host:-127.0.0.1}" -p "${opt_port:-6379}")
elif [[ -n $opt_url ]]; then
  sessions+=(-u "$opt_url")
fi
"${sessions[@]}" -- "$user"

if ((!yes)); then
  printf 'Delete %s and %s on %s? [y/N] ' "$skey" "$kkey" "$TARGET" >&2
  answer=''
  read -r answer || true # end of input is a no
  [[ -t 0 ]] || echo >&2   # the answer was not echoed: end the prompt's line
  case $answer in
  y | Y | yes | YES | Yes) ;;
  *) die "not confirmed: nothing deleted" ;;
  esac
fi

deleted=$(rcli DEL "$skey" "$kkey")
echo "freed $user: DEL $skey $kkey removed $deleted key(s). Their players get 410 lease_expired on the next heartbeat and must acquire again."
