#!/usr/bin/env bash
# A kind cluster for Storefront, sealed off from the network: created (or reused), with
# metrics-server, Prometheus and Jaeger running and the Storefront images loaded.
#
# Images (STOREFRONT_KIND_IMAGES): `local` uses the images `make tools` made here from Debian
# packages and Go modules (the node image, PostgreSQL, Redis, Prometheus, Jaeger,
# metrics-server); `public` pulls the upstream ones on this host (kind's default node image,
# prom/prometheus, jaegertracing/jaeger, registry.k8s.io/metrics-server) and loads them; `auto`
# (the default) is `public` when Docker Hub answers, else `local`. Either way every image is
# loaded into the node from this host, so the cluster itself never pulls, and nothing in it can
# reach past this machine: its Docker network's traffic to any other address is rejected
# (DOCKER-USER), the node rejects traffic to the Service range that kube-proxy has not
# translated, and CoreDNS answers only for the cluster.
#
# Settings (environment):
#   CLUSTER=storefront-e2e   cluster name
#   TAG=dev                  tag of the Storefront images to load (scripts/images.sh --tag)
#   STOREFRONT_KIND_IMAGES=auto
# Prints nothing but logs; the kubeconfig is .storefront/kind/$CLUSTER/kubeconfig. Undo with
# scripts/kind-down.sh.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/kind.sh
source "$ROOT/scripts/lib/kind.sh"

NETWORK_SUBNET=${STOREFRONT_KIND_SUBNET:-172.30.77.0/24}

# The images of each mode: node, then the ones loaded into it.
resolve_images() {
    case $1 in
    local)
        NODE_IMAGE=$KIND_NODE_IMAGE
        SERVICE_IMAGES=("$POSTGRES_IMAGE" "$REDIS_IMAGE" "$PROMETHEUS_IMAGE" "$JAEGER_IMAGE")
        ADDON_METRICS_SERVER="registry.k8s.io/metrics-server/metrics-server:$METRICS_SERVER_VERSION"
        ADDON_PROMETHEUS=$PROMETHEUS_IMAGE
        ADDON_JAEGER=$JAEGER_IMAGE
        ;;
    public)
        NODE_IMAGE="" # kind's default
        SERVICE_IMAGES=(postgres:16-alpine redis:7-alpine "$PUBLIC_PROMETHEUS_IMAGE"
            "$PUBLIC_JAEGER_IMAGE"
            "registry.k8s.io/metrics-server/metrics-server:$METRICS_SERVER_VERSION")
        ADDON_METRICS_SERVER="registry.k8s.io/metrics-server/metrics-server:$METRICS_SERVER_VERSION"
        ADDON_PROMETHEUS=$PUBLIC_PROMETHEUS_IMAGE
        ADDON_JAEGER=$PUBLIC_JAEGER_IMAGE
        ;;
    *) die "STOREFRONT_KIND_IMAGES must be auto, local or public, not $1" ;;
    esac
}

ensure_images() {
    local image
    for image in ${NODE_IMAGE:+"$NODE_IMAGE"} "${SERVICE_IMAGES[@]}" "$APP_IMAGE" "$OPERATOR_IMAGE"; do
        if ! docker image inspect "$image" >/dev/null 2>&1; then
            [[ $MODE == public ]] && docker pull --quiet "$image" >/dev/null && continue
            die "image $image is missing: run \`make tools\` and \`make images\`"
        fi
    done
}

# Our own Docker network for the node, with a known subnet the host can fence in.
ensure_network() {
    if ! docker network inspect "$KIND_NETWORK" >/dev/null 2>&1; then
        log "creating Docker network $KIND_NETWORK ($NETWORK_SUBNET)"
        docker network create --driver bridge --subnet "$NETWORK_SUBNET" \
            --opt com.docker.network.bridge.enable_ip_masquerade=false \
            --label dev.storefront.kind=true "$KIND_NETWORK" >/dev/null
    fi
    local subnet
    subnet=$(docker network inspect --format '{{range .IPAM.Config}}{{.Subnet}} {{end}}' "$KIND_NETWORK")
    subnet=${subnet%% *}
    # Nothing from the network to any address outside it, whatever the node or a pod does.
    if ! iptables -w -C DOCKER-USER -s "$subnet" ! -d "$subnet" -j REJECT 2>/dev/null; then
        iptables -w -I DOCKER-USER -s "$subnet" ! -d "$subnet" -j REJECT ||
            die "cannot add the DOCKER-USER rule that keeps the cluster off the network (root?)"
    fi
    log "network $KIND_NETWORK ($subnet): traffic to outside it is rejected on this host"
}

create_cluster() {
    if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
        log "kind cluster $CLUSTER exists: reusing it"
        kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG" >/dev/null 2>&1
        return 0
    fi
    local config="$STATE/kind-config.yaml" start=$SECONDS
    cat >"$config" <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  apiServerAddress: 127.0.0.1
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/16
nodes:
  - role: control-plane
YAML
    log "creating kind cluster $CLUSTER${NODE_IMAGE:+ from $NODE_IMAGE}"
    KIND_EXPERIMENTAL_DOCKER_NETWORK=$KIND_NETWORK kind create cluster --name "$CLUSTER" \
        --config "$config" --kubeconfig "$KUBECONFIG" --wait 180s \
        ${NODE_IMAGE:+--image "$NODE_IMAGE"}
    log "cluster created in $((SECONDS - start)) s"
}

# CoreDNS forwards names outside the cluster to the node's resolver, which would ask this
# host's: remove the forward, so pods resolve cluster names only.
seal_dns() {
    local corefile
    corefile=$(kc -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}')
    [[ $corefile == *forward* ]] || return 0
    corefile=$(awk '/^[[:space:]]*forward / { skip = 1 } skip { if (/}/) skip = 0; next } { print }' \
        <<<"$corefile")
    kc -n kube-system create configmap coredns --from-literal=Corefile="$corefile" \
        --dry-run=client -o yaml | kc apply -f - >/dev/null
    kc -n kube-system rollout restart deployment/coredns >/dev/null
    kc -n kube-system rollout status deployment/coredns --timeout=120s >/dev/null
    log "CoreDNS answers for the cluster only"
}

load_images() {
    local start=$SECONDS
    kind load docker-image --name "$CLUSTER" "${SERVICE_IMAGES[@]}" "$APP_IMAGE" \
        "$OPERATOR_IMAGE" >/dev/null
    log "images loaded in $((SECONDS - start)) s"
}

render_addon() {
    sed -e "s#\${METRICS_SERVER_IMAGE}#$ADDON_METRICS_SERVER#g" \
        -e "s#\${PROMETHEUS_IMAGE}#$ADDON_PROMETHEUS#g" \
        -e "s#\${JAEGER_IMAGE}#$ADDON_JAEGER#g" "$ROOT/kind/addons/$1.yaml"
}

install_addons() {
    render_addon metrics-server | kc apply -f - >/dev/null
    render_addon prometheus | kc apply -f - >/dev/null
    kc -n monitoring create configmap jaeger --from-file=config.yaml="$ROOT/images/jaeger/config.yaml" \
        --dry-run=client -o yaml | kc apply -f - >/dev/null
    render_addon jaeger | kc apply -f - >/dev/null
    kc -n kube-system rollout status deployment/metrics-server --timeout=180s >/dev/null
    kc -n monitoring rollout status deployment/prometheus --timeout=180s >/dev/null
    kc -n monitoring rollout status deployment/jaeger --timeout=180s >/dev/null
    log "metrics-server, Prometheus and Jaeger running"
}

main() {
    local start=$SECONDS
    require docker kind kubectl
    mkdir -p "$STATE"
    MODE=${STOREFRONT_KIND_IMAGES:-auto}
    if [[ $MODE == auto ]]; then
        MODE=local
        docker pull --quiet "$PUBLIC_PROMETHEUS_IMAGE" >/dev/null 2>&1 && MODE=public
    fi
    resolve_images "$MODE"
    log "images: $MODE"
    echo "$MODE" >"$STATE/images"
    ensure_images
    ensure_network
    create_cluster
    seal_dns
    load_images
    install_addons
    log "cluster $CLUSTER ready in $((SECONDS - start)) s (KUBECONFIG=${KUBECONFIG#"$ROOT"/})"
}

main "$@"
