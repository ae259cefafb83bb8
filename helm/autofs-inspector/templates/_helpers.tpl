{{/* Chart name, or nameOverride. */}}
{{- define "autofs-inspector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "autofs-inspector.fullname" -}}
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

{{/* Selector labels (stable across upgrades). */}}
{{- define "autofs-inspector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "autofs-inspector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end }}

{{/* Labels of every object. */}}
{{- define "autofs-inspector.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "autofs-inspector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: autofs-inspector
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "autofs-inspector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "autofs-inspector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "autofs-inspector.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret holding the server certificate, key and client CA. */}}
{{- define "autofs-inspector.tlsSecretName" -}}
{{- if .Values.tls.existingSecret }}
{{- .Values.tls.existingSecret }}
{{- else }}
{{- printf "%s-tls" (include "autofs-inspector.fullname" .) }}
{{- end }}
{{- end }}

{{/* host:port for a listener. */}}
{{- define "autofs-inspector.addr" -}}
{{- $host := .root.Values.agent.bindAddress }}
{{- if contains ":" $host }}
{{- printf "[%s]:%v" $host .port }}
{{- else }}
{{- printf "%s:%v" $host .port }}
{{- end }}
{{- end }}

{{/* The agent container's securityContext: .Values.securityContext plus appArmor.* and seLinux.*. */}}
{{- define "autofs-inspector.containerSecurityContext" -}}
{{- $sc := deepCopy .Values.securityContext }}
{{- $aa := dict "type" .Values.appArmor.type }}
{{- if eq .Values.appArmor.type "Localhost" }}
{{- $_ := set $aa "localhostProfile" .Values.appArmor.localhostProfile }}
{{- end }}
{{- $_ := set $sc "appArmorProfile" $aa }}
{{- if .Values.seLinux.enabled }}
{{- $_ := set $sc "seLinuxOptions" (dict "type" .Values.seLinux.type) }}
{{- end }}
{{- toYaml $sc }}
{{- end }}

{{/* Whether the AppArmor profile loader DaemonSet is rendered. */}}
{{- define "autofs-inspector.apparmorLoader" -}}
{{- if and (eq .Values.appArmor.type "Localhost") .Values.appArmor.loader.enabled }}true{{ end }}
{{- end }}

{{/* Selector labels of the AppArmor profile loader. */}}
{{- define "autofs-inspector.loaderSelectorLabels" -}}
app.kubernetes.io/name: {{ include "autofs-inspector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: apparmor-loader
{{- end }}

{{/* Labels of the AppArmor profile loader's objects. */}}
{{- define "autofs-inspector.loaderLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "autofs-inspector.loaderSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: autofs-inspector
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Render-time checks of combinations the schema cannot express. */}}
{{- define "autofs-inspector.validate" -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) (not .Values.tls.generate) }}
{{- fail "tls.enabled=true needs certificates: set tls.existingSecret to a Secret with tls.crt, tls.key and ca.crt (e.g. from cert-manager), or set tls.generate=true to let the chart create a CA and certificates" }}
{{- end }}
{{- if and .Values.tls.existingSecret .Values.tls.generate }}
{{- fail "tls.existingSecret and tls.generate=true are mutually exclusive: use your Secret, or let the chart generate one" }}
{{- end }}
{{- if and (not .Values.tls.enabled) (or .Values.tls.existingSecret .Values.tls.generate) }}
{{- fail "tls.existingSecret or tls.generate is set but tls.enabled=false: set tls.enabled=true to serve TLS" }}
{{- end }}
{{- if and (include "autofs-inspector.apparmorLoader" .) (ne .Values.appArmor.localhostProfile "autofs-inspector-agent") }}
{{- fail (printf "appArmor.localhostProfile=%s, but appArmor.loader loads the chart's profile, named autofs-inspector-agent: keep that name, or set appArmor.loader.enabled=false and load your profile with your node tooling" .Values.appArmor.localhostProfile) }}
{{- end }}
{{- $ports := list .Values.ports.grpc .Values.ports.metrics }}
{{- if .Values.tls.enabled }}{{- $ports = append $ports .Values.ports.health }}{{- end }}
{{- if ne (len $ports) (len (uniq $ports)) }}
{{- fail (printf "ports.grpc, ports.metrics and ports.health must differ (got %v)" $ports) }}
{{- end }}
{{- end }}
