{{/*
A Deployment of one Python service. Usage:
  include "tradebot.deployment" (dict "root" $ "component" "api" "values" .Values.api "image" (include "tradebot.image" $)
    "pullPolicy" .Values.image.pullPolicy "args" (list "api") "ports" (list (dict "name" "http" "containerPort" 8080))
    "env" $envYaml "probes" $probesYaml "serviceAccountName" "" "automountToken" false)
*/}}
{{- define "tradebot.deployment" -}}
{{- $root := .root }}
{{- $v := .values }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "tradebot.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "tradebot.componentLabels" . | nindent 4 }}
spec:
  replicas: {{ $v.replicaCount }}
  revisionHistoryLimit: 3
  {{- with .strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "tradebot.componentSelectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "tradebot.componentLabels" . | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- if .serviceAccountName }}
      serviceAccountName: {{ .serviceAccountName }}
      {{- end }}
      automountServiceAccountToken: {{ .automountToken | default false }}
      enableServiceLinks: false
      {{- with (include "tradebot.imagePullSecrets" $root | trim) }}{{ . | nindent 6 }}{{ end }}
      {{- include "tradebot.podSecurityContext" $root | nindent 6 }}
      terminationGracePeriodSeconds: 30
      containers:
        - name: {{ .component }}
          image: {{ .image | quote }}
          imagePullPolicy: {{ .pullPolicy }}
          args:
            {{- toYaml .args | nindent 12 }}
          ports:
            {{- range .ports }}
            - name: {{ .name }}
              containerPort: {{ .containerPort }}
              protocol: TCP
            {{- end }}
          env:
            {{- .env | trim | nindent 12 }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- .probes | trim | nindent 10 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          {{- include "tradebot.containerSecurityContext" $root | nindent 10 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
      {{- with (include "tradebot.scheduling" $v | trim) }}{{ . | nindent 6 }}{{ end }}
{{- end }}
