{{/* Names, labels and the settings-to-environment mapping shared by every template. */}}

{{- define "ragserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ragserve.fullname" -}}
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

{{/* A component's resource name: <fullname>-<component>, e.g. ragserve-worker. */}}
{{- define "ragserve.componentName" -}}
{{- printf "%s-%s" (include "ragserve.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ragserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of one component; args: root, component. */}}
{{- define "ragserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ragserve.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component; args: root, component. */}}
{{- define "ragserve.labels" -}}
helm.sh/chart: {{ include "ragserve.chart" .root }}
{{ include "ragserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: {{ include "ragserve.name" .root }}
{{- end }}

{{- define "ragserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "ragserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ragserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ragserve.dependencySecretName" -}}
{{- printf "%s-dependencies" (include "ragserve.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ragserve.isWorkerEnabled" -}}
{{- if eq (toString .Values.settings.queue.backend) "rabbitmq" }}true{{ end }}
{{- end }}

{{/*
One setting value as an environment string: strings as they are, everything else as JSON (numbers without
an exponent, booleans as true/false, lists and objects as JSON documents pydantic-settings parses).
*/}}
{{- define "ragserve.envValue" -}}
{{- if kindIs "string" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/*
Flattens a settings tree into `RAGSERVE_<SECTION>__<KEY>: "value"` lines, upper case, sorted by key, the way
pydantic-settings reads them (env_prefix RAGSERVE_, env_nested_delimiter __). Null leaves are left out so
the application default applies. Args: prefix ("RAGSERVE_" at the top), values (a map), skip (variable names
to leave out).
*/}}
{{- define "ragserve.envLines" -}}
{{- range $key, $value := .values }}
{{- $name := printf "%s%s" $.prefix (upper $key) }}
{{- if has $name $.skip }}
{{- else if kindIs "map" $value }}
{{- include "ragserve.envLines" (dict "prefix" (printf "%s__" $name) "values" $value "skip" $.skip) }}
{{- else if not (kindIs "invalid" $value) }}
{{ $name }}: {{ include "ragserve.envValue" $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* settings.llm.providers as JSON, with the self-hosted vLLM first when llm.enabled. */}}
{{- define "ragserve.llmProviders" -}}
{{- $providers := list }}
{{- if .Values.llm.enabled }}
{{- $url := printf "http://%s:%d/v1" (include "ragserve.componentName" (dict "root" . "component" "llm")) (int .Values.llm.port) }}
{{- $providers = append $providers (dict "name" "vllm" "kind" "openai_compat" "base_url" $url "model" .Values.llm.servedModelName) }}
{{- end }}
{{- $providers = concat $providers (.Values.settings.llm.providers | default list) }}
{{- toJson $providers }}
{{- end }}

{{/*
The password of a bundled dependency: the one in values, else the one already in the cluster's dependency
Secret (so upgrades keep it), else a new random one. Args: root, key, explicit.
*/}}
{{- define "ragserve.dependencyPassword" -}}
{{- if .explicit }}
{{- .explicit }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace (include "ragserve.dependencySecretName" .root) }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}
{{- end }}

{{/* envFrom of the API and worker containers: the chart's ConfigMap and Secret, then envFromSecrets. */}}
{{- define "ragserve.envFrom" -}}
- configMapRef:
    name: {{ include "ragserve.fullname" . }}
- secretRef:
    name: {{ include "ragserve.fullname" . }}
{{- range .Values.envFromSecrets }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end }}

{{/* Pod-level settings of the API and worker pods. */}}
{{- define "ragserve.podSpecCommon" -}}
serviceAccountName: {{ include "ragserve.serviceAccountName" . }}
automountServiceAccountToken: false
# Service links would put RAGSERVE_* variables (from a Service named ragserve) into the settings' namespace.
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Annotations that restart the API and worker pods when their configuration changes. */}}
{{- define "ragserve.configChecksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}

{{/* Volumes of the API and worker pods: data_dir and a writable /tmp under a read-only root. */}}
{{- define "ragserve.dataVolumes" -}}
- name: tmp
  emptyDir: {}
- name: data
{{- if and .isApi .root.Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ .root.Values.persistence.existingClaim | default (include "ragserve.fullname" .root) }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}

{{- define "ragserve.dataVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: {{ .Values.settings.data_dir }}
{{- end }}

{{/* A bundled dependency's container securityContext; arg: runAsUser. */}}
{{- define "ragserve.dependencySecurityContext" -}}
allowPrivilegeEscalation: false
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
runAsGroup: {{ .runAsUser }}
readOnlyRootFilesystem: {{ .readOnlyRootFilesystem }}
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* Settings combinations that cannot work fail the render with a message naming the values. */}}
{{- define "ragserve.validate" -}}
{{- $settings := .Values.settings }}
{{- if eq (toString $settings.store.backend) "sqlite" }}
{{- if or .Values.api.autoscaling.enabled (gt (int .Values.api.replicaCount) 1) }}
{{- fail "settings.store.backend sqlite keeps the data in one pod's data_dir: set api.replicaCount 1 and api.autoscaling.enabled false, or use store.backend postgres" }}
{{- end }}
{{- end }}
{{- if and (eq (toString $settings.store.backend) "postgres") (not .Values.postgresql.enabled) (not .Values.secretSettings.store.postgres_url) (not .Values.envFromSecrets) }}
{{- fail "settings.store.backend is postgres: set secretSettings.store.postgres_url, enable postgresql, or provide RAGSERVE_STORE__POSTGRES_URL through envFromSecrets" }}
{{- end }}
{{- if and (include "ragserve.isWorkerEnabled" .) (not .Values.rabbitmq.enabled) (not .Values.secretSettings.queue.rabbitmq_url) (not .Values.envFromSecrets) }}
{{- fail "settings.queue.backend is rabbitmq: set secretSettings.queue.rabbitmq_url, enable rabbitmq, or provide RAGSERVE_QUEUE__RABBITMQ_URL through envFromSecrets" }}
{{- end }}
{{- if and .Values.worker.keda.enabled (not (include "ragserve.isWorkerEnabled" .)) }}
{{- fail "worker.keda.enabled needs settings.queue.backend rabbitmq" }}
{{- end }}
{{- end }}
