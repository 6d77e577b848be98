{{/*
Names and labels shared by every template. Every object carries the six
app.kubernetes.io/* recommended labels; selectors use only the stable ones
(name, instance, component) so an upgrade never changes a selector.
*/}}

{{- define "modelpub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelpub.fullname" -}}
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

{{/* The operator's objects: <fullname>-operator. */}}
{{- define "modelpub.operatorName" -}}
{{- printf "%s-operator" (include "modelpub.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelpub.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelpub.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Selector labels for the operator pods (never change across upgrades). */}}
{{- define "modelpub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelpub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
All recommended labels. Call with (dict "ctx" $ "component" "operator").
*/}}
{{- define "modelpub.labels" -}}
app.kubernetes.io/name: {{ include "modelpub.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: modelpub
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* repository@digest when a digest is given, else repository:tag. */}}
{{- define "modelpub.image" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository (default .appVersion .tag) }}
{{- end }}
{{- end }}

{{- define "modelpub.operatorImage" -}}
{{- include "modelpub.image" (merge (dict "appVersion" .Chart.AppVersion) .Values.operator.image) }}
{{- end }}

{{- define "modelpub.nodeAgentImage" -}}
{{- include "modelpub.image" (merge (dict "appVersion" .Chart.AppVersion) .Values.nodeAgent.image) }}
{{- end }}
