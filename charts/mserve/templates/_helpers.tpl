{{/* Names and labels shared by every template. */}}

{{- define "mserve.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mserve.operatorName" -}}
{{- printf "%s-operator" (include "mserve.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mserve.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mserve.imageTag" -}}
{{- default .Chart.AppVersion .Values.images.tag -}}
{{- end -}}

{{- define "mserve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mserve
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ include "mserve.selectorLabels" . }}
{{- end -}}

{{- define "mserve.selectorLabels" -}}
app.kubernetes.io/name: mserve-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Namespaces the operator watches, as a list; empty means the whole cluster. */}}
{{- define "mserve.clusterWide" -}}
{{- if not .Values.operator.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/* Globs of the runtime images a ModelService may name, as a list: the allowlist, else the
install's own runtime images at its tag. The operator and the admission policy get the same. */}}
{{- define "mserve.runtimeAllowlist" -}}
{{- $tag := include "mserve.imageTag" . -}}
{{- $own := list (printf "%s:%s" .Values.images.runtime $tag) (printf "%s:%s" .Values.images.runtimeGpu $tag) -}}
{{- default $own .Values.images.runtimeAllowlist | toJson -}}
{{- end -}}

{{/* NetworkPolicy peers allowed to the runtime pods' admin port (JSON): the scraper, and the
operator's own pods when it meters usage (usage.intervalSeconds > 0). */}}
{{- define "mserve.runtimeScrapers" -}}
{{- $peers := .Values.networkPolicy.scraper | default list -}}
{{- if gt (float64 .Values.usage.intervalSeconds) 0.0 -}}
{{- $operator := dict "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" .Release.Namespace)) "podSelector" (dict "matchLabels" (include "mserve.selectorLabels" . | fromYaml)) -}}
{{- $peers = append $peers $operator -}}
{{- end -}}
{{- $peers | toJson -}}
{{- end -}}
