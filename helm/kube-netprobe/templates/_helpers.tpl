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

{{/* The namespace of every namespaced object. */}}
{{- define "kube-netprobe.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kube-netprobe.labels" -}}
{{- include "kube-netprobe.labelsWith" (dict "root" . "extra" dict) }}
{{- end }}

{{/* The chart's labels, then the object's own extra labels (argument extra: serviceMonitor.labels
     and the like) and commonLabels, each key once: a key repeated in a mapping makes the
     manifest invalid, so the chart's own labels win, then the object's, then commonLabels. */}}
{{- define "kube-netprobe.labelsWith" -}}
{{- $root := .root -}}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kube-netprobe.selectorLabels" $root }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- $more := merge (dict) (.extra | default dict) ($root.Values.commonLabels | default dict) }}
{{- range list "helm.sh/chart" "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/version" "app.kubernetes.io/managed-by" }}
{{- $_ := unset $more . }}
{{- end }}
{{- with $more }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pods' labels: the selector labels, then podLabels over commonLabels. */}}
{{- define "kube-netprobe.podLabels" -}}
{{ include "kube-netprobe.selectorLabels" . }}
{{- $more := merge (dict) (.Values.podLabels | default dict) (.Values.commonLabels | default dict) }}
{{- $_ := unset $more "app.kubernetes.io/name" }}
{{- $_ = unset $more "app.kubernetes.io/instance" }}
{{- with $more }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kube-netprobe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kube-netprobe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: global.imageRegistry, when set, replaces the repository's registry (its first
     path component when that names a host: it holds a "." or a ":", or is localhost), so that
     a mirror keeps the repository's path. */}}
{{- define "kube-netprobe.image" -}}
{{- $repository := .Values.image.repository }}
{{- $registry := (.Values.global | default dict).imageRegistry }}
{{- if $registry }}
{{- $parts := splitList "/" $repository }}
{{- $first := first $parts }}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) }}
{{- $parts = rest $parts }}
{{- end }}
{{- $repository = printf "%s/%s" (trimSuffix "/" $registry) (join "/" $parts) }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The pod's securityContext: podSecurityContext, with runAsUser, runAsGroup and fsGroup from
     the top-level values where it does not set them (null values leave them unset), and the
     ping_group_range sysctl when ICMP is on. */}}
{{- define "kube-netprobe.podSecurityContext" -}}
{{- $ctx := deepCopy (.Values.podSecurityContext | default dict) }}
{{- if and (not (hasKey $ctx "runAsUser")) (not (kindIs "invalid" .Values.runAsUser)) }}
{{- $_ := set $ctx "runAsUser" .Values.runAsUser }}
{{- end }}
{{- if not (kindIs "invalid" .Values.runAsGroup) }}
{{- if not (hasKey $ctx "runAsGroup") }}{{ $_ := set $ctx "runAsGroup" .Values.runAsGroup }}{{ end }}
{{- /* Makes ephemeral (CSI) volumes writable by the daemon's group. */}}
{{- if not (hasKey $ctx "fsGroup") }}{{ $_ := set $ctx "fsGroup" .Values.runAsGroup }}{{ end }}
{{- end }}
{{- if .Values.icmp.enabled }}
{{- /* Unprivileged ICMP echo sockets for the daemon's group: a namespaced, "safe" sysctl that
       the restricted Pod Security Standard allows; no NET_RAW capability. Without a fixed GID
       the platform picks the group, so every group is admitted: the range applies to this
       pod's network namespace only, where the daemon is the only process. */}}
{{- $range := "0 2147483647" }}
{{- if not (kindIs "invalid" $ctx.runAsGroup) }}{{ $range = printf "%d %d" (int64 $ctx.runAsGroup) (int64 $ctx.runAsGroup) }}{{ end }}
{{- $sysctls := list }}
{{- range ($ctx.sysctls | default list) }}
{{- if ne .name "net.ipv4.ping_group_range" }}{{ $sysctls = append $sysctls . }}{{ end }}
{{- end }}
{{- $_ := set $ctx "sysctls" (append $sysctls (dict "name" "net.ipv4.ping_group_range" "value" $range)) }}
{{- end }}
{{- toYaml $ctx }}
{{- end }}

{{/* The container's securityContext: securityContext, with runAsUser and runAsGroup from the
     top-level values where it does not set them (null values leave them unset). */}}
{{- define "kube-netprobe.securityContext" -}}
{{- $ctx := deepCopy (.Values.securityContext | default dict) }}
{{- if and (not (hasKey $ctx "runAsUser")) (not (kindIs "invalid" .Values.runAsUser)) }}
{{- $_ := set $ctx "runAsUser" .Values.runAsUser }}
{{- end }}
{{- if and (not (hasKey $ctx "runAsGroup")) (not (kindIs "invalid" .Values.runAsGroup)) }}
{{- $_ := set $ctx "runAsGroup" .Values.runAsGroup }}
{{- end }}
{{- toYaml $ctx }}
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

{{/* "true" when the pod IP watch is on, which needs list and watch on pods (every namespace) and
     nodes. */}}
{{- define "kube-netprobe.podIPsEnabled" -}}
{{- $podIPs := .Values.config.pod_ips | default dict }}
{{- if $podIPs.enabled }}true{{ end }}
{{- end }}

{{/* Whether the Prometheus Operator objects are rendered: enabled, and the API exists or the
     check is off. Argument: the serviceMonitor or prometheusRule values, then the root. */}}
{{- define "kube-netprobe.monitoringAPI" -}}
{{- if or (not .values.onlyIfAPIExists) (.root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}true{{ end }}
{{- end }}

{{/* The daemon's config file: config from the values, plus what the chart owns. */}}
{{- define "kube-netprobe.config" -}}
{{- $c := deepCopy (.Values.config | default dict) }}
{{- $_ := set $c "listen" (printf "[::]:%d" (int .Values.metricsPort)) }}
{{- $_ = set $c "node_name" "${NODE_NAME}" }}
{{- $peers := get $c "peers" | default dict }}
{{- $_ = set $peers "port" (int .Values.metricsPort) }}
{{- if not (hasKey $peers "discovery") }}
{{- $_ = set $peers "discovery" (dict "kubernetes" (dict "namespace" "${POD_NAMESPACE}" "selector" (include "kube-netprobe.selector" .))) }}
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

{{/* The repair controller's name (its Deployment, ServiceAccount, Service and RBAC objects). */}}
{{- define "kube-netprobe.repairName" -}}
{{- printf "%s-repair" (include "kube-netprobe.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{/* The repair pod's selector labels: a name of its own, so that the DaemonSet's selector, its
     Service and the daemon's peer discovery (all by kube-netprobe.selectorLabels) never pick
     the repair pod up as a prober. */}}
{{- define "kube-netprobe.repairSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-repair" (include "kube-netprobe.name" . | trunc 56 | trimSuffix "-") }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The repair pod's labels: its selector labels and component, then repair.podLabels over
     commonLabels. */}}
{{- define "kube-netprobe.repairPodLabels" -}}
{{ include "kube-netprobe.repairSelectorLabels" . }}
app.kubernetes.io/component: repair
{{- $more := merge (dict) (.Values.repair.podLabels | default dict) (.Values.commonLabels | default dict) }}
{{- range list "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/component" }}
{{- $_ := unset $more . }}
{{- end }}
{{- with $more }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The label selector of the DaemonSet's pods as `repair --netprobe-selector` takes it. */}}
{{- define "kube-netprobe.selector" -}}
{{- printf "app.kubernetes.io/name=%s,app.kubernetes.io/instance=%s" (include "kube-netprobe.name" .) .Release.Name }}
{{- end }}

{{/* The repair pod's securityContext: podSecurityContext with runAsUser and runAsGroup from the
     top-level values where it does not set them (null leaves them unset), like the DaemonSet's,
     without the chart's ICMP sysctl: it sends no ICMP. */}}
{{- define "kube-netprobe.repairPodSecurityContext" -}}
{{- $ctx := deepCopy (.Values.podSecurityContext | default dict) }}
{{- if and (not (hasKey $ctx "runAsUser")) (not (kindIs "invalid" .Values.runAsUser)) }}
{{- $_ := set $ctx "runAsUser" .Values.runAsUser }}
{{- end }}
{{- if and (not (hasKey $ctx "runAsGroup")) (not (kindIs "invalid" .Values.runAsGroup)) }}
{{- $_ := set $ctx "runAsGroup" .Values.runAsGroup }}
{{- end }}
{{- toYaml $ctx }}
{{- end }}
