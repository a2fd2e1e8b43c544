package printer

import (
	"fmt"
	"io"

	"github.com/bkcache/bkcache/pkg/version"
)

// Version is both plugins' `version` output: "PLUGIN VERSION", or -o json|yaml.
func Version(w io.Writer, format, plugin string) error {
	info := version.Get(plugin)
	if handled, err := Structured(w, format, info); handled {
		return err
	}
	_, err := fmt.Fprintln(w, info)
	return err
}
