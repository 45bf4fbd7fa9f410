#!/usr/bin/env bash
# Storefront end to end on a local kind cluster: build both images, load them into kind, install
# (optionally) a minimal Prometheus + Grafana + Jaeger, install the chart, create the example
# Storefront, wait until it is Ready, drive the dashboards' smoke workload through a
# port-forward, then check the panels' metrics in Prometheus and a request's trace in Jaeger.
#
# Needs: docker (with a running engine), kind, kubectl, helm, curl and the project's Python
# environment (`make install`). Clean up with scripts/kind-down.sh.
#
# Settings (environment):
#   CLUSTER=storefront          kind cluster name (reused when it exists)
#   TAG=e2e                     tag of the images built and loaded
#   MONITORING=1                install kube-prometheus-stack (minimal) and Jaeger; 0 skips
#                               them and the metric and trace checks
#   APP_NAMESPACE=shop          namespace of the example Storefront
#   TIMEOUT=600                 seconds to wait for the Storefront to become Ready
#   PYTHON=.venv/bin/python     Python with Storefront installed (for the smoke checks)
set -Eeuo pipefail

CLUSTER="${CLUSTER:-storefront}"
TAG="${TAG:-e2e}"
MONITORING="${MONITORING:-1}"
APP_NAMESPACE="${APP_NAMESPACE:-shop}"
TIMEOUT="${TIMEOUT:-600}"
PYTHON="${PYTHON:-.venv/bin/python}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${ROOT}/.storefront/kind-${CLUSTER}"
APP_IMAGE="ghcr.io/storefront/storefront:${TAG}"
OPERATOR_IMAGE="ghcr.io/storefront/storefront-operator:${TAG}"
OPERATOR_NAMESPACE="storefront-system"
MONITORING_NAMESPACE="monitoring"
ADMIN_EMAIL="admin@example.com"
ADMIN_PASSWORD="e2e-admin-$(date +%s)"
KUBE_CONTEXT="kind-${CLUSTER}"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }
kc() { kubectl --context "${KUBE_CONTEXT}" "$@"; }
hm() { helm --kube-context "${KUBE_CONTEXT}" "$@"; }

require() {
  local tool
  for tool in "$@"; do
    command -v "${tool}" > /dev/null || die "${tool} is required (see the README's kind section)"
  done
}

# Start `kubectl port-forward` in the background; its PID goes to ${STATE}/port-forwards so
# kind-down.sh (or this script's exit) stops it.
port_forward() {
  local namespace="$1" target="$2" ports="$3"
  kc -n "${namespace}" port-forward "${target}" "${ports}" > "${STATE}/port-forward-${ports%%:*}.log" 2>&1 &
  echo "$!" >> "${STATE}/port-forwards"
}

stop_port_forwards() {
  if [[ -f "${STATE}/port-forwards" ]]; then
    while read -r pid; do kill "${pid}" 2> /dev/null || true; done < "${STATE}/port-forwards"
    rm -f "${STATE}/port-forwards"
  fi
}

wait_http() {
  local url="$1" deadline=$((SECONDS + ${2:-60}))
  until curl -fsS -o /dev/null "${url}"; do
    ((SECONDS < deadline)) || die "${url} did not answer"
    sleep 2
  done
}

create_cluster() {
  if kind get clusters | grep -qx "${CLUSTER}"; then
    log "kind cluster ${CLUSTER} exists: reusing it"
  else
    log "creating kind cluster ${CLUSTER}"
    kind create cluster --name "${CLUSTER}" --wait 180s
  fi
}

build_images() {
  log "building ${APP_IMAGE} and ${OPERATOR_IMAGE}"
  docker build --tag "${APP_IMAGE}" --file "${ROOT}/Dockerfile" "${ROOT}"
  docker build --tag "${OPERATOR_IMAGE}" --file "${ROOT}/operator/Dockerfile" "${ROOT}"
  log "loading the images into kind"
  kind load docker-image --name "${CLUSTER}" "${APP_IMAGE}" "${OPERATOR_IMAGE}"
}

install_monitoring() {
  log "installing Jaeger (OTLP receiver and query UI)"
  kc create namespace "${MONITORING_NAMESPACE}" --dry-run=client -o yaml | kc apply -f -
  kc -n "${MONITORING_NAMESPACE}" apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: jaeger
  labels: {app: jaeger}
spec:
  replicas: 1
  selector:
    matchLabels: {app: jaeger}
  template:
    metadata:
      labels: {app: jaeger}
    spec:
      containers:
        - name: jaeger
          image: jaegertracing/jaeger:2.5.0
          ports:
            - {name: otlp-http, containerPort: 4318}
            - {name: otlp-grpc, containerPort: 4317}
            - {name: query, containerPort: 16686}
          readinessProbe:
            httpGet: {path: /, port: 16686}
---
apiVersion: v1
kind: Service
metadata:
  name: jaeger
spec:
  selector: {app: jaeger}
  ports:
    - {name: otlp-http, port: 4318, targetPort: otlp-http}
    - {name: otlp-grpc, port: 4317, targetPort: otlp-grpc}
    - {name: query, port: 16686, targetPort: query}
YAML

  log "installing a minimal kube-prometheus-stack (Prometheus with exemplars, Grafana)"
  hm repo add prometheus-community https://prometheus-community.github.io/helm-charts > /dev/null
  hm repo update prometheus-community > /dev/null
  hm upgrade --install monitoring prometheus-community/kube-prometheus-stack \
    --namespace "${MONITORING_NAMESPACE}" --wait --timeout 10m \
    --values - <<YAML
alertmanager: {enabled: false}
nodeExporter: {enabled: false}
kubeStateMetrics: {enabled: false}
kubeApiServer: {enabled: false}
kubelet: {enabled: false}
kubeControllerManager: {enabled: false}
coreDns: {enabled: false}
kubeEtcd: {enabled: false}
kubeScheduler: {enabled: false}
kubeProxy: {enabled: false}
defaultRules: {create: false}
prometheus:
  prometheusSpec:
    scrapeInterval: 10s
    enableFeatures: [exemplar-storage]
    # Select every ServiceMonitor, not only this release's.
    serviceMonitorSelectorNilUsesHelmValues: false
grafana:
  adminPassword: storefront
  sidecar:
    dashboards:
      enabled: true
      label: grafana_dashboard
      labelValue: "1"
      searchNamespace: ALL
      folderAnnotation: grafana_folder
      provider: {foldersFromFilesStructure: true}
  additionalDataSources:
    - name: Jaeger
      uid: jaeger
      type: jaeger
      url: http://jaeger.${MONITORING_NAMESPACE}.svc:16686
  prometheus:
    datasource:
      # Exemplars (trace_id) open the trace in Jaeger.
      exemplarTraceIdDestinations:
        - {name: trace_id, datasourceUid: jaeger}
YAML
}

install_chart() {
  log "installing the Storefront chart"
  local monitor="false"
  [[ "${MONITORING}" == "1" ]] && monitor="true"
  hm upgrade --install storefront "${ROOT}/charts/storefront" \
    --namespace "${OPERATOR_NAMESPACE}" --create-namespace --wait --timeout 5m \
    --set image.repository="${OPERATOR_IMAGE%:*}" \
    --set image.tag="${TAG}" \
    --set image.pullPolicy=Never \
    --set serviceMonitor.enabled="${monitor}" \
    --set serviceMonitor.labels.release=monitoring \
    --set dashboards.enabled="${monitor}"
}

create_storefront() {
  log "creating the example Storefront in namespace ${APP_NAMESPACE}"
  kc create namespace "${APP_NAMESPACE}" --dry-run=client -o yaml | kc apply -f -
  kc -n "${APP_NAMESPACE}" create secret generic storefront-admin \
    --from-literal=email="${ADMIN_EMAIL}" --from-literal=password="${ADMIN_PASSWORD}" \
    --dry-run=client -o yaml | kc apply -f -
  local name
  name="$(kc -n "${APP_NAMESPACE}" apply -f "${ROOT}/examples/storefront.yaml" -o name)"
  name="${name#*/}"
  # The images just built; development PostgreSQL and Redis run by the operator; every request
  # traced to Jaeger; the chart's dashboards (all namespaces) instead of per-instance copies.
  local otlp="null"
  [[ "${MONITORING}" == "1" ]] && otlp="\"http://jaeger.${MONITORING_NAMESPACE}.svc:4318\""
  kc -n "${APP_NAMESPACE}" patch storefront "${name}" --type merge --patch "$(cat <<JSON
{"spec": {
  "image": {"repository": "${APP_IMAGE%:*}", "tag": "${TAG}", "pullPolicy": "Never"},
  "database": {"secretRef": null, "managed": true},
  "redis": {"secretRef": null, "managed": true},
  "observability": {"otlpEndpoint": ${otlp}, "samplingRatio": 1.0,
                    "dashboards": {"enabled": false}}
}}
JSON
)"
  echo "${name}" > "${STATE}/storefront-name"
  log "waiting up to ${TIMEOUT}s for storefront/${name} to be Ready"
  kc -n "${APP_NAMESPACE}" wait "storefront/${name}" --for=condition=Ready --timeout="${TIMEOUT}s" || {
    kc -n "${APP_NAMESPACE}" describe "storefront/${name}" >&2
    kc -n "${APP_NAMESPACE}" get pods -o wide >&2
    die "storefront/${name} is not Ready"
  }
  kc -n "${APP_NAMESPACE}" get storefronts
}

smoke() {
  local name api_port=18000 prometheus_port=19090 jaeger_port=16686
  name="$(cat "${STATE}/storefront-name")"
  port_forward "${APP_NAMESPACE}" "service/${name}-api" "${api_port}:80"
  wait_http "http://127.0.0.1:${api_port}/readyz"
  if [[ "${MONITORING}" != "1" ]]; then
    log "driving the smoke workload (no Prometheus: metrics and traces are not checked)"
    "${PYTHON}" - "http://127.0.0.1:${api_port}" "${ADMIN_EMAIL}" "${ADMIN_PASSWORD}" <<'PY'
import sys
from dashboards.smoke import drive
print(drive(*sys.argv[1:4]))
PY
    return
  fi
  port_forward "${MONITORING_NAMESPACE}" service/monitoring-kube-prometheus-prometheus "${prometheus_port}:9090"
  port_forward "${MONITORING_NAMESPACE}" service/jaeger "${jaeger_port}:16686"
  wait_http "http://127.0.0.1:${prometheus_port}/-/ready"
  log "driving the smoke workload, then checking every service and operator panel has data"
  "${PYTHON}" -m dashboards.smoke \
    --api "http://127.0.0.1:${api_port}" \
    --admin-email "${ADMIN_EMAIL}" --admin-password "${ADMIN_PASSWORD}" \
    --prometheus "http://127.0.0.1:${prometheus_port}" \
    --dashboard storefront-service --dashboard storefront-operator --timeout 300
  log "checking Jaeger holds the API's traces"
  local traces
  traces="$(curl -fsS "http://127.0.0.1:${jaeger_port}/api/traces?service=storefront-api&limit=5&lookback=1h")"
  [[ "${traces}" == *'"traceID"'* ]] || die "no storefront-api trace in Jaeger"
  log "traces found: $(grep -o '"traceID":"[0-9a-f]*"' <<< "${traces}" | head -1)"
}

main() {
  cd "${ROOT}"
  require docker kind kubectl helm curl
  [[ -x "${PYTHON}" ]] || die "${PYTHON} not found: run \`make install\` or set PYTHON"
  [[ -f "${ROOT}/examples/storefront.yaml" ]] || die "examples/storefront.yaml is missing"
  mkdir -p "${STATE}"
  trap stop_port_forwards EXIT
  create_cluster
  build_images
  [[ "${MONITORING}" == "1" ]] && install_monitoring
  install_chart
  create_storefront
  smoke
  log "end to end OK"
  if [[ "${MONITORING}" == "1" ]]; then
    cat >&2 <<EOF

Grafana:  kubectl --context ${KUBE_CONTEXT} -n ${MONITORING_NAMESPACE} port-forward service/monitoring-grafana 3000:80
          http://127.0.0.1:3000 (admin / storefront), folder "Storefront"
Jaeger:   kubectl --context ${KUBE_CONTEXT} -n ${MONITORING_NAMESPACE} port-forward service/jaeger 16686
Clean up: scripts/kind-down.sh
EOF
  fi
}

main "$@"
