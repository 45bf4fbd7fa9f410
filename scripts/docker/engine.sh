#!/usr/bin/env bash
# Make sure a Docker engine is running here, able to run kind's privileged node containers.
#
#   - no dockerd: install Debian's docker.io (and jq) with apt, as root;
#   - dockerd not running: start it (systemd when the host runs it, else in the background with
#     its log in /var/log/storefront-dockerd.log);
#   - a capability bounding set that lacks capabilities (some VMs): install runc-bounded and
#     make it dockerd's default runtime, live, so `docker run --privileged` works. Hosts with the
#     full set are left exactly as they are.
# Not root and no running engine: says so and fails. Usage: bash scripts/docker/engine.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUNTIME_NAME=runc-bounded
RUNTIME_PATH=/usr/local/libexec/storefront/runc-bounded
DAEMON_JSON=/etc/docker/daemon.json
DOCKERD_LOG=/var/log/storefront-dockerd.log

log() { printf '[docker] %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

engine_up() { docker info >/dev/null 2>&1; }

capabilities_missing() {
    local bounding last
    bounding=$((16#$(awk '/^CapBnd:/ { print $2 }' /proc/self/status)))
    last=$(cat /proc/sys/kernel/cap_last_cap)
    ((bounding != (1 << (last + 1)) - 1))
}

install_engine() {
    command -v apt-get >/dev/null || die "no dockerd and no apt-get: install Docker by hand"
    log "installing Debian's docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        docker.io jq iptables >/dev/null
}

# Merge {"runtimes": {NAME: {path}}, "default-runtime": NAME} into daemon.json; 0 if it changed.
register_runtime() {
    local current wanted
    install -D -m 0755 "$HERE/runc-bounded" "$RUNTIME_PATH.tmp"
    mv -f "$RUNTIME_PATH.tmp" "$RUNTIME_PATH"
    mkdir -p "$(dirname "$DAEMON_JSON")"
    current=$(cat "$DAEMON_JSON" 2>/dev/null || echo '{}')
    wanted=$(jq --arg name "$RUNTIME_NAME" --arg path "$RUNTIME_PATH" \
        '.runtimes[$name] = {path: $path} | .["default-runtime"] = $name' <<<"$current")
    [[ $(jq -S . <<<"$current") != $(jq -S . <<<"$wanted") ]] || return 1
    printf '%s\n' "$wanted" >"$DAEMON_JSON.tmp"
    mv -f "$DAEMON_JSON.tmp" "$DAEMON_JSON"
}

start_engine() {
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        log "starting docker.service"
        systemctl start docker.service
    else
        log "starting dockerd (log: $DOCKERD_LOG)"
        # Its own session: it outlives this script, make and the CI step that started it.
        setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
    local deadline=$((SECONDS + 60))
    until engine_up; do
        ((SECONDS < deadline)) || die "dockerd did not answer within 60 s; see $DOCKERD_LOG"
        sleep 1
    done
}

main() {
    if ((EUID != 0)); then
        engine_up || die "no running Docker engine, and installing or starting one needs root:" \
            "start dockerd, or run \`make tools\` as root"
        log "engine running (not root: leaving its configuration alone)"
        return 0
    fi
    command -v dockerd >/dev/null || install_engine
    command -v jq >/dev/null || install_engine
    local changed=0
    if capabilities_missing; then
        register_runtime && changed=1
    fi
    if ! engine_up; then
        start_engine
    elif ((changed)); then
        log "reloading dockerd's configuration (runtime $RUNTIME_NAME)"
        pkill -HUP -x dockerd
        sleep 1
    fi
    if capabilities_missing; then
        [[ $(docker info --format '{{.DefaultRuntime}}') == "$RUNTIME_NAME" ]] ||
            die "dockerd's default runtime is not $RUNTIME_NAME; check $DAEMON_JSON"
        log "engine running; default runtime $RUNTIME_NAME (this host's bounding set lacks" \
            "capabilities that --privileged asks for)"
    else
        log "engine running"
    fi
}

main "$@"
