{{/*
Storefront chart helpers: names, standard labels, the operator image, the ServiceAccount name.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "storefront.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, else "<release>-<name>" (just the release
name when it already contains the chart name). Truncated to 63 characters (DNS label).
*/}}
{{- define "storefront.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "storefront.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator's Pods (never change them: selectors are immutable). */}}
{{- define "storefront.selectorLabels" -}}
app.kubernetes.io/name: {{ include "storefront.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* Labels on everything the release creates, whatever its component. */}}
{{- define "storefront.releaseLabels" -}}
helm.sh/chart: {{ include "storefront.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: storefront
{{- end }}

{{/* Standard labels on the operator's objects. */}}
{{- define "storefront.labels" -}}
{{ include "storefront.releaseLabels" . }}
app.kubernetes.io/name: {{ include "storefront.name" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator image reference: repository@digest, else repository:tag (tag defaults to the appVersion). */}}
{{- define "storefront.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The ClusterKopfPeering object the release's replicas share: its own unless named. */}}
{{- define "storefront.peeringName" -}}
{{- default (include "storefront.fullname" .) .Values.peering.name }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "storefront.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "storefront.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
RBAC rules for the objects the operator reads and writes in a namespace it watches: its own
Storefront objects (with their status and scale subresources) and every child it renders.
Shared by the ClusterRole (cluster-wide) and the per-namespace Roles (watchNamespaces).
*/}}
{{- define "storefront.namespacedRules" -}}
# The Storefront objects: watched; finalizers and annotations, status and worker scale patched.
- apiGroups: ["storefront.dev"]
  resources: ["storefronts"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["storefront.dev"]
  resources: ["storefronts/status", "storefronts/scale"]
  verbs: ["get", "patch"]
# Children rendered from each spec: server-side applied (create + patch), watched by label so
# that a child changed or deleted by someone else is repaired at once, listed by label to prune
# the ones no longer desired, deleted then.
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Secrets are read by name (the database and Redis URLs a spec names) and created once (the
# instance's generated JWT key and development database password); never listed or watched.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
# Events on each Storefront (the operator's and kopf's), as `kubectl describe sf` shows them.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
Cluster-scoped rules the operator needs in every mode: kopf discovers the CRDs it serves and the
operator checks whether the ServiceMonitor CRD exists; with crds.applyFromOperator it also
server-side applies its own CRD (and only that one; with peering, Kopf's peering CRD too) at start.
*/}}
{{- define "storefront.crdRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- if .Values.crds.applyFromOperator }}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  resourceNames: ["storefronts.storefront.dev"]
  verbs: ["patch"]
{{- if .Values.peering.enabled }}
# Kopf's peering CRD is not in crds/: the operator's first apply creates it, which the API server
# authorizes as `create` of that name.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  resourceNames: ["clusterkopfpeerings.kopf.dev"]
  verbs: ["create", "patch"]
{{- end }}
{{- end }}
{{- end }}

{{/*
Kopf peering (peering.enabled): the operator creates the shared ClusterKopfPeering object when it
is missing; Kopf lists and watches the peering objects (it cannot select one by name) and patches
its keep-alive into the release's own, the only one it may patch. Cluster-scoped in every
mode: the replicas of a namespaced operator share one object too.
*/}}
{{- define "storefront.peeringRules" -}}
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["list", "watch", "create"]
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  resourceNames: [{{ include "storefront.peeringName" . | quote }}]
  verbs: ["patch"]
{{- end }}
