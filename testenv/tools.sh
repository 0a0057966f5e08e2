#!/usr/bin/env bash
# Build (once) and cache the binaries of the test control plane: etcd,
# kube-apiserver and kubectl, plus helm (for the chart tests), compiled from the
# Go module proxy through the wrapper modules in testenv/go/{etcd,kubernetes,helm}/
# (go.mod + go.sum pin the exact versions; they are the single source of truth
# for the versions).
#
# Cache: ${RECOVERY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aws-recovery-controller/tools}
#        /<name>-<version>/<binary>       e.g. kube-apiserver-v1.37.2/kube-apiserver
# A binary already in the cache is never rebuilt. Builds go to a temp dir in
# the cache and are renamed into place, so an interrupted build leaves nothing
# half-written; a per-binary flock serialises concurrent callers.
#
# Usage:
#   testenv/tools.sh [all]          build whatever is missing; print NAME=PATH lines
#   testenv/tools.sh path NAME      print the path of NAME (etcd|kube-apiserver|kubectl|helm|promtool),
#                                   building it first if missing
#   testenv/tools.sh env            print `export RECOVERY_ETCD=... RECOVERY_KUBE_APISERVER=...
#                                   RECOVERY_KUBECTL=... RECOVERY_HELM=... RECOVERY_PROMTOOL=...` lines (for eval)
#   testenv/tools.sh versions       print the pinned versions
#   testenv/tools.sh pin-kubernetes vX.Y.Z   (maintainers) rewrite testenv/go/kubernetes/go.mod
#                                   for another k8s.io/kubernetes release and `go mod tidy`
#   testenv/tools.sh pin-etcd vX.Y.Z         (maintainers) same for go.etcd.io/etcd/server/v3
#   testenv/tools.sh pin-helm vX.Y.Z         (maintainers) same for helm.sh/helm/v3
#   testenv/tools.sh pin-promtool v0.X.Y     (maintainers) same for github.com/prometheus/prometheus
#
# Only build logs go to stderr; stdout carries the answer. Needs Go (>= the
# go directive in the wrapper go.mod; with the default GOTOOLCHAIN=auto a newer
# toolchain is fetched from the module proxy) and network access to the Go
# module proxy on a cold cache. Cold builds take minutes (kube-apiserver is the
# big one); builds are run one after another, never in parallel.
#
# kubectl: the kubectl on PATH is used if its minor version is within one of
# the API server's; otherwise (the usual case: kubectl 1.32 vs server 1.37) a
# kubectl of the server's exact version is built. RECOVERY_BUILD_KUBECTL=1
# forces building it.
set -euo pipefail
shopt -s inherit_errexit

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GODIR="$HERE/go"
CACHE="${RECOVERY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aws-recovery-controller/tools}"

log() { printf 'tools.sh: %s\n' "$*" >&2; }
die() { printf 'tools.sh: error: %s\n' "$*" >&2; exit 1; }

need_go() {
  command -v go >/dev/null 2>&1 || die "Go is not installed (needed to build the test control plane; see testenv/README.md)"
}

# Version of a module required by a wrapper go.mod (first require line naming it).
required_version() { # gomod module
  awk -v m="$2" '
    $1 == "require" && $2 == m { print $3; exit }
    $1 == m && $2 ~ /^v/ { print $2; exit }' "$1"
}

k8s_version()  { required_version "$GODIR/kubernetes/go.mod" k8s.io/kubernetes; }
etcd_version() { required_version "$GODIR/etcd/go.mod" go.etcd.io/etcd/server/v3; }
helm_version() { required_version "$GODIR/helm/go.mod" helm.sh/helm/v3; }
promtool_version() { required_version "$GODIR/promtool/go.mod" github.com/prometheus/prometheus; }

# build_cached NAME VERSION BINARY BUILD_FN: ensure $CACHE/NAME-VERSION/BINARY exists,
# print its path.
build_cached() {
  local name=$1 version=$2 bin=$3 fn=$4
  local final="$CACHE/$name-$version"
  if [[ -x "$final/$bin" ]]; then
    printf '%s\n' "$final/$bin"
    return 0
  fi
  [[ "${RECOVERY_TOOLS_NO_BUILD:-0}" != 1 ]] ||
    die "$name $version is not in the cache ($final/$bin) and RECOVERY_TOOLS_NO_BUILD=1; build it with testenv/tools.sh"
  mkdir -p "$CACHE"
  # One builder per binary at a time; others wait and then find it cached.
  exec {lockfd}>"$CACHE/.lock-$name-$version"
  flock "$lockfd"
  if [[ ! -x "$final/$bin" ]]; then
    need_go
    local tmp start
    rm -rf "$CACHE/.tmp-$name-$version".*   # leftovers of a SIGKILLed build (we hold the lock)
    tmp="$(mktemp -d "$CACHE/.tmp-$name-$version.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    start=$(date +%s)
    log "building $name $version (cold build; this takes a while) ..."
    "$fn" "$version" "$tmp/$bin" >&2
    [[ -x "$tmp/$bin" ]] || die "build of $name $version produced no binary"
    chmod 755 "$tmp"
    rm -rf "$final"   # only a leftover without the binary can be here
    mv -T "$tmp" "$final"
    trap - EXIT
    log "built $name $version in $(( $(date +%s) - start ))s: $final/$bin ($(du -h "$final/$bin" | cut -f1))"
  fi
  flock -u "$lockfd"
  exec {lockfd}>&-
  printf '%s\n' "$final/$bin"
}

k8s_ldflags() { # version
  local v=$1 major minor info date
  major=${v#v}; major=${major%%.*}
  minor=${v#v"$major".}; minor=${minor%%.*}
  # Build date = the release's publication time on the module proxy (reproducible).
  info="$(cd "$GODIR/kubernetes" && go mod download -json "k8s.io/kubernetes@$v" | awk -F'"' '$2=="Info"{print $4}')"
  date="$(awk -F'"' '{for (i=1;i<=NF;i++) if ($i=="Time") {print $(i+2); exit}}' "$info" 2>/dev/null || true)"
  date="${date%%.*}"; [[ -z "$date" || "$date" == *Z ]] || date="${date}Z"
  local flags="-s -w" pkg kv
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for kv in "gitVersion=$v" "gitMajor=$major" "gitMinor=$minor" "gitTreeState=clean" ${date:+"buildDate=$date"}; do
      flags+=" -X '$pkg.$kv'"
    done
  done
  printf '%s' "$flags"
}

build_k8s_cmd() { # cmd version out
  local cmd=$1 v=$2 out=$3
  (cd "$GODIR/kubernetes" &&
    CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "$(k8s_ldflags "$v")" \
      -o "$out" "k8s.io/kubernetes/cmd/$cmd")
}
build_kube_apiserver() { build_k8s_cmd kube-apiserver "$@"; }
build_kubectl()        { build_k8s_cmd kubectl "$@"; }

build_etcd() { # version out
  local v=$1 out=$2
  # etcd's own build sets this to the git sha; the version string itself is a
  # constant in go.etcd.io/etcd/api/v3/version.
  (cd "$GODIR/etcd" &&
    CGO_ENABLED=0 go build -mod=readonly -trimpath \
      -ldflags "-s -w -X 'go.etcd.io/etcd/api/v3/version.GitSHA=module-$v'" \
      -o "$out" go.etcd.io/etcd/server/v3)
}

build_helm() { # version out
  local v=$1 out=$2 cg major minor pkg flags
  # As helm's Makefile does: the version string, a clean tree, and the Kubernetes
  # version helm assumes offline (`helm template`'s .Capabilities.KubeVersion, the
  # lint deprecation checks) derived from the k8s.io/client-go it is built with
  # (v0.37.0 -> 1.37). The proxy does not serve the commit sha, so gitCommit stays empty.
  cg="$(required_version "$GODIR/helm/go.mod" k8s.io/client-go)"
  [[ -n "$cg" ]] || die "testenv/go/helm/go.mod requires no k8s.io/client-go"
  major=${cg#v}; major=$(( ${major%%.*} + 1 ))
  minor=${cg#v*.}; minor=${minor%%.*}
  flags="-s -w -X 'helm.sh/helm/v3/internal/version.version=$v'"
  flags+=" -X 'helm.sh/helm/v3/internal/version.gitTreeState=clean'"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    flags+=" -X '$pkg.k8sVersionMajor=$major' -X '$pkg.k8sVersionMinor=$minor'"
  done
  (cd "$GODIR/helm" &&
    CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "$flags" -o "$out" helm.sh/helm/v3/cmd/helm)
}

build_promtool() { # version out
  local v=$1 out=$2
  # Prometheus's Makefile stamps its common/version package; the module version
  # (v0.316.0 for Prometheus 3.16.0) is what the proxy serves, so it is used as is.
  (cd "$GODIR/promtool" &&
    CGO_ENABLED=0 go build -mod=readonly -trimpath \
      -ldflags "-s -w -X 'github.com/prometheus/common/version.Version=$v'" \
      -o "$out" github.com/prometheus/prometheus/cmd/promtool)
}

path_etcd()           { build_cached etcd "$(etcd_version)" etcd build_etcd; }
path_kube_apiserver() { build_cached kube-apiserver "$(k8s_version)" kube-apiserver build_kube_apiserver; }
path_helm()           { build_cached helm "$(helm_version)" helm build_helm; }
path_promtool()       { build_cached promtool "$(promtool_version)" promtool build_promtool; }

# Minor version of a kubectl binary's client version, or empty.
kubectl_minor() {
  "$1" version --client -o json 2>/dev/null |
    python3 -c 'import json,sys; v=json.load(sys.stdin)["clientVersion"]; print(int("".join(c for c in v["minor"] if c.isdigit())))' 2>/dev/null || true
}

path_kubectl() {
  local v minor sys sysminor
  v="$(k8s_version)"; minor=${v#v*.}; minor=${minor%%.*}
  if [[ "${RECOVERY_BUILD_KUBECTL:-0}" != 1 ]] && sys="$(command -v kubectl 2>/dev/null)"; then
    sysminor="$(kubectl_minor "$sys")"
    if [[ -n "$sysminor" ]] && (( sysminor - minor <= 1 && minor - sysminor <= 1 )); then
      printf '%s\n' "$sys"
      return 0
    fi
  fi
  build_cached kubectl "$v" kubectl build_kubectl
}

path_of() {
  case "$1" in
    etcd) path_etcd ;;
    kube-apiserver|apiserver) path_kube_apiserver ;;
    kubectl) path_kubectl ;;
    helm) path_helm ;;
    promtool) path_promtool ;;
    *) die "unknown tool '$1' (etcd|kube-apiserver|kubectl|helm|promtool)" ;;
  esac
}

pin_kubernetes() { # vX.Y.Z
  local v=${1:?version} gomod staging dir="$GODIR/kubernetes"
  need_go
  gomod="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$v" | awk -F'"' '$2=="GoMod"{print $4}')"
  [[ -f "$gomod" ]] || die "cannot download k8s.io/kubernetes@$v"
  # Staging modules are the k8s.io/* modules it requires at v0.0.0 (they are
  # replaced by ./staging/src/... in its own go.mod); the published copies are
  # tagged v0.<minor>.<patch>.
  staging="v0.${v#v1.}"
  {
    printf '// Wrapper module: builds kube-apiserver and kubectl %s from the Go module proxy.\n' "$v"
    printf '// Generated by `testenv/tools.sh pin-kubernetes %s`; do not edit by hand.\n' "$v"
    printf 'module aws-recovery-controller/testenv/go/kubernetes\n\n'
    printf 'go %s\n\n' "$(awk '$1=="go"{print $2; exit}' "$gomod")"
    if grep -q '^godebug ' "$gomod"; then grep '^godebug ' "$gomod"; echo; fi
    printf 'require k8s.io/kubernetes %s\n\n' "$v"
    printf 'replace (\n'
    awk '/^require[ \t]*\(/{r=1; next} r && /^\)/{r=0} r && $1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$gomod" |
      sort -u | while read -r m; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
    printf ')\n'
  } >"$dir/go.mod"
  rm -f "$dir/go.sum"
  (cd "$dir" && go mod tidy)
  log "pinned k8s.io/kubernetes $v ($(grep -c '=>' "$dir/go.mod") staging replaces)"
}




# pin_wrapper NAME MODULE GO WHAT VERSION: rewrite testenv/go/NAME/go.mod to require MODULE at
# VERSION (go directive GO; WHAT says what it builds) and `go mod tidy`.
pin_wrapper() {
  local name=$1 module=$2 go=$3 what=$4 v=$5 dir="$GODIR/$1"
  need_go
  {
    printf '// Wrapper module: builds %s %s (%s).\n' "$name" "$v" "$what"
    printf '// Generated by `testenv/tools.sh pin-%s %s`; do not edit by hand.\n' "$name" "$v"
    printf 'module aws-recovery-controller/testenv/go/%s\n\n' "$name"
    printf 'go %s\n\n' "$go"
    printf 'require %s %s\n' "$module" "$v"
  } >"$dir/go.mod"
  rm -f "$dir/go.sum"
  (cd "$dir" && go mod tidy)
  log "pinned $module $v"
}
pin_etcd()     { pin_wrapper etcd go.etcd.io/etcd/server/v3 1.24 "the go.etcd.io/etcd/server/v3 main package" "${1:?version}"; }
pin_helm()     { pin_wrapper helm helm.sh/helm/v3 1.26.0 "helm.sh/helm/v3/cmd/helm, for the chart tests" "${1:?version}"; }
pin_promtool() { pin_wrapper promtool github.com/prometheus/prometheus 1.26.0 "github.com/prometheus/prometheus/cmd/promtool, for the chart tests" "${1:?version}"; }

cmd="${1:-all}"
case "$cmd" in
  all)
    # One after another: each build alone saturates the machine.
    e="$(path_etcd)"; a="$(path_kube_apiserver)"; k="$(path_kubectl)"; h="$(path_helm)"; p="$(path_promtool)"
    printf 'etcd=%s\nkube-apiserver=%s\nkubectl=%s\nhelm=%s\npromtool=%s\n' "$e" "$a" "$k" "$h" "$p"
    ;;
  path) path_of "${2:?usage: tools.sh path etcd|kube-apiserver|kubectl|helm|promtool}" ;;
  env)
    e="$(path_etcd)"; a="$(path_kube_apiserver)"; k="$(path_kubectl)"; h="$(path_helm)"; p="$(path_promtool)"
    printf 'export RECOVERY_ETCD=%q\nexport RECOVERY_KUBE_APISERVER=%q\nexport RECOVERY_KUBECTL=%q\nexport RECOVERY_HELM=%q\nexport RECOVERY_PROMTOOL=%q\n' \
      "$e" "$a" "$k" "$h" "$p"
    ;;
  versions)
    printf 'kubernetes=%s\netcd=%s\nhelm=%s\npromtool=%s\ncache=%s\n' "$(k8s_version)" "$(etcd_version)" "$(helm_version)" "$(promtool_version)" "$CACHE"
    ;;
  pin-kubernetes) pin_kubernetes "${2:?usage: tools.sh pin-kubernetes vX.Y.Z}" ;;
  pin-etcd) pin_etcd "${2:?usage: tools.sh pin-etcd vX.Y.Z}" ;;
  pin-helm) pin_helm "${2:?usage: tools.sh pin-helm vX.Y.Z}" ;;
  pin-promtool) pin_promtool "${2:?usage: tools.sh pin-promtool v0.X.Y}" ;;
  -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$cmd' (try --help)" ;;
esac
