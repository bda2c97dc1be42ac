{{- define "drainpipe.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "drainpipe.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "drainpipe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "drainpipe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "drainpipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "drainpipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "drainpipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "drainpipe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "drainpipe.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{- define "drainpipe.ingesterImage" -}}
{{- printf "%s:%s" .Values.ingester.image.repository (default .Chart.AppVersion .Values.ingester.image.tag) -}}
{{- end -}}

{{/* The operator's permissions on LogDrains and the objects it owns; used by
     the ClusterRole and by each per-namespace Role. */}}
{{- define "drainpipe.rules" -}}
- apiGroups: ["drainpipe.dev"]
  resources: ["logdrains"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["drainpipe.dev"]
  resources: ["logdrains/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["drainpipe.dev"]
  resources: ["logdrains/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets", "services"]
  verbs: ["get", "list", "watch", "create", "patch", "update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# ArchiveFresh: the ingester pods' IPs, to read their /metrics.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
# spec.endpoint.ingress; delete: the Ingress goes when the field does.
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
{{- end -}}
