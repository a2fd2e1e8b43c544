{{/* common.image renders a registry/repository/tag map as one reference. */}}
{{- define "common.image" -}}
{{ .registry | default "docker.io" }}/{{ .repository }}:{{ .tag | toString }}
{{- end -}}
