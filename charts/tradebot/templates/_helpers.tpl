{{/*
Chart name, truncated to 63 chars (the DNS label limit).
*/}}
{{- define "tradebot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: <release>-<chart> unless the release name already contains the chart name.
*/}}
{{- define "tradebot.fullname" -}}
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

{{/*
chart label value: name-version.
*/}}
{{- define "tradebot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of the release (no component). Usage: include "tradebot.selectorLabels" .
*/}}
{{- define "tradebot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tradebot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels of the release (no component).
*/}}
{{- define "tradebot.labels" -}}
helm.sh/chart: {{ include "tradebot.chart" . }}
{{ include "tradebot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tradebot
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of one component. Usage: include "tradebot.componentSelectorLabels" (dict "root" $ "component" "api")
*/}}
{{- define "tradebot.componentSelectorLabels" -}}
{{ include "tradebot.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Labels of one component. Usage: include "tradebot.componentLabels" (dict "root" $ "component" "api")
*/}}
{{- define "tradebot.componentLabels" -}}
{{ include "tradebot.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Name of one component's resources: <fullname>-<component>.
*/}}
{{- define "tradebot.componentName" -}}
{{- printf "%s-%s" (include "tradebot.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Image references.
*/}}
{{- define "tradebot.imageRef" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag }}
{{- if .image.digest }}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{- define "tradebot.image" -}}
{{- include "tradebot.imageRef" (dict "root" . "image" .Values.image) }}
{{- end }}

{{- define "tradebot.dashboardImage" -}}
{{- include "tradebot.imageRef" (dict "root" . "image" .Values.dashboardImage) }}
{{- end }}

{{/*
Credentials Secret name and whether the chart creates it.
*/}}
{{- define "tradebot.secretName" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecret }}
{{- else }}
{{- include "tradebot.fullname" . }}
{{- end }}
{{- end }}

{{/*
Name of the Secret with bus/store endpoints that the operator hands to strategy pods (envFrom).
*/}}
{{- define "tradebot.sharedEnvSecretName" -}}
{{- if .Values.operator.sharedEnvExistingSecret }}
{{- .Values.operator.sharedEnvExistingSecret }}
{{- else }}
{{- printf "%s-shared-env" (include "tradebot.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "tradebot.kafkaName" -}}
{{- include "tradebot.componentName" (dict "root" . "component" "kafka") }}
{{- end }}

{{- define "tradebot.redisName" -}}
{{- include "tradebot.componentName" (dict "root" . "component" "redis") }}
{{- end }}

{{/*
Kafka bootstrap servers: the in-chart broker or externalKafka.bootstrap.
*/}}
{{- define "tradebot.kafkaBootstrap" -}}
{{- if .Values.kafka.enabled }}
{{- printf "%s:%d" (include "tradebot.kafkaName" .) (int .Values.kafka.port) }}
{{- else }}
{{- required "kafka.enabled=false needs externalKafka.bootstrap (host:port[,host:port])" .Values.externalKafka.bootstrap }}
{{- end }}
{{- end }}

{{/*
Kafka bootstrap servers as a pod in any namespace resolves them (strategy pods may live outside the release's).
*/}}
{{- define "tradebot.kafkaBootstrapFromAnyNamespace" -}}
{{- if .Values.kafka.enabled }}
{{- printf "%s.%s.svc:%d" (include "tradebot.kafkaName" .) .Release.Namespace (int .Values.kafka.port) }}
{{- else }}
{{- include "tradebot.kafkaBootstrap" . }}
{{- end }}
{{- end }}

{{/*
Whether a Redis password is in play (TRADEBOT_REDIS_PASSWORD is set from the credentials Secret).
*/}}
{{- define "tradebot.redisPasswordEnabled" -}}
{{- if .Values.redis.enabled }}
{{- if .Values.redis.auth.enabled }}true{{ end }}
{{- else if and .Values.existingSecret (contains "$(TRADEBOT_REDIS_PASSWORD)" .Values.externalRedis.url) }}true
{{- end }}
{{- end }}

{{/*
Redis URL; may reference $(TRADEBOT_REDIS_PASSWORD), which Kubernetes expands from the env var defined before it.
*/}}
{{- define "tradebot.redisUrl" -}}
{{- if .Values.redis.enabled }}
{{- if .Values.redis.auth.enabled }}
{{- printf "redis://:$(TRADEBOT_REDIS_PASSWORD)@%s:%d/0" (include "tradebot.redisName" .) (int .Values.redis.port) }}
{{- else }}
{{- printf "redis://%s:%d/0" (include "tradebot.redisName" .) (int .Values.redis.port) }}
{{- end }}
{{- else }}
{{- required "redis.enabled=false needs externalRedis.url (redis://host:port/db)" .Values.externalRedis.url }}
{{- end }}
{{- end }}

{{/*
Env entries for the Redis connection (password first so $(TRADEBOT_REDIS_PASSWORD) expands).
*/}}
{{- define "tradebot.redisEnv" -}}
{{- if include "tradebot.redisPasswordEnabled" . }}
- name: TRADEBOT_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "tradebot.secretName" . }}
      key: {{ .Values.existingSecretKeys.redisPassword }}
{{- end }}
- name: TRADEBOT_REDIS_URL
  value: {{ include "tradebot.redisUrl" . | quote }}
{{- if not .Values.redis.enabled }}
{{- if .Values.externalRedis.tls.caInSecret }}
- name: TRADEBOT_REDIS_SSL_CA_PEM
  valueFrom:
    secretKeyRef:
      name: {{ include "tradebot.secretName" . }}
      key: {{ .Values.existingSecretKeys.redisCa }}
{{- else if .Values.externalRedis.tls.ca }}
- name: TRADEBOT_REDIS_SSL_CA_PEM
  value: {{ .Values.externalRedis.tls.ca | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Env entry for the API token.
*/}}
{{- define "tradebot.apiTokenEnv" -}}
- name: TRADEBOT_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "tradebot.secretName" . }}
      key: {{ .Values.existingSecretKeys.apiToken }}
{{- end }}

{{/*
Env shared by every Python service.
*/}}
{{- define "tradebot.commonEnv" -}}
- name: TRADEBOT_HTTP_PORT
  value: {{ .Values.config.httpPort | quote }}
- name: TRADEBOT_METRICS_PORT
  value: {{ .Values.config.metricsPort | quote }}
- name: TRADEBOT_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: TRADEBOT_LOG_JSON
  value: {{ .Values.config.logJson | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}

{{/*
Kafka security (externalKafka.securityProtocol/sasl/tls): the in-chart broker is PLAINTEXT only, and a CA kept in
the credentials Secret needs existingSecret (the chart's own Secret holds no CA: a CA is no secret, so
externalKafka.tls.ca goes into the env as it is).
*/}}
{{- define "tradebot.kafkaSecurityChecked" -}}
{{- $k := .Values.externalKafka }}
{{- if and .Values.kafka.enabled (ne $k.securityProtocol "PLAINTEXT") }}
{{- fail "externalKafka.securityProtocol applies to an external Kafka (kafka.enabled=false): the in-chart broker is PLAINTEXT" }}
{{- end }}
{{- if and $k.tls.caInSecret (not .Values.existingSecret) }}
{{- fail "externalKafka.tls.caInSecret reads the CA from existingSecret: set existingSecret (or give the PEM as externalKafka.tls.ca)" }}
{{- end }}
{{- if and (hasPrefix "SASL_" $k.securityProtocol) (not $k.sasl.username) }}
{{- fail (printf "externalKafka.securityProtocol=%s needs externalKafka.sasl.username" $k.securityProtocol) }}
{{- end }}
{{- if and (hasPrefix "SASL_" $k.securityProtocol) (not .Values.existingSecret) (not $k.sasl.password) }}
{{- fail "externalKafka.sasl.password is empty: set it, or existingSecret with the key existingSecretKeys.kafkaPassword" }}
{{- end }}
{{- range $service, $own := $k.sasl.perService }}
{{- if and $own.username (not $.Values.existingSecret) (not $own.password) }}
{{- fail (printf "externalKafka.sasl.perService.%s.password is empty: set it, or existingSecret with the key %s-%s" $service $.Values.existingSecretKeys.kafkaPassword $service) }}
{{- end }}
{{- end }}
{{- if and .Values.externalRedis.tls.caInSecret (not .Values.existingSecret) }}
{{- fail "externalRedis.tls.caInSecret reads the CA from existingSecret: set existingSecret (or give the PEM as externalRedis.tls.ca)" }}
{{- end }}
{{- end }}

{{- define "tradebot.kafkaEnv" -}}
{{- $root := .root }}
{{- include "tradebot.kafkaSecurityChecked" $root }}
{{- $k := $root.Values.externalKafka }}
{{- /* A service's own user (externalKafka.sasl.perService.<service>) and its password key, else the shared ones. */}}
{{- $own := index $k.sasl.perService .service | default dict }}
{{- $username := $own.username | default $k.sasl.username }}
{{- $passwordKey := $root.Values.existingSecretKeys.kafkaPassword }}
{{- if $own.username }}{{ $passwordKey = printf "%s-%s" $root.Values.existingSecretKeys.kafkaPassword .service }}{{ end }}
- name: TRADEBOT_KAFKA_BOOTSTRAP
  value: {{ include "tradebot.kafkaBootstrap" $root | quote }}
{{- if ne $k.securityProtocol "PLAINTEXT" }}
- name: TRADEBOT_KAFKA_SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
{{- end }}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
- name: TRADEBOT_KAFKA_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
- name: TRADEBOT_KAFKA_SASL_USERNAME
  value: {{ $username | quote }}
- name: TRADEBOT_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "tradebot.secretName" $root }}
      key: {{ $passwordKey }}
{{- end }}
{{- if $k.tls.caInSecret }}
- name: TRADEBOT_KAFKA_SSL_CA_PEM
  valueFrom:
    secretKeyRef:
      name: {{ include "tradebot.secretName" $root }}
      key: {{ $root.Values.existingSecretKeys.kafkaCa }}
{{- else if $k.tls.ca }}
- name: TRADEBOT_KAFKA_SSL_CA_PEM
  value: {{ $k.tls.ca | quote }}
{{- end }}
{{- end }}

{{/*
Pod-level security context, volumes and scheduling shared by every pod.
*/}}
{{- define "tradebot.podSecurityContext" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{- define "tradebot.containerSecurityContext" -}}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end }}

{{/*
Probes of a Python service on the named http port. Usage: include "tradebot.httpProbes" (dict "root" $ "port" "http" "live" "/livez" "ready" "/readyz")
*/}}
{{- define "tradebot.httpProbes" -}}
{{- $p := .root.Values.probes }}
livenessProbe:
  httpGet:
    path: {{ .live }}
    port: {{ .port }}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: {{ .ready }}
    port: {{ .port }}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
startupProbe:
  httpGet:
    path: {{ .live }}
    port: {{ .port }}
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
{{- end }}

{{/*
Scheduling fields of a component. Usage: include "tradebot.scheduling" $values
*/}}
{{- define "tradebot.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "tradebot.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
A generated secret value kept across upgrades: the existing Secret's key, else the given value, else random.
Usage: include "tradebot.secretValue" (dict "root" $ "key" "api-token" "value" .Values.apiToken)
*/}}
{{- define "tradebot.secretValue" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace (include "tradebot.fullname" .root) }}
{{- if .value }}
{{- .value | b64enc }}
{{- else if and $existing (hasKey ($existing.data | default dict) .key) }}
{{- index $existing.data .key }}
{{- else }}
{{- /* Generated once per render and remembered: secret.yaml is rendered again for every pod template's
       checksum/config, and a fresh value each time would roll every Deployment on the first upgrade. */}}
{{- $generated := .root.Values._generatedSecrets | default dict }}
{{- if not (hasKey $generated .key) }}
{{- $_ := set $generated .key (randAlphaNum 40 | b64enc) }}
{{- $_ := set .root.Values "_generatedSecrets" $generated }}
{{- end }}
{{- index $generated .key }}
{{- end }}
{{- end }}

{{/*
RBAC rules from a list of dicts: groups, resources, verbs, optional names (resourceNames), why (a comment).
*/}}
{{- define "tradebot.rbacRules" -}}
{{- range . }}
  # {{ .why }}
  - apiGroups: {{ toJson .groups }}
    resources: {{ toJson .resources }}
    {{- with .names }}
    resourceNames: {{ toJson . }}
    {{- end }}
    verbs: {{ toJson .verbs }}
{{- end }}
{{- end }}
