#!/usr/bin/env bash
# Smoke test of the test control plane (testenv/controlplane.py) with kubectl:
# real server version, namespaces, a CRD whose CEL rule rejects a bad object,
# TokenRequest for a ServiceAccount (and the token authenticates), restart of
# kube-apiserver (SIGUSR1) and etcd (SIGUSR2), clean stop (SIGTERM, no process
# left). Builds the binaries first if they are not cached (see README.md).
# Usage: testenv/smoke.sh [WORKDIR]   (default: a temp dir, removed on success)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${1:-$(mktemp -d -t recovery-cp-smoke.XXXXXX)}"
KEEP="${1:+1}"
READY="$WORK/ready.json"
mkdir -p "$WORK"
passed=0 failed=0
ok()   { passed=$((passed + 1)); echo "ok   - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }
field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[k]
print(d)' "$READY" "$1"; }

python3 "$HERE/controlplane.py" --workdir "$WORK" --ready-file "$READY" >"$WORK/controlplane.out" 2>"$WORK/controlplane.err" &
CP=$!
cleanup() {
  if kill -0 "$CP" 2>/dev/null; then kill -TERM "$CP"; wait "$CP" || true; fi
}
trap cleanup EXIT

# Cold builds can take many minutes; a warm start takes seconds.
for _ in $(seq 1 3600); do
  [[ -f "$READY" ]] && break
  kill -0 "$CP" 2>/dev/null || { cat "$WORK/controlplane.err"; echo "controlplane.py exited early"; exit 1; }
  sleep 0.5
done
[[ -f "$READY" ]] || { echo "control plane not ready"; exit 1; }

KUBECTL="$(field kubectl)"
k() { "$KUBECTL" --kubeconfig "$(field kubeconfig)" "$@"; }
want="$("$HERE/tools.sh" versions | sed -n 's/^kubernetes=//p')"

# 1. real server version
sv="$(k version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')" || true
[[ "$sv" == "$want" && "$(field version)" == "$want" ]] && ok "server version $sv" || fail "server version '$sv' != '$want'"

# 2. namespaces
k get ns default >/dev/null && ok "get ns" || fail "get ns"
k create ns smoke >/dev/null && ok "create ns smoke" || fail "create ns"

# 3. CRD with a CEL rule
k apply -f - >/dev/null <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.example.com}
spec:
  group: smoke.example.com
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: "self.minReplicas <= self.maxReplicas"
              message: "minReplicas must not exceed maxReplicas"
            properties:
              minReplicas: {type: integer}
              maxReplicas: {type: integer}
EOF
k wait --for condition=established --timeout=60s crd/widgets.smoke.example.com >/dev/null && ok "CRD established" || fail "CRD established"
widget() { printf 'apiVersion: smoke.example.com/v1\nkind: Widget\nmetadata: {name: %s, namespace: smoke}\nspec: {minReplicas: %s, maxReplicas: %s}\n' "$@"; }
if out="$(widget bad 5 1 | k create -f - 2>&1)"; then fail "invalid Widget accepted"
elif grep -q "minReplicas must not exceed maxReplicas" <<<"$out"; then ok "CEL rejects invalid Widget: $out"
else fail "invalid Widget rejected without the CEL message: $out"; fi
widget good 1 5 | k create -f - >/dev/null && ok "valid Widget created" || fail "valid Widget"

# 4. ServiceAccount + TokenRequest, and the token authenticates
k -n smoke create sa robot >/dev/null && ok "create sa" || fail "create sa"
tok="$(k -n smoke create token robot --duration=10m)" || true
[[ "$(tr -cd . <<<"$tok")" == ".." ]] && ok "TokenRequest returned a JWT" || fail "TokenRequest: '$tok'"
who="$("$KUBECTL" --server "$(field server)" --certificate-authority "$(field ca_file)" --token "$tok" \
  auth whoami -o jsonpath='{.status.userInfo.username}' 2>&1)" || true
[[ "$who" == "system:serviceaccount:smoke:robot" ]] && ok "token authenticates as $who" || fail "whoami with token: $who"
who="$("$KUBECTL" --server "$(field server)" --certificate-authority "$(field ca_file)" --token "$(field token)" \
  auth whoami -o jsonpath='{.status.userInfo.username}' 2>&1)" || true
[[ "$who" == "recovery-admin-token" ]] && ok "static admin token works" || fail "static token: $who"

# 5. restarts: signal, then wait for restarts.<name> to grow
restart() { # signal name
  local before pid_before
  before="$(field "restarts.$2")"; pid_before="$(field "pids.$2")"
  kill "-$1" "$CP"
  for _ in $(seq 1 240); do
    [[ "$(field "restarts.$2" 2>/dev/null)" -gt "$before" ]] && break
    sleep 0.25
  done
  [[ "$(field "restarts.$2")" -gt "$before" && "$(field "pids.$2")" != "$pid_before" ]] &&
    ok "SIG$1 restarted $2 (pid $pid_before -> $(field "pids.$2"))" || fail "SIG$1 restart of $2"
}
restart USR1 kube-apiserver
k get widget -n smoke good >/dev/null && ok "API works after kube-apiserver restart" || fail "API after kube-apiserver restart"
restart USR2 etcd
k get widget -n smoke good >/dev/null && ok "data survives etcd restart" || fail "data after etcd restart"

# 6. clean stop
pids="$(field pids.etcd) $(field pids.kube-apiserver) $CP"
kill -TERM "$CP"
rc=0; wait "$CP" || rc=$?
[[ "$rc" == 0 ]] && ok "SIGTERM: exit 0" || fail "SIGTERM: exit $rc"
left=""  # zombies (state Z) count as gone: they only wait for their reaper
for p in $pids; do st="$(ps -o stat= -p "$p" 2>/dev/null || true)"; [[ -n "$st" && "$st" != Z* ]] && left+=" $p"; done
[[ -z "$left" ]] && ok "no process left" || fail "processes left:$left"
[[ ! -e "$READY" ]] && ok "ready file removed" || fail "ready file still there"
trap - EXIT

echo "$passed passed, $failed failed"
if [[ "$failed" == 0 && -z "$KEEP" ]]; then rm -rf "$WORK"; else echo "workdir: $WORK"; fi
[[ "$failed" == 0 ]]
