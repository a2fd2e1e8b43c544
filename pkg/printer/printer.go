// Package printer writes command results as data (-o json|yaml) the same way in
// both plugins, so scripts can rely on one shape.
package printer

import (
	"encoding/json"
	"fmt"
	"io"

	"sigs.k8s.io/yaml"
)

// Structured writes v as json or yaml. handled=false means format asks for the
// command's own human output ("", "table", "text"); any other format is an error.
func Structured(w io.Writer, format string, v any) (handled bool, err error) {
	switch format {
	case "", "table", "text":
		return false, nil
	case "json":
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return true, err
		}
		_, err = fmt.Fprintln(w, string(b))
		return true, err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return true, err
		}
		_, err = w.Write(b)
		return true, err
	default:
		return true, fmt.Errorf("unknown output format %q: use json or yaml (-o)", format)
	}
}
