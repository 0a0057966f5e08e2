{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "arc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's resources. */}}
{{- define "arc.fullname" -}}
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

{{/* chart label value */}}
{{- define "arc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels selecting the controller's pods. */}}
{{- define "arc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "arc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "arc.labels" -}}
helm.sh/chart: {{ include "arc.chart" . }}
{{ include "arc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: aws-recovery-controller
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Name of the ServiceAccount. */}}
{{- define "arc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "arc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name and namespace of the leader-election Lease. */}}
{{- define "arc.leaseName" -}}
{{- default .Release.Name .Values.leaderElection.leaseName }}
{{- end }}
{{- define "arc.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.leaseNamespace }}
{{- end }}

{{/* The image reference. */}}
{{- define "arc.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The controller's rules on the objects it watches, as a ClusterRole's (all namespaces)
or as each watched namespace's Role. Least privilege, from what the controller calls:
- RecoveryPolicy: written by people; the controller reads it and writes only /status.
- Incident: created by the controller, patched (escalation), status written.
- RecoveryPlan: created by the controller (the spec is immutable), status written.
- Events (core and events.k8s.io): created, then patched as a series repeats.
- Secrets: alert credentials referenced by name from policies; get only, never
  list/watch, optionally limited to rbac.secretNames.
*/}}
{{- define "arc.rules" -}}
- apiGroups: ["recovery.dev"]
  resources: ["recoverypolicies"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["recovery.dev"]
  resources: ["recoverypolicies/status"]
  verbs: ["get", "patch", "update"]
# delete: history retention removes finished incidents and their plans.
- apiGroups: ["recovery.dev"]
  resources: ["incidents"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["recovery.dev"]
  resources: ["incidents/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["recovery.dev"]
  resources: ["recoveryplans"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["recovery.dev"]
  resources: ["recoveryplans/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
  {{- with .Values.rbac.secretNames }}
  resourceNames:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
