{{- define "app.image" -}}
{{- $reg := .image.registry -}}
{{- if .global.imageRegistry }}{{ $reg = .global.imageRegistry }}{{ end -}}
{{- $reg }}/{{ .image.repository }}:{{ .image.tag }}
{{- end -}}
