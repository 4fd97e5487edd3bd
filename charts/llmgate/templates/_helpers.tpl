{{/* Names, labels and the few values several templates derive. */}}

{{- define "llmgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmgate.fullname" -}}
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

{{- define "llmgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llmgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "llmgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "llmgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llmgate
{{- end }}

{{- define "llmgate.operatorSelectorLabels" -}}
{{ include "llmgate.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "llmgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llmgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "llmgate.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{- define "llmgate.sidecarImage" -}}
{{- printf "%s:%s" .Values.sidecar.image.repository (default .Chart.AppVersion .Values.sidecar.image.tag) }}
{{- end }}

{{/* The bundled Redis is deployed only when enabled and no external url is given. */}}
{{- define "llmgate.redisBundled" -}}
{{- if and .Values.redis.enabled (not .Values.redis.url) }}true{{ end }}
{{- end }}

{{- define "llmgate.redisName" -}}
{{- printf "%s-redis" (include "llmgate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmgate.redisUrl" -}}
{{- if .Values.redis.url }}
{{- .Values.redis.url }}
{{- else if .Values.redis.enabled }}
{{- printf "redis://%s.%s.svc:6379/0" (include "llmgate.redisName" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{/* Where the Redis password comes from: "name/key", or empty (no auth). External Redis
needs an existingSecret; the bundled one generates its own Secret. */}}
{{- define "llmgate.redisAuthSecret" -}}
{{- if and .Values.redis.auth.enabled (include "llmgate.redisUrl" .) }}
{{- if .Values.redis.auth.existingSecret }}
{{- .Values.redis.auth.existingSecret }}
{{- else if include "llmgate.redisBundled" . }}
{{- include "llmgate.redisName" . }}
{{- end }}
{{- end }}
{{- end }}

{{/* The response cache's Redis: cacheUrl, else the bundled cache instance, else url. */}}
{{- define "llmgate.redisCacheUrl" -}}
{{- if .Values.redis.cacheUrl }}
{{- .Values.redis.cacheUrl }}
{{- else if include "llmgate.redisBundled" . }}
{{- printf "redis://%s.%s.svc:6380/0" (include "llmgate.redisName" .) .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "llmgate.certificateName" -}}
{{- printf "%s-webhook" (include "llmgate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "llmgate.issuerName" -}}
{{- printf "%s-selfsigned" (include "llmgate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Namespaces the webhook never touches. */}}
{{- define "llmgate.excludedNamespaces" -}}
{{- $all := concat (list "kube-system" .Release.Namespace) .Values.webhook.excludeNamespaces | uniq }}
{{- toJson $all }}
{{- end }}

{{/* The ClusterRole a namespace binds to let the operator manage its Secrets/ConfigMaps. */}}
{{- define "llmgate.namespaceRoleName" -}}
{{- printf "%s-namespace" (include "llmgate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The operator's rules on llmgate's CRs (and Events about them). */}}
{{- define "llmgate.resourceRules" -}}
- apiGroups: [llmgate.io]
  resources: [providersecrets, llmroutes, virtualkeys]
  verbs: [get, list, watch, patch]
- apiGroups: [llmgate.io]
  resources: [providersecrets/status, llmroutes/status, virtualkeys/status]
  verbs: [get, patch]
# Key Secrets are owned by their VirtualKey with blockOwnerDeletion; clusters with the
# OwnerReferencesPermissionEnforcement admission plugin require this to set it.
- apiGroups: [llmgate.io]
  resources: [virtualkeys/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
# Which sidecar versions run (llmgate_operator_sidecar_pods, docs/upgrade.md): read only.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/* Secrets and ConfigMaps: only ever granted per namespace (Role or RoleBinding) unless
rbac.clusterWideSecrets. The operator reads the Secrets its CRs name (a metadata-only watch
tells it when they change) and writes llmgate-config, llmgate-credentials and key Secrets. */}}
{{- define "llmgate.dataRules" -}}
- apiGroups: [""]
  resources: [configmaps, secrets]
  verbs: [get, list, watch, create, patch, delete]
{{- end }}

{{/* Rules the operator needs inside every namespace it watches (namespaced mode). */}}
{{- define "llmgate.namespacedRules" -}}
{{ include "llmgate.resourceRules" . }}
{{ include "llmgate.dataRules" . }}
{{- if and .Values.operator.peering.enabled .Values.operator.watchNamespaces }}
# kopf peering of a namespaced operator: its KopfPeering in each watched namespace.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [list, watch]
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  resourceNames: [{{ .Values.operator.peering.name | quote }}]
  verbs: [get, patch]
{{- end }}
{{- end }}
