#!/usr/bin/env bash
# Create (once) and cache the Python venv of the test environment (fake AWS and
# alert receivers), then print the path of its python on stdout.
#
# Cache: ${RECOVERY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aws-recovery-controller/tools}
#        /venv-<first 12 hex of sha256(testenv/requirements.txt)>/
# A venv already there (and able to import its packages) is reused as is; any edit of
# requirements.txt names a new one. The venv is built in a temp dir in the cache and
# renamed into place, so an interrupted build leaves nothing half-made; a flock
# serialises concurrent callers. Old venv-* dirs are left alone (delete by hand).
#
# Usage:
#   PY="$(testenv/venv.sh)"      # then: "$PY" testenv/aws/server.py --ready-file ...
# Env: RECOVERY_PYTHON  interpreter to build the venv from (default python3; needs >= 3.10)
#
# Only logs go to stderr; stdout carries the answer. Needs PyPI on a cold cache.
set -euo pipefail
shopt -s inherit_errexit

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQ="$HERE/requirements.txt"
CACHE="${RECOVERY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aws-recovery-controller/tools}"
PYTHON="${RECOVERY_PYTHON:-python3}"

log() { printf 'venv.sh: %s\n' "$*" >&2; }
die() { printf 'venv.sh: error: %s\n' "$*" >&2; exit 1; }

[[ -f "$REQ" ]] || die "missing $REQ"
hash="$(sha256sum "$REQ" | cut -c1-12)"
final="$CACHE/venv-$hash"

# Complete (marker written last, before the rename) and its interpreter still runs
# (the venv links to the python it was made from).
usable() { # dir
  [[ -f "$1/.complete" && -x "$1/bin/python" ]] && "$1/bin/python" -c '' >/dev/null 2>&1
}

if usable "$final"; then
  printf '%s\n' "$final/bin/python"
  exit 0
fi

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set RECOVERY_PYTHON)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || die "$PYTHON is older than 3.10 (moto needs >= 3.10); set RECOVERY_PYTHON"

mkdir -p "$CACHE"
exec {lockfd}>"$CACHE/.lock-venv-$hash"
flock "$lockfd"
if ! usable "$final"; then
  start=$(date +%s)
  tmp="$(mktemp -d "$CACHE/.tmp-venv-$hash.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  log "creating $final from $REQ (cold; about a minute) ..."
  "$PYTHON" -m venv "$tmp/venv" >&2
  "$tmp/venv/bin/python" -m pip install --disable-pip-version-check --no-input -q \
    -r "$REQ" >&2 || die "pip install failed"
  # The venv was made at a temp path: point scripts and pyvenv.cfg at the final one.
  grep -rlIF "$tmp/venv" "$tmp/venv/bin" "$tmp/venv/pyvenv.cfg" 2>/dev/null \
    | xargs -r sed -i "s#$tmp/venv#$final#g" || true
  "$tmp/venv/bin/python" -c 'import moto.server, aiosmtpd, boto3' >&2 \
    || die "the new venv cannot import moto.server/aiosmtpd/boto3"
  : >"$tmp/venv/.complete"
  [[ -e "$final" ]] && rm -rf "$final" # a broken leftover (not usable above)
  mv -T "$tmp/venv" "$final"
  rm -rf "$tmp"
  trap - EXIT
  log "venv ready in $(( $(date +%s) - start ))s: $final"
fi
printf '%s\n' "$final/bin/python"
