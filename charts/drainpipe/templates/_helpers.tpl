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

{{/* repository:tag, or repository@digest when a digest is set (a tag next to
     a digest is ignored by the kubelet anyway). */}}
{{- define "drainpipe.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "drainpipe.operatorImage" -}}
{{- include "drainpipe.image" (dict "image" .Values.operator.image "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{- define "drainpipe.ingesterImage" -}}
{{- include "drainpipe.image" (dict "image" .Values.ingester.image "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{/* The operator's --ingester-pod-defaults: the ingester values that are set,
     as JSON (the operator refuses unknown keys). */}}
{{- define "drainpipe.ingesterPodDefaults" -}}
{{- $i := .Values.ingester -}}
{{- $d := dict -}}
{{- with $i.image.pullPolicy }}{{ $_ := set $d "imagePullPolicy" . }}{{ end -}}
{{- with $i.imagePullSecrets }}{{ $_ := set $d "imagePullSecrets" . }}{{ end -}}
{{- with $i.resources }}{{ $_ := set $d "resources" . }}{{ end -}}
{{- with $i.securityContext }}{{ $_ := set $d "securityContext" . }}{{ end -}}
{{- with $i.podSecurityContext }}{{ $_ := set $d "podSecurityContext" . }}{{ end -}}
{{- with $i.nodeSelector }}{{ $_ := set $d "nodeSelector" . }}{{ end -}}
{{- with $i.tolerations }}{{ $_ := set $d "tolerations" . }}{{ end -}}
{{- with $i.affinity }}{{ $_ := set $d "affinity" . }}{{ end -}}
{{- with $i.topologySpreadConstraints }}{{ $_ := set $d "topologySpreadConstraints" . }}{{ end -}}
{{- with $i.priorityClassName }}{{ $_ := set $d "priorityClassName" . }}{{ end -}}
{{- with $i.extraEnv }}{{ $_ := set $d "env" . }}{{ end -}}
{{- toJson $d -}}
{{- end -}}

{{- define "drainpipe.imagePullSecrets" -}}
{{- concat (default list (.Values.global).imagePullSecrets) .Values.imagePullSecrets | uniq | toYaml -}}
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
# delete: a LogDrain switching buffer modes replaces its Deployment by a
# StatefulSet (bufferStorage.persistentVolumeClaim) or back.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# The ingesters' PodDisruptionBudget (replicas > 1), removed at 1.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Buffer claims a scale-down released: a flush Job empties each, then the
# claim is deleted.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "delete"]
# ... and spec.archive.compaction's runs are read (each finished Job's pod
# holds its report as the termination message).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# spec.archive.compaction: the CronJob; delete: it goes when the field does.
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
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
# spec.ingester.autoscaling: the operator's scale decisions (mode operator)
# and the replicas claimed before its apply leaves them out.
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["get", "patch", "update"]
# Mode hpa; delete: the HPA goes when the mode changes.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "create", "patch", "update", "delete"]
{{- end -}}
