{{/* Names and labels. */}}
{{- define "lkps.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lkps.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "lkps.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "lkps.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "lkps.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lkps.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lkps.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "lkps.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lkps.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Where the Secrets' and ConfigMaps' files are mounted. */}}
{{- define "lkps.auditKeysDir" -}}/run/secrets/lkps-audit{{- end }}
{{- define "lkps.entraDir" -}}/run/secrets/lkps-entra{{- end }}
{{- define "lkps.authzDir" -}}/etc/lkps/authz{{- end }}
{{- define "lkps.caDir" -}}/etc/lkps/ca{{- end }}

{{/* A setting that must be given: fails the render naming the variable. */}}
{{- define "lkps.requireSetting" -}}
{{- $value := index .config .name | default "" | toString }}
{{- if not $value }}
{{- fail (printf "config.%s is required (docs/deployment.md)" .name) }}
{{- end }}
{{- end }}

{{/*
The pods' security context and the container's: non-root, no privilege, read-only root
filesystem (the image writes only under /tmp, an emptyDir).
*/}}
{{- define "lkps.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "lkps.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
{{- end }}

{{- define "lkps.databaseUrlEnv" -}}
- name: LKPS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.name }}
      key: {{ .Values.secrets.databaseUrlKey }}
{{- end }}

{{/*
The serving container's environment: `config` as given, the chart's own bind settings,
then every secret from the Secrets (values or files), never from values.
*/}}
{{- define "lkps.env" -}}
{{- $config := .Values.config }}
{{- range $name := list "LKPS_LIVEKIT_URL" "LKPS_LIVEKIT_API_KEY" "LKPS_ENTRA_TENANT_ID" "LKPS_ENTRA_AUDIENCES" }}
{{- include "lkps.requireSetting" (dict "config" $config "name" $name) }}
{{- end }}
{{- if ne .Values.secrets.entraCredential "none" }}
{{- include "lkps.requireSetting" (dict "config" $config "name" "LKPS_ENTRA_CLIENT_ID") }}
{{- end }}
{{- range $name, $value := $config }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
- name: LKPS_HOST
  value: "0.0.0.0"
- name: LKPS_PORT
  value: {{ .Values.ports.http | quote }}
- name: LKPS_METRICS_HOST
  value: "0.0.0.0"
- name: LKPS_METRICS_PORT
  value: {{ .Values.ports.metrics | quote }}
- name: LKPS_LIVEKIT_API_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.name }}
      key: {{ .Values.secrets.livekitApiSecretKey }}
{{ include "lkps.databaseUrlEnv" . }}
{{- if eq .Values.secrets.entraCredential "secret" }}
- name: LKPS_ENTRA_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.name }}
      key: {{ .Values.secrets.entraClientSecretKey }}
{{- else if eq .Values.secrets.entraCredential "certificate" }}
- name: LKPS_ENTRA_CLIENT_CERTIFICATE_PATH
  value: {{ printf "%s/%s" (include "lkps.entraDir" .) .Values.secrets.entraClientCertificateKey | quote }}
{{- end }}
{{- if .Values.secrets.redisUrlKey }}
- name: LKPS_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.name }}
      key: {{ .Values.secrets.redisUrlKey }}
{{- end }}
- name: LKPS_AUDIT_KEY_FILE
  value: {{ printf "%s/%s" (include "lkps.auditKeysDir" .) .Values.auditKeys.auditKeyKey | quote }}
- name: LKPS_AUDIT_SIGNING_KEY
  value: {{ printf "%s/%s" (include "lkps.auditKeysDir" .) .Values.auditKeys.signingKeyKey | quote }}
{{- with .Values.auditKeys.previousKeyKeys }}
{{- $dir := include "lkps.auditKeysDir" $ }}
{{- $paths := list }}
{{- range . }}{{ $paths = append $paths (printf "%s/%s" $dir .) }}{{ end }}
- name: LKPS_AUDIT_PREVIOUS_KEY_FILES
  value: {{ join "," $paths | quote }}
{{- end }}
{{- if .Values.authzFile.configMap }}
- name: LKPS_AUTHZ_FILE
  value: {{ printf "%s/%s" (include "lkps.authzDir" .) .Values.authzFile.key | quote }}
{{- end }}
{{- if .Values.caBundle.configMap }}
- name: LKPS_TLS_CA_BUNDLE
  value: {{ printf "%s/%s" (include "lkps.caDir" .) .Values.caBundle.key | quote }}
{{- end }}
{{- end }}
