#!/usr/bin/env bash
# Undo scripts/kind-up.sh: stop the port-forwards the tests left, delete the kind cluster and its
# local state. The Docker network and its DOCKER-USER rule stay for the next cluster.
# Settings: CLUSTER=storefront-e2e (the cluster to delete).
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/kind.sh
source "$ROOT/scripts/lib/kind.sh"

if [[ -f "$STATE/port-forwards" ]]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$STATE/port-forwards"
fi
if command -v kind >/dev/null && kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "deleting kind cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
else
    log "no kind cluster $CLUSTER"
fi
rm -rf "$STATE"
