{{- define "web.image" -}}
{{- $reg := .Values.image.registry -}}
{{- if .Values.global.imageRegistry }}{{ $reg = .Values.global.imageRegistry }}{{ end -}}
{{- $reg }}/{{ .Values.image.repository }}{{ if .Values.image.digest }}@{{ .Values.image.digest }}{{ else }}:{{ .Values.image.tag }}{{ end -}}
{{- end -}}
