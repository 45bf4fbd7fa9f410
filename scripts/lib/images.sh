# shellcheck shell=bash
# Helpers for building images with Docker, sourced by scripts/images.sh and scripts/kind-node.sh.
#
# Images built from a recipe carry the label dev.storefront.inputs, a hash of everything they are
# built from (their folder, binaries, base image ID, arguments); a build whose hash matches the
# image already there is skipped, so a second `make tools` takes no time and a changed recipe
# rebuilds only its image. Build logs go to .tools/logs/image-*.log.

: "${ROOT:?ROOT must be set before sourcing scripts/lib/images.sh}"
LOCAL_DEBIAN_IMAGE=storefront.local/debian:bookworm
LOCAL_PYTHON_IMAGE=storefront.local/python:3.11-bookworm
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
INPUTS_LABEL=dev.storefront.inputs
IMAGE_LOGS="$ROOT/.tools/logs"
IMAGE_WORK="$ROOT/.tools/images"

log() { printf '[images] %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

# docker build with BuildKit when the CLI has it (buildx), else the classic builder: the
# Dockerfiles use nothing the classic builder lacks, and neither pulls a frontend image.
docker_build() {
    if docker buildx version >/dev/null 2>&1; then
        docker build --progress=plain "$@"
    else
        DOCKER_BUILDKIT=0 docker build "$@"
    fi
}

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null; }
image_size() { docker image inspect --format '{{.Size}}' "$1" | awk '{ printf "%d MB", $1 / 1e6 }'; }
image_inputs() { docker image inspect --format "{{ index .Config.Labels \"$INPUTS_LABEL\" }}" "$1" 2>/dev/null; }

# True when IMAGE is here, or could be pulled.
have_or_pull() {
    image_id "$1" >/dev/null || docker pull --quiet "$1" >/dev/null 2>&1
}

# Hash of the files and words given (directories: every file under them, by relative path).
inputs_hash() {
    local item
    for item in "$@"; do
        if [[ -d $item ]]; then
            (cd "$item" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
        elif [[ -f $item ]]; then
            sha256sum <"$item"
        else
            printf '%s\n' "$item"
        fi
    done | sha256sum | cut -c1-32
}

up_to_date() {
    [[ "$(image_inputs "$1")" == "$2" ]] && log "$1: up to date"
}

# Run a build command with its output in a log; on failure show the log's tail and stop.
logged() {
    local name=$1 logfile start=$SECONDS
    shift
    logfile="$IMAGE_LOGS/image-${name//[\/:]/_}.log"
    mkdir -p "$IMAGE_LOGS"
    log "$name: building (log: ${logfile#"$ROOT"/})"
    if ! "$@" >"$logfile" 2>&1; then
        tail -n 25 "$logfile" | sed 's/^/    /' >&2
        die "$name: build FAILED (log: ${logfile#"$ROOT"/})"
    fi
    log "$name: built in $((SECONDS - start)) s ($(image_size "$name"))"
}

# build_from_dir IMAGE DIR [docker build args...]: DIR holds the Dockerfile and its context.
build_from_dir() {
    local image=$1 dir=$2 hash
    shift 2
    hash=$(inputs_hash "$dir" "$@" "$(parent_ids "$@")")
    up_to_date "$image" "$hash" && return 0
    logged "$image" docker_build --label "$INPUTS_LABEL=$hash" --tag "$image" "$@" "$dir"
}

# IDs of the images named by --build-arg X_IMAGE=..., so a rebuilt base rebuilds its children.
parent_ids() {
    local arg
    for arg in "$@"; do
        [[ $arg == *_IMAGE=* ]] && image_id "${arg#*=}"
    done
    return 0
}

# build_with_binaries IMAGE DIR BINARY... [-- docker build args]: DIR's Dockerfile gets a context
# with DIR's files, the binaries, and for images FROM scratch a passwd and group file (root,
# nobody, nonroot 10001) and this machine's CA bundle, as distroless images have.
build_with_binaries() {
    local image=$1 dir=$2 binaries=() args=() hash context
    shift 2
    while (($#)) && [[ $1 != -- ]]; do binaries+=("$1"); shift; done
    (($#)) && shift && args=("$@")
    local binary
    for binary in "${binaries[@]}"; do
        [[ -x $binary ]] || die "$image: $binary is missing: run \`make tools\`"
    done
    hash=$(inputs_hash "$dir" "${binaries[@]}" /etc/ssl/certs/ca-certificates.crt "${args[@]}" \
        "$(parent_ids "${args[@]}")")
    up_to_date "$image" "$hash" && return 0
    context="$IMAGE_WORK/context-${image//[\/:]/_}"
    rm -rf "$context" && mkdir -p "$context"
    cp -a "$dir/." "$context/"
    cp "${binaries[@]}" "$context/"
    cp /etc/ssl/certs/ca-certificates.crt "$context/"
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
        'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
        'nonroot:x:10001:10001:nonroot:/home/nonroot:/sbin/nologin' >"$context/passwd"
    printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:10001:' >"$context/group"
    logged "$image" docker_build --label "$INPUTS_LABEL=$hash" --tag "$image" \
        "${args[@]}" "$context"
    rm -rf "$context"
}

# storefront.local/debian:bookworm: `debootstrap --variant=minbase` from the Debian mirror,
# upgraded from bookworm-updates and bookworm-security, slimmed like debian:bookworm-slim (no
# docs, man pages or locales), trusting what this machine trusts (its extra CA certificates).
build_local_debian() {
    local hash dir
    hash=$(inputs_hash "debian-rootfs-1" "$DEBIAN_SUITE" "$DEBIAN_MIRROR" "$DEBIAN_SECURITY_MIRROR" \
        /etc/ssl/certs/ca-certificates.crt)
    up_to_date "$LOCAL_DEBIAN_IMAGE" "$hash" && return 0
    ((EUID == 0)) || die "$LOCAL_DEBIAN_IMAGE: debootstrap needs root (or set STOREFRONT_PYTHON_IMAGE)"
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            debootstrap >/dev/null
    fi
    dir="$IMAGE_WORK/debian-rootfs"
    logged "$LOCAL_DEBIAN_IMAGE" make_debian_rootfs "$dir" "$hash"
    rm -rf "$dir"
}

make_debian_rootfs() {
    local dir=$1 hash=$2
    rm -rf "$dir"
    debootstrap --variant=minbase --include=ca-certificates "$DEBIAN_SUITE" "$dir" "$DEBIAN_MIRROR"
    cat >"$dir/etc/dpkg/dpkg.cfg.d/storefront-slim" <<'CONF'
# As debian:*-slim: no documentation, man pages or translations (copyright files stay).
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CONF
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
        >"$dir/etc/apt/apt.conf.d/90storefront-no-recommends"
    rm -f "$dir/etc/apt/sources.list"
    cat >"$dir/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $DEBIAN_MIRROR
Suites: $DEBIAN_SUITE $DEBIAN_SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $DEBIAN_SECURITY_MIRROR
Suites: $DEBIAN_SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    python3 - "/etc/ssl/certs/ca-certificates.crt" "$dir/etc/ssl/certs/ca-certificates.crt" \
        "$dir/usr/local/share/ca-certificates" <<'PY'
"""Write the host's CA certificates that the new root file system lacks, one file each."""
import re, sys
from pathlib import Path
pem = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
host, ours, out = (Path(a) for a in sys.argv[1:])
have = set(pem.findall(ours.read_text()))
for i, cert in enumerate(c for c in pem.findall(host.read_text()) if c not in have):
    (out / f"host-{i}.crt").write_text(cert + "\n")
PY
    chroot "$dir" update-ca-certificates
    chroot "$dir" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive chroot "$dir" apt-get -y -qq upgrade
    chroot "$dir" apt-get clean
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/log/*.log \
        "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/*
    find "$dir/usr/share/doc" -type f ! -name copyright -delete
    tar --numeric-owner -C "$dir" -c . |
        docker import --change 'CMD ["bash"]' --change "LABEL $INPUTS_LABEL=$hash" \
            - "$LOCAL_DEBIAN_IMAGE"
}

build_local_python() {
    build_local_debian
    build_from_dir "$LOCAL_PYTHON_IMAGE" "$ROOT/images/python" \
        --build-arg "DEBIAN_IMAGE=$LOCAL_DEBIAN_IMAGE"
}
