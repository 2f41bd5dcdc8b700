{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "kube-netprobe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, plus the chart name unless the release name holds it. */}}
{{- define "kube-netprobe.fullname" -}}
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

{{- define "kube-netprobe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-netprobe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kube-netprobe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kube-netprobe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kube-netprobe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kube-netprobe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kube-netprobe.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" when peers are discovered from the Kubernetes API (the chart's default), which needs
     RBAC on this namespace's pods and on the nodes. */}}
{{- define "kube-netprobe.kubernetesDiscovery" -}}
{{- $peers := .Values.config.peers | default dict }}
{{- if not (hasKey $peers "discovery") }}true
{{- else if and (kindIs "map" $peers.discovery) (hasKey $peers.discovery "kubernetes") }}true
{{- end }}
{{- end }}

{{/* The namespace of the CoreDNS pods when config.dns.discover_coredns is set (their watch needs a
     Role there), else empty. */}}
{{- define "kube-netprobe.corednsNamespace" -}}
{{- $dns := .Values.config.dns | default dict }}
{{- with $dns.discover_coredns }}{{ .namespace }}{{ end }}
{{- end }}

{{/* "true" when the CSI registration watch is on, which needs RBAC on CSIDrivers and CSINodes. */}}
{{- define "kube-netprobe.csiEnabled" -}}
{{- $csi := .Values.config.csi | default dict }}
{{- if or (not (hasKey $csi "enabled")) $csi.enabled }}true{{ end }}
{{- end }}

{{/* Whether the Prometheus Operator objects are rendered: enabled, and the API exists or the
     check is off. Argument: the serviceMonitor or prometheusRule values, then the root. */}}
{{- define "kube-netprobe.monitoringAPI" -}}
{{- if or (not .values.onlyIfAPIExists) (.root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}true{{ end }}
{{- end }}

{{/* The daemon's config file: config from the values, plus what the chart owns. */}}
{{- define "kube-netprobe.config" -}}
{{- $c := deepCopy (.Values.config | default dict) }}
{{- $_ := set $c "listen" (printf "0.0.0.0:%d" (int .Values.metricsPort)) }}
{{- $_ = set $c "node_name" "${NODE_NAME}" }}
{{- $peers := get $c "peers" | default dict }}
{{- $_ = set $peers "port" (int .Values.metricsPort) }}
{{- if not (hasKey $peers "discovery") }}
{{- $selector := printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s" (include "kube-netprobe.name" .) .Release.Name }}
{{- $_ = set $peers "discovery" (dict "kubernetes" (dict "namespace" "${POD_NAMESPACE}" "selector" $selector)) }}
{{- end }}
{{- if and (not .Values.icmp.enabled) (hasKey $peers "protocols") }}
{{- $_ = set $peers "protocols" (without $peers.protocols "icmp") }}
{{- end }}
{{- $_ = set $c "peers" $peers }}
{{- $storage := get $c "storage" | default dict }}
{{- $volumes := list }}
{{- range .Values.storage.volumes }}
{{- $v := dict "name" .name "path" (printf "/var/lib/kube-netprobe/%s" .name) }}
{{- if hasKey . "size" }}{{ $_ = set $v "size" .size }}{{ end }}
{{- if hasKey . "blockSize" }}{{ $_ = set $v "block_size" .blockSize }}{{ end }}
{{- if hasKey . "directIO" }}{{ $_ = set $v "direct_io" .directIO }}{{ end }}
{{- $volumes = append $volumes $v }}
{{- end }}
{{- $_ = set $storage "volumes" $volumes }}
{{- $_ = set $c "storage" $storage }}
{{- toYaml $c }}
{{- end }}
