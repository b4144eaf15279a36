{{- define "moderation.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "moderation.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "moderation.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "moderation.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "moderation.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: moderation
{{- end -}}

{{/* selector labels of one component: include "moderation.selector" (list . "worker") */}}
{{- define "moderation.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "moderation.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/* pods that talk to Kafka, Redis and Triton (workers, the policy and test jobs) */}}
{{- define "moderation.clientLabel" -}}
moderation.io/client: "true"
{{- end -}}

{{- define "moderation.image" -}}
{{- $img := index . 0 -}}
{{- printf "%s:%s" $img.repository (default (index . 1).Chart.AppVersion $img.tag) -}}
{{- end -}}

{{- define "moderation.workerPort" -}}
{{- (.Values.config.worker | default dict).http_port | default 9300 -}}
{{- end -}}

{{- define "moderation.tritonUrl" -}}
{{- $t := .Values.config.triton | default dict -}}
{{- $t.url | default (printf "%s-triton:8001" (include "moderation.fullname" .)) -}}
{{- end -}}

{{/* MODERATION_* environment: config.<section>.<key>, the computed addresses, and the
     secrets, only by reference to existingSecret */}}
{{- define "moderation.env" -}}
{{- range $section, $keys := .Values.config }}
{{- range $key, $value := $keys }}
{{- if and (not (and (eq $section "triton") (eq $key "url"))) (not (and (eq $section "worker") (eq $key "http_host"))) (not (kindIs "invalid" $value)) }}
- name: {{ printf "MODERATION_%s__%s" $section $key | upper }}
  value: {{ if or (kindIs "slice" $value) (kindIs "map" $value) }}{{ toJson $value | quote }}{{ else }}{{ toString $value | quote }}{{ end }}
{{- end }}
{{- end }}
{{- end }}
- name: MODERATION_TRITON__URL
  value: {{ include "moderation.tritonUrl" . | quote }}
- name: MODERATION_WORKER__HTTP_HOST
  value: "0.0.0.0"
{{- with .Values.existingSecret }}
- name: MODERATION_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ . | quote }}, key: {{ $.Values.secretKeys.kafkaSaslPassword | quote }}, optional: true}
- name: MODERATION_REDIS__PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ . | quote }}, key: {{ $.Values.secretKeys.redisPassword | quote }}, optional: true}
{{- end }}
{{- end -}}

{{- define "moderation.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "moderation.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* the worker's guards: replicas never above the input partitions */}}
{{- define "moderation.checks" -}}
{{- $parts := int .Values.worker.inputPartitions -}}
{{- if gt (int .Values.worker.replicas) $parts -}}
{{- fail (printf "worker.replicas (%d) exceeds worker.inputPartitions (%d): the extra workers would own no partition" (int .Values.worker.replicas) $parts) -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.maxReplicas) $parts) -}}
{{- fail (printf "autoscaling.maxReplicas (%d) exceeds worker.inputPartitions (%d): the extra workers would own no partition" (int .Values.autoscaling.maxReplicas) $parts) -}}
{{- end -}}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) -}}
{{- fail "autoscaling.minReplicas exceeds autoscaling.maxReplicas" -}}
{{- end -}}
{{- end -}}

{{- define "moderation.grace" -}}
{{- $drain := (.Values.config.worker | default dict).drain_timeout_s | default 20.0 -}}
{{- $min := add (int (ceil $drain)) 1 -}}
{{- with .Values.worker.terminationGracePeriodSeconds -}}
{{- if lt (int .) $min -}}
{{- fail (printf "worker.terminationGracePeriodSeconds (%d) must exceed config.worker.drain_timeout_s (%v)" (int .) $drain) -}}
{{- end -}}
{{- . -}}
{{- else -}}
{{- add (int (ceil $drain)) 15 -}}
{{- end -}}
{{- end -}}
