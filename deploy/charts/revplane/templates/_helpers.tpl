{{/*
Helpers of the revplane chart. Every object is named after the revision and labelled
app=revplane, istio.io/rev=<revision>, so two releases (two revisions) share no object.
*/}}

{{/* The revision, validated: a DNS-1123 label short enough for Service revplane-<revision>. */}}
{{- define "revplane.revision" -}}
{{- $rev := toString .Values.revision -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $rev) -}}
{{- fail (printf "revision %q is not a DNS-1123 label: use lower-case letters, digits and '-', starting and ending with a letter or digit (e.g. stable, canary, 1-25-0)" $rev) -}}
{{- end -}}
{{- if gt (len $rev) 54 -}}
{{- fail (printf "revision %q is %d characters long: at most 54, so that Service revplane-<revision> is a valid name" $rev (len $rev)) -}}
{{- end -}}
{{- $rev -}}
{{- end -}}

{{/* revplane-<revision>: the name of nearly every object. */}}
{{- define "revplane.name" -}}
revplane-{{ include "revplane.revision" . }}
{{- end -}}

{{/* Labels that select this revision's pods (Deployment, Service, PDB, spread). */}}
{{- define "revplane.selectorLabels" -}}
app: revplane
istio.io/rev: {{ include "revplane.revision" . | quote }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "revplane.labels" -}}
{{ include "revplane.selectorLabels" . }}
app.kubernetes.io/name: revplane
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{- end -}}

{{/* The image reference. */}}
{{- define "revplane.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* shutdownGrace in whole seconds, rounded up; fails on a form it cannot read. */}}
{{- define "revplane.graceSeconds" -}}
{{- $grace := toString .Values.shutdownGrace -}}
{{- $parts := regexFindAll "^([0-9]+)(ms|s|m)$" $grace -1 -}}
{{- if not $parts -}}
{{- fail (printf "shutdownGrace %q: give a whole number of ms, s or m, e.g. 5s" $grace) -}}
{{- end -}}
{{- $n := regexFind "^[0-9]+" $grace | atoi -}}
{{- $unit := regexFind "[a-z]+$" $grace -}}
{{- if eq $unit "m" -}}{{ mul $n 60 }}
{{- else if eq $unit "s" -}}{{ $n }}
{{- else -}}{{ div (add $n 999) 1000 }}
{{- end -}}
{{- end -}}

{{/* The validated revision tags, as a JSON list. */}}
{{- define "revplane.tags" -}}
{{- $rev := include "revplane.revision" . -}}
{{- $seen := list -}}
{{- range .Values.revisionTags -}}
{{- $tag := toString . -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $tag) -}}
{{- fail (printf "revisionTags: %q is not a DNS-1123 label" $tag) -}}
{{- end -}}
{{- if eq $tag $rev -}}
{{- fail (printf "revisionTags: %q is the revision's own name; a tag must name something else" $tag) -}}
{{- end -}}
{{- if has $tag $seen -}}
{{- fail (printf "revisionTags: %q is listed twice" $tag) -}}
{{- end -}}
{{- $seen = append $seen $tag -}}
{{- end -}}
{{- toJson $seen -}}
{{- end -}}

{{/* The Service's DNS names, then the injection URL's host: the certificate's SANs, as JSON
{dns: [...], ips: [...]}. */}}
{{- define "revplane.certificateHosts" -}}
{{- $name := include "revplane.name" . -}}
{{- $ns := .Release.Namespace -}}
{{- $domain := (.Values.meshConfig | default dict).domain | default "cluster.local" -}}
{{- $dns := list $name (printf "%s.%s" $name $ns) (printf "%s.%s.svc" $name $ns) (printf "%s.%s.svc.%s" $name $ns $domain) -}}
{{- $ips := list -}}
{{- with .Values.injectionURL -}}
{{- if not (hasPrefix "https://" .) -}}
{{- fail (printf "injectionURL %q: the API server calls webhooks over HTTPS only; give an https:// URL" .) -}}
{{- end -}}
{{- $host := (urlParse .).hostname -}}
{{- if not $host -}}
{{- fail (printf "injectionURL %q has no host" .) -}}
{{- end -}}
{{- if not (regexMatch "/inject/?$" (urlParse .).path) -}}
{{- fail (printf "injectionURL %q: its path must end in /inject, where the webhook answers (e.g. https://203.0.113.10:15017/inject)" .) -}}
{{- end -}}
{{- if or (regexMatch "^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$" $host) (contains ":" $host) -}}
{{- $ips = append $ips $host -}}
{{- else -}}
{{- $dns = append $dns $host -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "dns" $dns "ips" $ips) -}}
{{- end -}}

{{/*
The webhook certificate, as JSON {crt, key, ca} (each base64 PEM, as Secret data holds it).
Kept from the existing Secret revplane-<revision>-tls (lookup) while it was made for the same
hosts, else generated. Generated once per render: the Secret and every webhook
configuration of the release must carry the same CA, so the result is memoized.
*/}}
{{- define "revplane.certificate" -}}
{{- if not (hasKey .Values "__revplaneCertificate") -}}
{{- $hosts := include "revplane.certificateHosts" . -}}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (printf "%s-tls" (include "revplane.name" .)) -}}
{{- $data := dig "data" dict $secret -}}
{{- $kept := and (hasKey $data "tls.crt") (hasKey $data "tls.key") (hasKey $data "ca.crt") (eq (dig "metadata" "annotations" "revplane.io/certificate-hosts" "" $secret) $hosts) -}}
{{- $cert := dict -}}
{{- if $kept -}}
{{- $cert = dict "crt" (index $data "tls.crt") "key" (index $data "tls.key") "ca" (index $data "ca.crt") -}}
{{- else -}}
{{- $h := fromJson $hosts -}}
{{- $ca := genCA (printf "revplane-%s-ca" (include "revplane.revision" .)) 3650 -}}
{{- $pair := genSignedCert (index $h.dns 2) $h.ips $h.dns 3650 $ca -}}
{{- $cert = dict "crt" ($pair.Cert | b64enc) "key" ($pair.Key | b64enc) "ca" ($ca.Cert | b64enc) -}}
{{- end -}}
{{- $_ := set .Values "__revplaneCertificate" $cert -}}
{{- end -}}
{{- toJson (get .Values "__revplaneCertificate") -}}
{{- end -}}

{{/* The webhooks' caBundle (base64 PEM): the given caBundle, or the generated CA. */}}
{{- define "revplane.caBundle" -}}
{{- if .Values.caBundle -}}
{{- if not (contains "-----BEGIN CERTIFICATE-----" .Values.caBundle) -}}
{{- fail "caBundle must be the CA certificate in PEM (-----BEGIN CERTIFICATE-----...), e.g. --set-file caBundle=ca.pem" -}}
{{- end -}}
{{- .Values.caBundle | b64enc -}}
{{- else -}}
{{- (include "revplane.certificate" . | fromJson).ca -}}
{{- end -}}
{{- end -}}

{{/*
A webhook clientConfig calling `suffix` after the revision's injection path ("" for the
revision itself, "/tag/<tag>" for a tag): injectionURL with the suffix appended to its path
(without trailing slashes, as revision::tags does), or the Service at /inject<suffix>.
*/}}
{{- define "revplane.clientConfig" -}}
{{- $root := .root -}}
{{- with $root.Values.injectionURL }}
{{- if $.suffix }}
{{- $u := urlParse . -}}
{{- $_ := set $u "path" (printf "%s%s" (regexReplaceAll "/+$" $u.path "") $.suffix) }}
url: {{ urlJoin $u | quote }}
{{- else }}
url: {{ . | quote }}
{{- end }}
{{- else }}
service:
  name: {{ include "revplane.name" $root }}
  namespace: {{ $root.Release.Namespace }}
  path: {{ printf "/inject%s" .suffix | quote }}
  port: 443
{{- end }}
caBundle: {{ include "revplane.caBundle" $root }}
{{- end -}}

{{/* A label selector of matchExpressions from [key, operator, value?] triples. */}}
{{- define "revplane.expressions" -}}
matchExpressions:
{{- range . }}
- key: {{ index . 0 | quote }}
  operator: {{ index . 1 }}
  {{- if gt (len .) 2 }}
  values: [{{ index . 2 | quote }}]
  {{- end }}
{{- end }}
{{- end -}}

{{/*
The webhooks that inject for `name` (a revision or a tag), exactly as
revision::selection::webhook_selectors(name) gives them, in that order; `clientConfig` is the
YAML of their client config.
*/}}
{{- define "revplane.webhooks" -}}
{{- $n := .name -}}
{{- $hooks := list
  (list "rev.namespace.sidecar-injector.revplane.io"
    (list (list "istio.io/rev" "In" $n) (list "istio-injection" "DoesNotExist"))
    (list (list "sidecar.istio.io/inject" "NotIn" "false")))
  (list "rev.object.sidecar-injector.revplane.io"
    (list (list "istio.io/rev" "DoesNotExist") (list "istio-injection" "DoesNotExist"))
    (list (list "sidecar.istio.io/inject" "NotIn" "false") (list "istio.io/rev" "In" $n))) -}}
{{- if eq $n "default" -}}
{{- $hooks = append $hooks (list "namespace.sidecar-injector.revplane.io"
    (list (list "istio-injection" "In" "enabled"))
    (list (list "sidecar.istio.io/inject" "NotIn" "false"))) -}}
{{- $hooks = append $hooks (list "object.sidecar-injector.revplane.io"
    (list (list "istio-injection" "DoesNotExist") (list "istio.io/rev" "DoesNotExist"))
    (list (list "sidecar.istio.io/inject" "In" "true") (list "istio.io/rev" "DoesNotExist"))) -}}
{{- end -}}
{{- range $hooks }}
- name: {{ index . 0 }}
  clientConfig:
    {{- $.clientConfig | trim | nindent 4 }}
  rules:
  - operations: [CREATE]
    apiGroups: [""]
    apiVersions: [v1]
    resources: [pods]
    scope: "*"
  failurePolicy: Fail
  matchPolicy: Equivalent
  sideEffects: None
  admissionReviewVersions: [v1]
  reinvocationPolicy: Never
  timeoutSeconds: 10
  namespaceSelector:
    {{- include "revplane.expressions" (index . 1) | nindent 4 }}
  objectSelector:
    {{- include "revplane.expressions" (index . 2) | nindent 4 }}
{{- end }}
{{- end -}}
