{{/* Names, labels and the per-service view every template iterates over. */}}

{{- define "tuya-fleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tuya-fleet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Kubernetes name of one service's objects: <fullname>-<service>. Call with (list $ "status"). */}}
{{- define "tuya-fleet.componentName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "tuya-fleet.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tuya-fleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "tuya-fleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tuya-fleet
{{- end -}}

{{/* Selector labels of one service's pods. Call with (list $ "status"). */}}
{{- define "tuya-fleet.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "tuya-fleet.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "tuya-fleet.componentLabels" -}}
{{ include "tuya-fleet.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "tuya-fleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tuya-fleet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The enabled services, each merged over serviceDefaults, as YAML: {name: settings}. Templates read it with
  {{- range $name, $svc := include "tuya-fleet.services" $ | fromYaml }}
*/}}
{{- define "tuya-fleet.services" -}}
{{- $out := dict -}}
{{- range $name, $own := .Values.services -}}
{{- if not (regexMatch "^[a-z][a-z0-9-]{0,30}[a-z0-9]$" $name) -}}
{{- fail (printf "services: %q is not a valid service name (lowercase letters, digits, hyphens)" $name) -}}
{{- end -}}
{{- $svc := mergeOverwrite (deepCopy $.Values.serviceDefaults) (deepCopy (default dict $own)) -}}
{{- if $svc.enabled -}}
{{- if not $svc.command -}}
{{- fail (printf "services.%s.command: the service's console script is required" $name) -}}
{{- end -}}
{{- $_ := set $out $name $svc -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* Whether the simulator runs in this release. */}}
{{- define "tuya-fleet.simEnabled" -}}
{{- $sim := index .Values.services "tuya-sim" | default dict -}}
{{- if and $sim (ne (toString (index $sim "enabled")) "false") -}}true{{- end -}}
{{- end -}}

{{- define "tuya-fleet.image" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $own := index . 2 -}}
{{- $repository := $own.repository | default (printf "%s/%s" $root.Values.image.repository $name) -}}
{{- printf "%s:%s" $repository ($own.tag | default $root.Values.image.tag | default $root.Chart.AppVersion) -}}
{{- end -}}

{{/* Where the services reach Tuya's OpenAPI: the configured URL, else the simulator's Service. */}}
{{- define "tuya-fleet.openapiUrl" -}}
{{- if .Values.tuya.openapiUrl -}}
{{- .Values.tuya.openapiUrl -}}
{{- else if include "tuya-fleet.simEnabled" . -}}
{{- printf "http://%s:8000" (include "tuya-fleet.componentName" (list . "tuya-sim")) -}}
{{- else -}}
{{- fail "tuya.openapiUrl is required when services.tuya-sim is disabled (e.g. https://openapi.tuyaeu.com)" -}}
{{- end -}}
{{- end -}}

{{/* A real Tuya project needs its access secret; only the simulator may run without one. */}}
{{- define "tuya-fleet.checkSecrets" -}}
{{- if and (not .Values.tuya.existingSecret) (not (include "tuya-fleet.simEnabled" .)) -}}
{{- fail "tuya.existingSecret is required without the simulator: the Secret holding the Tuya access secret" -}}
{{- end -}}
{{- end -}}

{{/* The environment taken from Secrets, as a list of EnvVar (may be empty). Call with (list $ name svc). */}}
{{- define "tuya-fleet.secretEnv" -}}
{{- $root := index . 0 -}}
{{- $name := index . 1 -}}
{{- $svc := index . 2 -}}
{{- $envPrefix := printf "FLEET_%s" ($name | upper | replace "-" "_") -}}
{{- with $root.Values.tuya.existingSecret }}
- name: FLEET_TUYA_ACCESS_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $root.Values.tuya.accessSecretKey }}
{{- end }}
{{- include "tuya-fleet.pulsarTokenEnv" $root }}
{{- if ne $name "tuya-sim" }}
{{- with $root.Values.mongodb.existingSecret }}
- name: FLEET_MONGODB_URI
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $root.Values.mongodb.uriKey }}
{{- end }}
{{- end }}
{{- if and $svc.apiKeys $root.Values.security.apiKeysSecret }}
# a service without a key in the Secret starts with no seeded keys
- name: {{ $envPrefix }}_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.security.apiKeysSecret }}
      key: {{ $name }}
      optional: true
{{- end }}
{{- range $variable, $ref := $svc.secretEnv }}
- name: {{ $variable }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secret }}
      key: {{ $ref.key }}
{{- end }}
{{- end -}}

{{/* Where the private CA bundle (tls.caBundle) is mounted, and the file every client is pointed at. */}}
{{- define "tuya-fleet.caBundleDir" -}}/etc/tuya-fleet/ca{{- end -}}
{{- define "tuya-fleet.caBundleFile" -}}{{ include "tuya-fleet.caBundleDir" . }}/ca.crt{{- end -}}

{{/* Whether a private CA bundle is configured; fails when it names both a ConfigMap and a Secret. */}}
{{- define "tuya-fleet.caBundleEnabled" -}}
{{- $ca := .Values.tls.caBundle -}}
{{- if and $ca.configMap $ca.secret -}}
{{- fail "tls.caBundle: set configMap or secret, not both" -}}
{{- end -}}
{{- if or $ca.configMap $ca.secret -}}true{{- end -}}
{{- end -}}

{{/* The CA bundle's Volume (a list item), its key mapped to ca.crt; empty without a bundle. */}}
{{- define "tuya-fleet.caBundleVolume" -}}
{{- if include "tuya-fleet.caBundleEnabled" . }}
{{- $ca := .Values.tls.caBundle }}
- name: ca-bundle
  {{- if $ca.configMap }}
  configMap:
    name: {{ $ca.configMap }}
  {{- else }}
  secret:
    secretName: {{ $ca.secret }}
  {{- end }}
    items:
      - key: {{ $ca.key }}
        path: ca.crt
{{- end }}
{{- end -}}

{{/* The CA bundle's VolumeMount (a list item), read-only; empty without a bundle. */}}
{{- define "tuya-fleet.caBundleMount" -}}
{{- if include "tuya-fleet.caBundleEnabled" . }}
- name: ca-bundle
  mountPath: {{ include "tuya-fleet.caBundleDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/*
The variables that point each client at the CA bundle (a dict; empty without a bundle): pulsar-client's trust
file setting, and SSL_CERT_FILE, which Python's default TLS trust reads: MongoDB's driver without a
tlsCAFile, httpx (the Tuya OpenAPI and OIDC clients) and urllib (the provisioning Job).
*/}}
{{- define "tuya-fleet.caBundleEnv" -}}
{{- if include "tuya-fleet.caBundleEnabled" . -}}
{{- $file := include "tuya-fleet.caBundleFile" . -}}
{{- toYaml (dict "FLEET_PULSAR_TLS_TRUST_CERTS_FILE" $file "SSL_CERT_FILE" $file) -}}
{{- else -}}
{}
{{- end -}}
{{- end -}}

{{/* FLEET_PULSAR_AUTH_TOKEN from pulsar.auth.existingSecret (an EnvVar list item); empty without one. */}}
{{- define "tuya-fleet.pulsarTokenEnv" -}}
{{- with .Values.pulsar.auth.existingSecret }}
- name: FLEET_PULSAR_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.pulsar.auth.tokenKey }}
{{- end }}
{{- end -}}
