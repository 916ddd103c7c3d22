{{/* Names and labels: every template takes them from here. */}}

{{- define "berth.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-berth", or the release name when it already contains "berth". */}}
{{- define "berth.fullname" -}}
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

{{- define "berth.operator.fullname" -}}
{{- printf "%s-operator" (include "berth.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "berth.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "berth.labels" -}}
helm.sh/chart: {{ include "berth.chart" . }}
app.kubernetes.io/name: {{ include "berth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: berth
{{- end }}

{{/* The operator's selector (stable across upgrades: never add to it). */}}
{{- define "berth.operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "berth.operator.labels" -}}
{{ include "berth.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "berth.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "berth.operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "berth.leaseName" -}}
{{- default (include "berth.operator.fullname" .) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{- define "berth.operator.image" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{/* The gateway: names, selector, image, Service URL. */}}
{{- define "berth.gateway.fullname" -}}
{{- printf "%s-gateway" (include "berth.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The gateway's selector (stable across upgrades). app.kubernetes.io/name and
component=gateway are what each model's NetworkPolicy admits (the operator's
BERTH_OPERATOR_NETWORK_GATEWAY_LABELS, set from here). */}}
{{- define "berth.gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "berth.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "berth.gateway.labels" -}}
{{ include "berth.labels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "berth.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (include "berth.gateway.fullname" .) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- required "gateway.serviceAccount.name is required when gateway.serviceAccount.create is false" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "berth.gateway.image" -}}
{{- printf "%s:%s" .Values.gateway.image.repository (default .Chart.AppVersion .Values.gateway.image.tag) }}
{{- end }}

{{/* In-cluster base URL of the gateway (the operator's status.url prefix). */}}
{{- define "berth.gateway.url" -}}
{{- $port := int .Values.gateway.service.port }}
{{- printf "http://%s.%s.svc%s" (include "berth.gateway.fullname" .) .Release.Namespace (ternary "" (printf ":%d" $port) (eq $port 80)) }}
{{- end }}

{{/* The rules the gateway needs where it routes (rbac.yaml: a ClusterRole or a Role per
served namespace). */}}
{{- define "berth.gateway.rules" -}}
# discovery: served names, replicas, minReplicas, the hold-deadline annotation
- apiGroups: [serving.berth.dev]
  resources: [modeldeployments]
  verbs: [list, watch]
# endpoints: the EndpointSlices of each model's Service (ready, not terminating)
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
# scale from zero: replicas only through the scale subresource
- apiGroups: [serving.berth.dev]
  resources: [modeldeployments/scale]
  verbs: [patch]
# the WokenByGateway Event on the ModelDeployment
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* Checks that span several values (the schema checks each value alone). */}}
{{- define "berth.validate" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection.enabled) }}
{{- fail "operator.replicas > 1 needs operator.leaderElection.enabled: true (else two replicas act at once)" }}
{{- end }}
{{- if and (eq .Values.rbac.scope "namespaces") (empty .Values.rbac.namespaces) }}
{{- fail "rbac.namespaces: list at least one namespace when rbac.scope is \"namespaces\"" }}
{{- end }}
{{- if and (eq .Values.rbac.scope "cluster") (not (empty .Values.rbac.namespaces)) }}
{{- fail "rbac.namespaces: only used with rbac.scope \"namespaces\" (it is \"cluster\")" }}
{{- end }}
{{- end }}

{{/* The namespaced rules the operator needs where it serves ModelDeployments. */}}
{{- define "berth.rules.namespaced" -}}
# ModelDeployments: watched; Kopf keeps its progress in serving.berth.dev/* annotations
# and its finalizer (patch); the operator writes status and (autoscaler) /scale.
- apiGroups: [serving.berth.dev]
  resources: [modeldeployments]
  verbs: [get, list, watch, patch]
- apiGroups: [serving.berth.dev]
  resources: [modeldeployments/status, modeldeployments/scale]
  verbs: [get, patch]
# Children, written with server-side apply (a PATCH that may create); delete: the
# PodDisruptionBudget when replicas drop to 1, the canary's Deployment and Service
# (<name>-canary) when spec.canary goes. Garbage collection (owner references)
# deletes the rest when a ModelDeployment goes.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [monitoring.coreos.com]
  resources: [podmonitors]
  verbs: [get, list, watch, create, patch]
# Pods: read only, for readiness, start-up phases and the scheduler's Unschedulable reason.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Events on ModelDeployments.
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/* The cluster-scoped rules (both RBAC modes). */}}
{{- define "berth.rules.cluster" -}}
# ScalingPolicies are cluster-scoped: read (an index) and their status.models written.
- apiGroups: [serving.berth.dev]
  resources: [scalingpolicies]
  verbs: [get, list, watch]
- apiGroups: [serving.berth.dev]
  resources: [scalingpolicies/status]
  verbs: [get, patch]
# Kopf discovers resources; the operator notices the Prometheus Operator's CRD appearing.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
# A namespace being deleted: the operator stops writing into it.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
