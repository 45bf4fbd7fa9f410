#!/usr/bin/env bash
# Undo scripts/kind-e2e.sh: stop its port-forwards, delete its kind cluster and local state.
# Settings: CLUSTER=storefront (the cluster to delete).
set -Eeuo pipefail

CLUSTER="${CLUSTER:-storefront}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${ROOT}/.storefront/kind-${CLUSTER}"

if [[ -f "${STATE}/port-forwards" ]]; then
  while read -r pid; do
    kill "${pid}" 2> /dev/null || true
  done < "${STATE}/port-forwards"
fi
if command -v kind > /dev/null && kind get clusters 2> /dev/null | grep -qx "${CLUSTER}"; then
  echo "deleting kind cluster ${CLUSTER}" >&2
  kind delete cluster --name "${CLUSTER}"
else
  echo "no kind cluster ${CLUSTER}" >&2
fi
rm -rf "${STATE}"
