# shellcheck shell=bash disable=SC2034
# What scripts/kind-up.sh and scripts/kind-down.sh share: names, paths, logging, kubectl.
# (SC2034: the variables are for the scripts that source this.)

: "${ROOT:?ROOT must be set before sourcing scripts/lib/kind.sh}"
export PATH="$ROOT/.tools/bin:$PATH"
CLUSTER=${CLUSTER:-storefront-e2e}
TAG=${TAG:-dev}
KIND_NETWORK=storefront-kind
STATE="$ROOT/.storefront/kind/$CLUSTER"
export KUBECONFIG="$STATE/kubeconfig"
# shellcheck source=scripts/tool-versions.env
source "$ROOT/scripts/tool-versions.env"
APP_IMAGE="$APP_REPOSITORY:$TAG"
OPERATOR_IMAGE="$OPERATOR_REPOSITORY:$TAG"
PUBLIC_PROMETHEUS_IMAGE=prom/prometheus:v$PROMETHEUS_VERSION
PUBLIC_JAEGER_IMAGE=jaegertracing/jaeger:2.13.0

log() { printf '[kind] %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}
kc() { kubectl --kubeconfig "$KUBECONFIG" "$@"; }

require() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool not found: run \`make tools\`"
    done
}
