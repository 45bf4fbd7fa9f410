#!/usr/bin/env bash
# Install (apt) and build (Go, from the module proxy) the real components the tests run against.
# Idempotent: binaries go to the git-ignored .tools/bin, one stamp per component+version in
# .tools/stamps, so a second run is instant and a version change rebuilds only that component.
# Versions are pinned in scripts/tool-versions.env. Usage: bash scripts/tools.sh
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/tool-versions.env
source "$ROOT/scripts/tool-versions.env"

TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
STAMPS="$TOOLS/stamps"
SRC="$TOOLS/src"
LOGS="$TOOLS/logs"
mkdir -p "$BIN" "$STAMPS" "$SRC" "$LOGS"

# Never download a Go toolchain behind our back; no cgo (static binaries, as upstream releases).
export GOTOOLCHAIN=local CGO_ENABLED=0
JOBS="${TOOLS_JOBS:-$(nproc)}"
GO_BUILD_FLAGS=(-trimpath -buildvcs=false -p "$JOBS")

FAILED_REQUIRED=()
FAILED_OPTIONAL=()

log() { printf '[tools] %s\n' "$*"; }

go_version() { go env GOVERSION | sed 's/^go//'; }

# Path of the go.mod of MODULE@VERSION in the module cache (downloading it if needed).
module_gomod() {
    module_field GoMod "$1" "$2"
}

# FIELD (Dir, GoMod) of `go mod download -json MODULE@VERSION`; on error say which module
# version is missing (the caller's log) and print nothing.
module_field() {
    local json
    json=$(cd "$SRC" && go mod download -json "$2@$3" 2>&1)
    if grep -q '"Error"' <<<"$json"; then
        echo "cannot download $2@$3:" >&2
        sed -n 's/^[[:space:]]*"Error": "\(.*\)",\{0,1\}$/    \1/p' <<<"$json" >&2
        return 1
    fi
    sed -n "s/^[[:space:]]*\"$1\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p" <<<"$json"
}

# ---------------------------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------------------------
install_packages() {
    local need=()
    command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
    command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
    command -v wrk >/dev/null 2>&1 || need+=(wrk)
    command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)
    if ((${#need[@]} == 0)); then
        log "packages: redis-server, prometheus, postgresql, wrk, shellcheck already installed"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "packages: MISSING ${need[*]} and no apt-get on this machine; install them by hand"
        FAILED_REQUIRED+=("apt:${need[*]}")
        return 0
    fi
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    log "packages: installing ${need[*]}"
    local start=$SECONDS
    if "${sudo[@]}" apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
            --no-install-recommends "${need[@]}"; then
        log "packages: installed in $((SECONDS - start))s"
    else
        log "packages: apt-get install ${need[*]} FAILED"
        FAILED_REQUIRED+=("apt:${need[*]}")
    fi
}

# ---------------------------------------------------------------------------------------------
# Go builds
# ---------------------------------------------------------------------------------------------

# component NAME VERSION required|optional BINARIES(comma-separated) FUNCTION [ARGS...]
# Runs FUNCTION VERSION ARGS... unless the stamp NAME-VERSION exists and all BINARIES are there.
component() {
    local name=$1 version=$2 kind=$3 binaries=$4 fn=$5
    shift 5
    local stamp="$STAMPS/$name-$version" have=1 b
    IFS=, read -ra bins <<<"$binaries"
    for b in "${bins[@]}"; do [[ -x "$BIN/$b" ]] || have=0; done
    if [[ -f "$stamp" && $have == 1 ]]; then
        log "$name $version: up to date"
        return 0
    fi
    local logfile="$LOGS/$name.log" start=$SECONDS
    log "$name $version: building (log: ${logfile#"$ROOT"/})"
    if "$fn" "$version" "$@" >"$logfile" 2>&1; then
        rm -f "$STAMPS/$name-"*
        touch "$stamp"
        log "$name $version: built in $((SECONDS - start))s"
        return 0
    fi
    log "$name $version: FAILED after $((SECONDS - start))s; last lines of ${logfile#"$ROOT"/}:"
    tail -n 15 "$logfile" | sed 's/^/    /'
    local missing line
    missing=$(grep -oE '[^[:space:]]+@v[^[:space:]:]+: (reading [^[:space:]]+: (403|404|410)|unknown revision|invalid version|no matching versions)[^\\]*' "$logfile" | sort -u | head -n 10)
    if [[ -n "$missing" ]]; then
        log "$name $version: missing from the module proxy:"
        while IFS= read -r line; do printf '    %s\n' "$line"; done <<<"$missing"
    fi
    if [[ $kind == required ]]; then
        FAILED_REQUIRED+=("$name $version")
    else
        FAILED_OPTIONAL+=("$name $version")
    fi
    return 0
}

# go build ... -o .tools/bin/NAME PACKAGE, atomically (a half-written binary never looks built).
go_build_to() {
    local out="$BIN/$1"
    shift
    mkdir -p "$(dirname "$out")" &&
        go build "${GO_BUILD_FLAGS[@]}" -o "$out.tmp" "$@" && mv -f "$out.tmp" "$out"
}

# etcd: go.etcd.io/etcd/server/v3 has replace directives, so `go install` refuses it; build it
# from a wrapper module whose main calls etcdmain.Main like etcd's own server/main.go.
build_etcd() {
    local v=$1 out=${2:-etcd} dir="$SRC/etcd-$1"
    rm -rf "$dir" && mkdir -p "$dir" || return 1
    cat >"$dir/go.mod" <<EOF
module storefront.local/tools/etcd

go $(go_version)

require (
	go.etcd.io/etcd/api/v3 $v
	go.etcd.io/etcd/client/pkg/v3 $v
	go.etcd.io/etcd/client/v3 $v
	go.etcd.io/etcd/pkg/v3 $v
	go.etcd.io/etcd/server/v3 $v
)
EOF
    cat >"$dir/main.go" <<'EOF'
// Command etcd is go.etcd.io/etcd/server/v3's main, built outside its replace directives.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
EOF
    (cd "$dir" && go mod tidy && go_build_to "$out" -ldflags "-s -w" .)
}

# Wrapper module for k8s.io/kubernetes: its go.mod replaces every staging module with
# ./staging/src/k8s.io/X, which we turn into k8s.io/X => k8s.io/X $KUBERNETES_STAGING_VERSION.
KUBE_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kubeadm kube-proxy)
prepare_kubernetes() {
    local v=$KUBERNETES_VERSION sv=$KUBERNETES_STAGING_VERSION
    local dir="$SRC/kubernetes-$v" gomod replaces ready cmd
    ready="$dir/.ready-$sv-$(printf '%s\n' "${KUBE_COMMANDS[@]}" | sha256sum | cut -c1-8)"
    [[ -f $ready ]] && return 0
    rm -rf "$dir" && mkdir -p "$dir" || return 1
    gomod=$(module_gomod k8s.io/kubernetes "$v")
    [[ -f "$gomod" ]] || return 1
    replaces=$(sed -n "s#^[[:space:]]*\(k8s.io/[A-Za-z0-9._-]*\) => \./staging/src/.*#\t\1 => \1 $sv#p" "$gomod")
    [[ -n "$replaces" ]] || {
        echo "no staging replace directives found in $gomod"
        return 1
    }
    cat >"$dir/go.mod" <<EOF
module storefront.local/tools/kubernetes

go $(go_version)

require k8s.io/kubernetes $v

replace (
$replaces
)
EOF
    {
        printf '//go:build tools\n\n'
        printf '// Package tools pins the k8s.io/kubernetes commands built by scripts/tools.sh.\n'
        printf 'package tools\n\nimport (\n'
        for cmd in "${KUBE_COMMANDS[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$cmd"; done
        printf ')\n'
    } >"$dir/tools.go"
    (cd "$dir" && go mod tidy) && touch "$ready"
}

# build_kube VERSION CMD [OUT]: one of the k8s.io/kubernetes/cmd/* binaries, version-stamped.
build_kube() {
    local v=$1 cmd=$2 out=${3:-$2} ldflags="-s -w" pkg minor released
    prepare_kubernetes || return 1
    minor=$(cut -d. -f2 <<<"$v")
    # The release's own date, not today's: the same version builds the same binary, so the
    # images made from it keep their hash and are not rebuilt.
    released=$(cd "$SRC/kubernetes-$v" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' \
        "k8s.io/kubernetes")
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$released"
    done
    (cd "$SRC/kubernetes-$v" && go_build_to "$out" -ldflags "$ldflags" "k8s.io/kubernetes/cmd/$cmd")
}

# helm: plain `go install`, with the ldflags of helm's Makefile (version, k8s version for lint
# and .Capabilities, derived from the k8s.io/client-go it requires).
build_helm() {
    local v=$1 gomod cgv major minor
    gomod=$(module_gomod helm.sh/helm/v3 "$v")
    [[ -f "$gomod" ]] || return 1
    cgv=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")
    major=$(($(cut -d. -f1 <<<"${cgv#v}") + 1))
    minor=$(cut -d. -f2 <<<"$cgv")
    local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$v"
    ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major"
    ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
    ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major"
    ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
    (cd "$SRC" && GOBIN="$BIN" go install "${GO_BUILD_FLAGS[@]}" -ldflags "$ldflags" \
        "helm.sh/helm/v3/cmd/helm@$v")
}

# build_tool_module NAME MODULE VERSION PACKAGE OUT LDFLAGS: a command whose module has replace
# directives (which `go install` refuses), from a wrapper module that copies the non-local ones
# and tracks the command with `go get -tool`.
build_tool_module() {
    local name=$1 module=$2 v=$3 package=$4 out=$5 ldflags=$6 dir gomod replaces
    dir="$SRC/$name-$v"
    rm -rf "$dir" && mkdir -p "$dir" || return 1
    gomod=$(module_gomod "$module" "$v")
    [[ -f "$gomod" ]] || return 1
    replaces=$(awk '
        /^replace[[:space:]]*\(/ { block = 1; next }
        block && /^\)/ { block = 0; next }
        block { print; next }
        /^replace[[:space:]]/ { sub(/^replace[[:space:]]+/, ""); print }
    ' "$gomod" | grep -v '=>[[:space:]]*\.' | sed 's/^[[:space:]]*/\t/')
    {
        printf 'module storefront.local/tools/%s\n\ngo %s\n' "$name" "$(go_version)"
        [[ -n "$replaces" ]] && printf '\nreplace (\n%s\n)\n' "$replaces"
    } >"$dir/go.mod"
    (cd "$dir" && go get -tool "$package@$v" && go_build_to "$out" -ldflags "$ldflags" "$package")
}

# jaeger v2 (cmd/jaeger).
build_jaeger() {
    build_tool_module jaeger github.com/jaegertracing/jaeger "$1" \
        github.com/jaegertracing/jaeger/cmd/jaeger jaeger \
        "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$1"
}

# kwok (optional): fake nodes for a control plane without kubelets. kwok needs Stage configs:
# assemble its "fast" node/pod stages (from the module) into .tools/share/kwok/stages.yaml.
build_kwok() {
    local v=$1 moddir share="$TOOLS/share/kwok" f
    moddir=$(module_field Dir sigs.k8s.io/kwok "$v")
    [[ -d "$moddir" ]] || return 1
    mkdir -p "$share" || return 1
    for f in "$moddir"/kustomize/stage/node/fast/node-*.yaml \
        "$moddir"/kustomize/stage/node/heartbeat-with-lease/node-*.yaml \
        "$moddir"/kustomize/stage/pod/fast/pod-*.yaml; do
        [[ -f "$f" ]] || continue
        printf -- '---\n'
        cat "$f"
    done >"$share/stages.yaml"
    (cd "$SRC" && GOBIN="$BIN" go install "${GO_BUILD_FLAGS[@]}" -ldflags "-s -w" \
        "sigs.k8s.io/kwok/cmd/kwok@$v")
}

# ---------------------------------------------------------------------------------------------
# The kind cluster's own binaries (kind itself on PATH; the node's in .tools/bin/node)
# ---------------------------------------------------------------------------------------------
build_kind() {
    (cd "$SRC" && GOBIN="$BIN" go install "${GO_BUILD_FLAGS[@]}" -ldflags "-s -w" \
        "sigs.k8s.io/kind@$1")
}

build_crictl() {
    (cd "$SRC" && GOBIN="$BIN/node" go install "${GO_BUILD_FLAGS[@]}" \
        -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${1#v}" \
        "sigs.k8s.io/cri-tools/cmd/crictl@$1")
}

# CoreDNS with only a cluster's plugins (kind/coredns/main.go), in a wrapper module.
build_coredns() {
    local v=$1 dir="$SRC/coredns-$1"
    rm -rf "$dir" && mkdir -p "$dir" || return 1
    cp "$ROOT/kind/coredns/main.go" "$dir/"
    printf 'module storefront.local/tools/coredns\n\ngo %s\n\nrequire github.com/coredns/coredns %s\n' \
        "$(go_version)" "$v" >"$dir/go.mod"
    (cd "$dir" && go mod tidy && go_build_to node/coredns \
        -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$v" .)
}

build_metrics_server() {
    build_tool_module metrics-server sigs.k8s.io/metrics-server "$1" \
        sigs.k8s.io/metrics-server/cmd/metrics-server node/metrics-server \
        "-s -w -X sigs.k8s.io/metrics-server/pkg/version.gitVersion=$1"
}

# Prometheus for the cluster, with only the service discovery a cluster needs (Kubernetes; the
# file, HTTP and static ones are always in): upstream's build tags for a smaller binary.
build_prometheus() {
    local ldflags="-s -w"
    ldflags+=" -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION"
    ldflags+=" -X github.com/prometheus/common/version.Branch=release"
    (cd "$SRC" && GOBIN="$BIN/images" go install "${GO_BUILD_FLAGS[@]}" \
        -tags remove_all_sd,enable_kubernetes_sd -ldflags "$ldflags" \
        "github.com/prometheus/prometheus/cmd/prometheus@$1")
}

# The static pause binary, from the C source in the k8s.io/kubernetes module (as upstream).
build_pause() {
    local v=$1 source
    source="$(module_field Dir k8s.io/kubernetes "$KUBERNETES_VERSION")/build/pause/linux/pause.c"
    [[ -f $source ]] || return 1
    mkdir -p "$BIN/node" &&
        gcc -Os -Wall -Werror -static -DVERSION="v$v" -o "$BIN/node/pause.tmp" "$source" &&
        strip "$BIN/node/pause.tmp" && mv -f "$BIN/node/pause.tmp" "$BIN/node/pause"
}

# Docker, and the images that need no Go binary (the bases, then the Storefront images, which
# warms Docker's cache for the tests' builds), in the background while Go compiles: the one
# waits on the network, the other on the CPU.
start_docker_images() {
    DOCKER_LOG="$LOGS/docker-images.log"
    log "docker: engine, base and Storefront images in the background (log: ${DOCKER_LOG#"$ROOT"/})"
    (
        set -e
        bash "$ROOT/scripts/docker/engine.sh"
        bash "$ROOT/scripts/images.sh" base app operator
    ) >"$DOCKER_LOG" 2>&1 &
    DOCKER_PID=$!
}

# Once the Go binaries are there: the kind node image and the backing services' images.
finish_docker_images() {
    local start=$SECONDS
    if ! wait "$DOCKER_PID"; then
        log "docker: FAILED; last lines of ${DOCKER_LOG#"$ROOT"/}:"
        tail -n 15 "$DOCKER_LOG" | sed 's/^/    /'
        log "the kind cluster, its images and the kind tests need a Docker engine"
        FAILED_REQUIRED+=("docker")
        return 0
    fi
    grep -E '^\[(docker|images)\]' "$DOCKER_LOG" | sed 's/^/    /'
    if bash "$ROOT/scripts/images.sh" services; then
        bash "$ROOT/scripts/kind-node.sh" || FAILED_REQUIRED+=("kind node image")
    else
        FAILED_REQUIRED+=("service images" "kind node image")
    fi
    log "images ready $((SECONDS - start))s after the Go builds"
}

# ---------------------------------------------------------------------------------------------
main() {
    local start=$SECONDS
    install_packages
    if ! command -v go >/dev/null 2>&1; then
        log "go: not found on PATH; cannot build etcd, kubernetes, helm, jaeger, kwok, kind"
        exit 1
    fi
    start_docker_images
    # Most needed first: the control plane, then helm and jaeger, then the rest.
    component etcd "$ETCD_VERSION" required etcd build_etcd
    component kube-apiserver "$KUBERNETES_VERSION" required kube-apiserver build_kube kube-apiserver
    component helm "$HELM_VERSION" required helm build_helm
    component jaeger "$JAEGER_VERSION" required jaeger build_jaeger
    component kubectl "$KUBERNETES_VERSION" required kubectl build_kube kubectl
    component kube-controller-manager "$KUBERNETES_VERSION" required kube-controller-manager \
        build_kube kube-controller-manager
    component kube-scheduler "$KUBERNETES_VERSION" required kube-scheduler build_kube kube-scheduler
    component kwok "$KWOK_VERSION" optional kwok build_kwok
    # The kind cluster: kind, the node's binaries, then (with Docker) every image it runs.
    component kind "$KIND_VERSION" required kind build_kind
    component kubelet "$KUBERNETES_VERSION" required node/kubelet build_kube kubelet node/kubelet
    component kubeadm "$KUBERNETES_VERSION" required node/kubeadm build_kube kubeadm node/kubeadm
    component kube-proxy "$KUBERNETES_VERSION" required node/kube-proxy \
        build_kube kube-proxy node/kube-proxy
    component crictl "$CRICTL_VERSION" required node/crictl build_crictl
    component node-etcd "$NODE_ETCD_VERSION" required node/etcd build_etcd node/etcd
    component coredns "$NODE_COREDNS_VERSION" required node/coredns build_coredns
    component pause "$NODE_PAUSE_VERSION" required node/pause build_pause
    component metrics-server "$METRICS_SERVER_VERSION" required node/metrics-server \
        build_metrics_server
    component prometheus "$PROMETHEUS_MODULE_VERSION" required images/prometheus build_prometheus
    finish_docker_images

    log "done in $((SECONDS - start))s; binaries in ${BIN#"$ROOT"/}"
    if ((${#FAILED_OPTIONAL[@]})); then
        log "optional components not available: ${FAILED_OPTIONAL[*]}"
    fi
    if ((${#FAILED_REQUIRED[@]})); then
        log "REQUIRED components not available: ${FAILED_REQUIRED[*]}"
        exit 1
    fi
}

main "$@"
