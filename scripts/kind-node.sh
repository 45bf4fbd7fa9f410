#!/usr/bin/env bash
# Build the kind node image (KIND_NODE_IMAGE in scripts/tool-versions.env) with no registry: what
# `kind build node-image` does, which always pulls, done from what `make tools` builds.
#
#   1. The images kubeadm asks for, under the names and tags `kubeadm config images list` prints:
#      kube-apiserver, kube-controller-manager, kube-scheduler (scratch + the binary),
#      kube-proxy (Debian + iptables), etcd, CoreDNS (kind/coredns), pause (static C), plus
#      metrics-server; each from a binary in .tools/bin built at the pinned version.
#   2. The node's base: kind/node/Dockerfile with kind's own files from its Go module.
#   3. The node: the base with kubeadm, kubelet and kubectl, kind's manifests, a static bridge CNI,
#      and every image of step 1 and the service images (scripts/images.sh services, built
#      first) imported into containerd's k8s.io namespace, committed.
# Each image is rebuilt only when what it is built from changes. Usage: bash scripts/kind-node.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/tool-versions.env
source "$ROOT/scripts/tool-versions.env"
# shellcheck source=scripts/lib/images.sh
source "$ROOT/scripts/lib/images.sh"

BIN="$ROOT/.tools/bin"
NODE_BIN="$BIN/node"
KIND_BASE_IMAGE=storefront.local/kind-base:bookworm
K8S=registry.k8s.io
METRICS_SERVER_IMAGE="$K8S/metrics-server/metrics-server:$METRICS_SERVER_VERSION"

control_plane_images() {
    printf '%s\n' "$K8S/kube-apiserver:$KUBERNETES_VERSION" \
        "$K8S/kube-controller-manager:$KUBERNETES_VERSION" \
        "$K8S/kube-scheduler:$KUBERNETES_VERSION" "$K8S/kube-proxy:$KUBERNETES_VERSION" \
        "$K8S/coredns/coredns:$NODE_COREDNS_VERSION" "$K8S/pause:$NODE_PAUSE_VERSION" \
        "$K8S/etcd:${NODE_ETCD_VERSION#v}-0"
}

# The pins in tool-versions.env must be what this kubeadm wants, or the cluster would pull.
check_kubeadm_images() {
    local wanted ours
    wanted=$("$NODE_BIN/kubeadm" config images list --kubernetes-version "$KUBERNETES_VERSION" |
        LC_ALL=C sort)
    ours=$(control_plane_images | LC_ALL=C sort)
    [[ $wanted == "$ours" ]] || die "kubeadm $KUBERNETES_VERSION asks for:
$wanted
but scripts/tool-versions.env pins:
$ours"
}

build_component_images() {
    local static="$ROOT/kind/images/static" name
    for name in kube-apiserver kube-controller-manager kube-scheduler; do
        build_with_binaries "$K8S/$name:$KUBERNETES_VERSION" "$static" "$BIN/$name" \
            -- --build-arg "BINARY=$name"
    done
    build_with_binaries "$K8S/etcd:${NODE_ETCD_VERSION#v}-0" "$static" "$NODE_BIN/etcd" \
        -- --build-arg BINARY=etcd
    build_with_binaries "$METRICS_SERVER_IMAGE" "$ROOT/kind/images/metrics-server" \
        "$NODE_BIN/metrics-server"
    build_with_binaries "$K8S/coredns/coredns:$NODE_COREDNS_VERSION" "$ROOT/kind/images/coredns" \
        "$NODE_BIN/coredns"
    build_with_binaries "$K8S/pause:$NODE_PAUSE_VERSION" "$ROOT/kind/images/pause" \
        "$NODE_BIN/pause"
    build_with_binaries "$K8S/kube-proxy:$KUBERNETES_VERSION" "$ROOT/kind/images/kube-proxy" \
        "$NODE_BIN/kube-proxy" -- --build-arg "DEBIAN_IMAGE=$LOCAL_DEBIAN_IMAGE"
}

# kind's base-image files (entrypoint, containerd config, kubelet units) from its module.
kind_base_files() {
    local dir
    dir=$(cd "$ROOT/.tools/src" && go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [[ -d $dir/images/base/files ]] || die "sigs.k8s.io/kind@$KIND_VERSION: no images/base/files"
    echo "$dir/images/base/files"
}

build_kind_base() {
    local files context hash
    files=$(kind_base_files)
    hash=$(inputs_hash "$files" "$ROOT/kind/node" "$NODE_BIN/crictl" "$(image_id "$LOCAL_DEBIAN_IMAGE")")
    up_to_date "$KIND_BASE_IMAGE" "$hash" && return 0
    context="$IMAGE_WORK/context-kind-base"
    rm -rf "$context" && mkdir -p "$context"
    cp -r "$files" "$context/files"
    chmod -R u+w,go-w,a+rX "$context/files"
    chmod 0755 "$context"/files/usr/local/bin/* "$context"/files/kind/bin/*
    cp "$ROOT"/kind/node/Dockerfile "$ROOT"/kind/node/storefront-* "$NODE_BIN/crictl" "$context/"
    logged "$KIND_BASE_IMAGE" docker_build --label "$INPUTS_LABEL=$hash" \
        --build-arg "DEBIAN_IMAGE=$LOCAL_DEBIAN_IMAGE" --tag "$KIND_BASE_IMAGE" "$context"
    rm -rf "$context"
}

# Preloaded: kubeadm's, metrics-server, and the backing services' images made here, so a new
# cluster has them without a `kind load` of its own (the Storefront images change too often).
node_images() {
    control_plane_images
    printf '%s\n' "$METRICS_SERVER_IMAGE" "$POSTGRES_IMAGE" "$REDIS_IMAGE" "$PROMETHEUS_IMAGE" \
        "$JAEGER_IMAGE"
}

build_node() {
    local hash images=() ids=() image
    mapfile -t images < <(node_images)
    for image in "${images[@]}"; do ids+=("$(image_id "$image")"); done
    hash=$(inputs_hash "$(image_id "$KIND_BASE_IMAGE")" "${ids[@]}" "$NODE_BIN/kubeadm" \
        "$NODE_BIN/kubelet" "$BIN/kubectl" "$ROOT/kind/node/10-bridge.conflist" \
        "$ROOT/kind/node/default-cni.yaml" "$ROOT/kind/node/default-storage.yaml" node-2)
    up_to_date "$KIND_NODE_IMAGE" "$hash" && return 0
    logged "$KIND_NODE_IMAGE" assemble_node "$hash" "${images[@]}"
}

# As kind's nodeimage build: run the base, add binaries, files and images, commit.
assemble_node() {
    local hash=$1 container
    shift
    container="storefront-kind-node-build-$$"
    # shellcheck disable=SC2064 # the name is fixed now
    trap "docker rm --force --volumes $container >/dev/null 2>&1 || true" RETURN
    # --init reaps containerd once it is stopped (sleep, as PID 1, would not).
    docker run --detach --init --name "$container" --entrypoint sleep \
        --security-opt seccomp=unconfined "$KIND_BASE_IMAGE" infinity
    docker cp "$NODE_BIN/kubeadm" "$container:/usr/bin/kubeadm"
    docker cp "$NODE_BIN/kubelet" "$container:/usr/bin/kubelet"
    docker cp "$BIN/kubectl" "$container:/usr/bin/kubectl"
    docker exec "$container" chown root:root /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl
    docker exec "$container" mkdir -p /kind/manifests /etc/cni/net.d
    printf '%s' "$KUBERNETES_VERSION" | docker exec -i "$container" tee /kind/version >/dev/null
    docker exec -i "$container" tee /kind/manifests/default-cni.yaml >/dev/null \
        <"$ROOT/kind/node/default-cni.yaml"
    docker exec -i "$container" tee /kind/manifests/default-storage.yaml >/dev/null \
        <"$ROOT/kind/node/default-storage.yaml"
    docker exec -i "$container" tee /etc/cni/net.d/10-bridge.conflist >/dev/null \
        <"$ROOT/kind/node/10-bridge.conflist"
    docker exec "$container" sed -i \
        "s#sandbox_image = .*#sandbox_image = \"$K8S/pause:$NODE_PAUSE_VERSION\"#" \
        /etc/containerd/config.toml
    docker exec "$container" bash -c 'containerd >/var/log/containerd-build.log 2>&1 &
        for _ in $(seq 50); do ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; exit 1'
    docker save "$@" | docker exec -i "$container" \
        ctr --namespace=k8s.io images import --all-platforms --no-unpack --digests -
    local image
    for image in "$@"; do
        # Pinned: the kubelet's image garbage collection never removes them.
        docker exec "$container" ctr --namespace=k8s.io images label "$image" \
            io.cri-containerd.pinned=pinned >/dev/null
    done
    docker exec "$container" ctr --namespace=k8s.io images list --quiet
    docker exec "$container" pkill containerd
    docker exec "$container" bash -c 'while pgrep -x containerd >/dev/null; do sleep 0.2; done'
    docker exec "$container" rm -f /var/log/containerd-build.log
    docker commit --change "LABEL $INPUTS_LABEL=$hash" \
        --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' --change 'CMD []' \
        "$container" "$KIND_NODE_IMAGE"
}

main() {
    local start=$SECONDS image
    check_kubeadm_images
    for image in "$POSTGRES_IMAGE" "$REDIS_IMAGE" "$PROMETHEUS_IMAGE" "$JAEGER_IMAGE"; do
        image_id "$image" >/dev/null || die "$image is missing: scripts/images.sh services first"
    done
    build_local_debian
    build_component_images
    build_kind_base
    build_node
    log "kind node image $KIND_NODE_IMAGE ready in $((SECONDS - start)) s ($(image_size "$KIND_NODE_IMAGE"))"
}

main "$@"
