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

{{/*
The namespaces the operator reconciles when not cluster-wide:
watchNamespaces, or the release namespace when that is empty.
*/}}
{{- define "modelpub.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- join "," .Values.watchNamespaces }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
The operator's rules on namespaced resources: exactly the API requests its
reconcilers make (modelpub_operator::rbac::REQUIRED, Scope::Watched,
checked against every request in the operator's mocked-API scenarios) plus
the finalizers updates that OwnerReferencesPermissionEnforcement checks for
blockOwnerDeletion. Granted by the ClusterRole with rbac.clusterWide, else
by a Role in each watched namespace (role.yaml).
e2e/tests/helm_chart.rs fails on any difference.
*/}}
{{- define "modelpub.watchedRules" }}
  # The custom resources it reconciles; finalizers are added and removed by
  # PATCH, status is written by server-side apply.
  - apiGroups: ["modelpub.io"]
    resources: ["trustdomains"]
    verbs: ["get", "list", "watch", "patch"]
  - apiGroups: ["modelpub.io"]
    resources: ["computeoffers"]
    verbs: ["list", "watch", "patch"]
  # get: the federation endpoint reads the round a member joins.
  - apiGroups: ["modelpub.io"]
    resources: ["federationrounds"]
    verbs: ["get", "list", "watch", "patch"]
  - apiGroups: ["modelpub.io"]
    resources: ["trustdomains/status", "computeoffers/status", "federationrounds/status"]
    verbs: ["patch"]
  - apiGroups: ["modelpub.io"]
    resources: ["trustdomains/finalizers", "federationrounds/finalizers"]
    verbs: ["update"]
  # Identities and CAs (created only when missing, deleted with their
  # TrustDomain) and the per-party Secrets of a round.
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["get", "list", "watch", "create", "delete"]
  # What it builds for a round (create: a member's registration, kept as
  # first made).
  - apiGroups: [""]
    resources: ["configmaps"]
    verbs: ["list", "create", "patch", "delete"]
  - apiGroups: [""]
    resources: ["services"]
    verbs: ["patch", "delete"]
  - apiGroups: ["apps"]
    resources: ["deployments"]
    verbs: ["list", "watch", "patch", "delete"]
  - apiGroups: ["batch"]
    resources: ["jobs"]
    verbs: ["list", "watch", "patch", "delete"]
  - apiGroups: ["networking.k8s.io"]
    resources: ["networkpolicies"]
    verbs: ["patch", "delete"]
  # Participant pods that failed count as dropouts.
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["list"]
  # Events on the resources it reconciles.
  - apiGroups: ["events.k8s.io"]
    resources: ["events"]
    verbs: ["create", "patch"]
{{- end }}

{{/*
Namespaces each round's NetworkPolicy admits to the aggregator's metrics
and /status port: the release namespace (the operator reads /status) and
networkPolicy.roundMetricsFrom.namespaces (Prometheus's).
*/}}
{{- define "modelpub.roundMetricsFrom" -}}
{{- join "," (uniq (prepend .Values.networkPolicy.roundMetricsFrom.namespaces .Release.Namespace)) }}
{{- end }}
