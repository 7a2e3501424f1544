{{/* Names, labels and the parts every pod of the chart shares. */}}

{{- define "merlin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's prefix for every object; a release named after the chart is not doubled. */}}
{{- define "merlin.fullname" -}}
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

{{/* The three APIs: their command, ports (as merlin's settings default them) and variable prefix. */}}
{{- define "merlin.apis" -}}
writeApi: {name: write-api, prefix: WRITE_API, port: 8081, metricsPort: 9103}
readApi: {name: read-api, prefix: READ_API, port: 8082, metricsPort: 9104}
adminApi: {name: admin-api, prefix: ADMIN_API, port: 8083, metricsPort: 9105}
{{- end }}

{{- define "merlin.forwarderPort" -}}9102{{- end }}

{{/* Labels of an object of a part: (dict "root" $ "component" "write-api"). */}}
{{- define "merlin.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "merlin.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: merlin
{{- end }}

{{- define "merlin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "merlin.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "merlin.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
{{- end }}

{{/* An environment variable read from the Secret: (dict "root" $ "name" "MERLIN_..." "key" "..."). */}}
{{- define "merlin.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.existingSecret }}
      key: {{ .key }}
{{- end }}

{{/* Where a Kafka client connects and who it is: (dict "root" $ "user" NAME "passwordKey" KEY "mechanism" M). */}}
{{- define "merlin.kafkaEnv" -}}
{{- $kafka := .root.Values.kafka -}}
- name: MERLIN_KAFKA_BOOTSTRAP_SERVERS
  value: {{ $kafka.bootstrapServers | quote }}
- name: MERLIN_KAFKA_SECURITY_PROTOCOL
  value: {{ $kafka.securityProtocol | quote }}
- name: MERLIN_KAFKA_PARTITIONS
  value: {{ $kafka.partitions | quote }}
- name: MERLIN_KAFKA_REPLICATION_FACTOR
  value: {{ $kafka.replicationFactor | quote }}
{{- if $kafka.minInsyncReplicas }}
- name: MERLIN_KAFKA_MIN_INSYNC_REPLICAS
  value: {{ $kafka.minInsyncReplicas | quote }}
{{- end }}
{{- $client := deepCopy $kafka.clientConfig }}
{{- if $kafka.tls.caSecret }}
{{- $_ := set $client "ssl.ca.location" (printf "/etc/merlin/kafka-ca/%s" $kafka.tls.caKey) }}
{{- end }}
{{- $fromSecret := include "merlin.secretEnvNames" .root | fromJsonArray }}
{{- if has "MERLIN_KAFKA_CLIENT_CONFIG" $fromSecret }}
{{- if $kafka.clientConfig }}
{{- fail "extraSecretEnv reads MERLIN_KAFKA_CLIENT_CONFIG from the Secret: put kafka.clientConfig's properties in that JSON and leave kafka.clientConfig empty" }}
{{- end }}
{{- else if $client }}
- name: MERLIN_KAFKA_CLIENT_CONFIG
  value: {{ toJson $client | quote }}
{{- end }}
{{- if hasPrefix "SASL_" $kafka.securityProtocol }}
- name: MERLIN_KAFKA_SASL_MECHANISM
  value: {{ .mechanism | default $kafka.saslMechanism | quote }}
- name: MERLIN_KAFKA_SASL_USERNAME
  value: {{ .user | quote }}
{{ include "merlin.secretEnv" (dict "root" .root "name" "MERLIN_KAFKA_SASL_PASSWORD" "key" .passwordKey) }}
{{- end }}
{{- end }}

{{/* How the APIs verify callers' tokens. */}}
{{- define "merlin.authEnv" -}}
{{- $auth := .Values.auth -}}
{{- if $auth.jwksUrl -}}
- name: MERLIN_AUTH_JWKS_URL
  value: {{ $auth.jwksUrl | quote }}
{{- else -}}
{{ include "merlin.secretEnv" (dict "root" . "name" "MERLIN_AUTH_JWT_SECRET" "key" .Values.secretKeys.authJwtSecret) }}
{{- end }}
- name: MERLIN_AUTH_AUDIENCE
  value: {{ $auth.audience | quote }}
- name: MERLIN_AUTH_ISSUER
  value: {{ $auth.issuer | quote }}
{{- end }}

{{/* The read store: its URL (with a password) from the Secret. */}}
{{- define "merlin.readStoreEnv" -}}
{{ include "merlin.secretEnv" (dict "root" . "name" "MERLIN_READ_STORE_URL" "key" .Values.secretKeys.readStoreUrl) }}
{{- if .Values.readStore.dbSchema }}
- name: MERLIN_READ_STORE_DB_SCHEMA
  value: {{ .Values.readStore.dbSchema | quote }}
{{- end }}
{{- end }}

{{/* What the admin API and the forwarder share: the endpoints' Fernet keys and file, the forwarder's group. */}}
{{- define "merlin.endpointsEnv" -}}
{{ include "merlin.secretEnv" (dict "root" . "name" "MERLIN_ENDPOINTS_SECRET_KEYS" "key" .Values.secretKeys.endpointsSecretKeys) }}
{{- if .Values.endpoints.existingSecret }}
- name: MERLIN_ENDPOINTS_FILE
  value: {{ printf "/etc/merlin/endpoints/%s" .Values.endpoints.key | quote }}
{{- end }}
- name: MERLIN_FORWARDER_GROUP_ID
  value: {{ .Values.forwarder.groupId | quote }}
{{- end }}

{{/* The names extraSecretEnv reads from the Secret, as a JSON list. */}}
{{- define "merlin.secretEnvNames" -}}
{{- $names := list }}
{{- range .Values.extraSecretEnv }}{{- $names = append $names .name }}{{- end }}
{{- toJson $names }}
{{- end }}

{{/* The operator's own settings, the part's over the chart-wide ones, then those read from the
Secret (extraSecretEnv): (dict "root" $ "env" PART_ENV). */}}
{{- define "merlin.extraEnv" -}}
{{- $env := merge (deepCopy (.env | default dict)) (deepCopy .root.Values.env) }}
{{- range $name, $value := $env }}
{{- $text := toString $value }}
{{- /* Helm reads numbers as floats, which print 604800000 as 6.048e+08: whole ones print whole. */}}
{{- if and (kindIs "float64" $value) (eq $value (floor $value)) }}
{{- $text = printf "%.0f" $value }}
{{- end }}
- name: {{ $name }}
  value: {{ $text | quote }}
{{- end }}
{{- range .root.Values.extraSecretEnv }}
{{- if hasKey $env .name }}
{{- fail (printf "%s is both in env and in extraSecretEnv" .name) }}
{{- end }}
{{ include "merlin.secretEnv" (dict "root" $.root "name" .name "key" .key) }}
{{- end }}
{{- end }}

{{/* What every pod of the chart has: no API token, no service links, a non-root user, scheduling. */}}
{{- define "merlin.podSpec" -}}
# merlin never calls the Kubernetes API.
automountServiceAccountToken: false
# Service links would set MERLIN_<SERVICE>_PORT=tcp://... for the chart's own Services, the names of
# merlin's port settings.
enableServiceLinks: false
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
securityContext:
  runAsNonRoot: true
  # The image's user (docker/Dockerfile).
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "merlin.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* /tmp is the one writable path: the processes of an API's --workers keep their metrics files there
(prometheus_client's multiprocess mode, in a tempfile.mkdtemp folder). */}}
{{- define "merlin.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
    items:
      - key: {{ .Values.kafka.tls.caKey }}
        path: {{ .Values.kafka.tls.caKey }}
{{- end }}
{{- end }}

{{- define "merlin.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: /etc/merlin/kafka-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "merlin.endpointsVolume" -}}
{{- if .Values.endpoints.existingSecret }}
- name: endpoints
  secret:
    secretName: {{ .Values.endpoints.existingSecret }}
    items:
      - key: {{ .Values.endpoints.key }}
        path: {{ .Values.endpoints.key }}
{{- end }}
{{- end }}

{{- define "merlin.endpointsVolumeMount" -}}
{{- if .Values.endpoints.existingSecret }}
- name: endpoints
  mountPath: /etc/merlin/endpoints
  readOnly: true
{{- end }}
{{- end }}

{{/* Liveness and start-up on a port of the container, readiness on the same or another:
(dict "root" $ "port" NAME "readinessPort" NAME). */}}
{{- define "merlin.probes" -}}
{{- $probes := .root.Values.probes -}}
{{- $readinessPort := .readinessPort | default .port -}}
startupProbe:
  httpGet: {path: {{ $probes.liveness.path }}, port: {{ .port }}}
  periodSeconds: {{ $probes.startup.periodSeconds }}
  timeoutSeconds: {{ $probes.startup.timeoutSeconds }}
  failureThreshold: {{ $probes.startup.failureThreshold }}
livenessProbe:
  httpGet: {path: {{ $probes.liveness.path }}, port: {{ .port }}}
  periodSeconds: {{ $probes.liveness.periodSeconds }}
  timeoutSeconds: {{ $probes.liveness.timeoutSeconds }}
  failureThreshold: {{ $probes.liveness.failureThreshold }}
readinessProbe:
  httpGet: {path: {{ $probes.readiness.path }}, port: {{ $readinessPort }}}
  periodSeconds: {{ $probes.readiness.periodSeconds }}
  timeoutSeconds: {{ $probes.readiness.timeoutSeconds }}
  failureThreshold: {{ $probes.readiness.failureThreshold }}
{{- end }}

{{/* Prometheus's pod annotations, when on: (dict "root" $ "port" NUMBER). */}}
{{- define "merlin.scrapeAnnotations" -}}
{{- if .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}
