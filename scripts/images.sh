#!/usr/bin/env bash
# Build Storefront's container images with Docker, offline when no registry answers.
#
# Usage: bash scripts/images.sh [--tag TAG] TARGET...
#   app        ghcr.io/storefront/storefront:TAG           (Dockerfile)
#   operator   ghcr.io/storefront/storefront-operator:TAG  (operator/Dockerfile)
#   base       the base of those two (below), made ahead of them
#   services   PostgreSQL, Redis (Debian's packages), Prometheus and Jaeger (binaries `make tools`
#              builds) images for the kind cluster (images/)
#
# The Storefront images build FROM python:3.11-slim-bookworm when it can be had (present, or
# pulled); otherwise FROM storefront.local/python:3.11-bookworm, made here from Debian packages:
# a debootstrap'ed bookworm (storefront.local/debian:bookworm) plus Debian's Python 3.11. Set
# STOREFRONT_PYTHON_IMAGE to choose a base yourself. Every image but the two Storefront ones
# carries a label with the hash of what it is built from, and is rebuilt only when that changes;
# the Storefront images lean on Docker's layer cache.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/tool-versions.env
source "$ROOT/scripts/tool-versions.env"
# shellcheck source=scripts/lib/images.sh
source "$ROOT/scripts/lib/images.sh"

# The default tag is the package's version, which the chart and the CRD default to.
TAG=${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml")}
PUBLIC_PYTHON_IMAGE=python:3.11-slim-bookworm

# The base of the Storefront images: the user's choice, the public image, or one made here.
python_image() {
    if [[ -n ${STOREFRONT_PYTHON_IMAGE:-} ]]; then
        echo "$STOREFRONT_PYTHON_IMAGE"
    elif have_or_pull "$PUBLIC_PYTHON_IMAGE"; then
        echo "$PUBLIC_PYTHON_IMAGE"
    else
        build_local_python >&2
        echo "$LOCAL_PYTHON_IMAGE"
    fi
}

build_storefront() {
    local dockerfile=$1 image=$2 base start=$SECONDS
    base=$(python_image)
    log "building $image on $base"
    docker_build --build-arg "PYTHON_IMAGE=$base" \
        --label "org.opencontainers.image.version=$TAG" \
        --tag "$image" --file "$ROOT/$dockerfile" "$ROOT"
    log "built $image in $((SECONDS - start)) s ($(image_size "$image"))"
}

build_services() {
    build_local_debian
    local debian=(--build-arg "DEBIAN_IMAGE=$LOCAL_DEBIAN_IMAGE")
    build_from_dir "$POSTGRES_IMAGE" "$ROOT/images/postgres" "${debian[@]}"
    build_from_dir "$REDIS_IMAGE" "$ROOT/images/redis" "${debian[@]}"
    build_with_binaries "$PROMETHEUS_IMAGE" "$ROOT/images/prometheus" \
        "$ROOT/.tools/bin/images/prometheus"
    build_with_binaries "$JAEGER_IMAGE" "$ROOT/images/jaeger" "$ROOT/.tools/bin/jaeger"
}

main() {
    while (($#)); do
        case $1 in
        --tag) TAG=$2; shift 2 ;;
        --tag=*) TAG=${1#--tag=}; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; return 0 ;;
        app) build_storefront Dockerfile "$APP_REPOSITORY:$TAG"; shift ;;
        operator) build_storefront operator/Dockerfile "$OPERATOR_REPOSITORY:$TAG"; shift ;;
        base) log "base of the Storefront images: $(python_image)"; shift ;;
        services) build_services; shift ;;
        *) die "unknown target $1 (app, operator, base, services; --help)" ;;
        esac
    done
}

main "$@"
