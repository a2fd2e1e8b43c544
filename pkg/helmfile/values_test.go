package helmfile

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Hostile values: a named pipe or /dev/zero as a values file is refused, not
// read (a pipe would block for ever, /dev/zero until memory runs out); a
// values file whose YAML is a scalar or a list, and a values entry that is
// neither a file name nor a map, are refused with what they hold.
func TestHostileValues(t *testing.T) {
	dir := t.TempDir()
	chart, err := filepath.Abs("testdata/charts/web")
	if err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("scalar.yaml", "just a string\n")
	write("list.yaml", "- a\n- b\n")
	write("empty.yaml", "# nothing\n")
	helmfile := func(envValues, relValues string) string {
		return write("helmfile.yaml", "environments:\n  default:\n    values:\n    - "+envValues+"\n---\n"+
			"releases:\n- name: web\n  chart: "+chart+"\n  values:\n  - "+relValues+"\n")
	}
	// bounded fails a call that blocks (a named pipe opened for reading).
	bounded := func(name string, f func() error) error {
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			return err
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: still blocked after 60 s", name)
			return nil
		}
	}
	ctx := context.Background()
	for _, tc := range []struct{ name, env, rel, want string }{
		{"environment values from a named pipe", "fifo.yaml", "empty.yaml", "fifo.yaml is a named pipe, not a regular file"},
		{"release values from a named pipe", "empty.yaml", "fifo.yaml", "fifo.yaml is a named pipe, not a regular file"},
		{"release values from /dev/zero", "empty.yaml", "/dev/zero", "/dev/zero is a character device, not a regular file"},
		{"environment values a scalar", "scalar.yaml", "empty.yaml", "scalar.yaml holds a string (just a string), not a map of values"},
		{"release values a list", "empty.yaml", "list.yaml", "list.yaml holds a []interface {} ([a b]), not a map of values"},
		{"release values entry a number", "empty.yaml", "42", "values entry 42 (float64) is neither a file name nor a map of values"},
		{"environment values entry a list", "[a]", "empty.yaml", "is neither a file name nor a map of values"},
	} {
		p := helmfile(tc.env, tc.rel)
		err := bounded(tc.name, func() error { _, err := Images(ctx, p, Options{}); return err })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error with %q", tc.name, err, tc.want)
		}
	}
	for _, values := range []string{fifo, "/dev/zero"} {
		err := bounded("chart -f "+values, func() error {
			_, err := ChartImages(ctx, ChartOptions{Chart: chart, ValuesFiles: []string{values}, RenderOptions: RenderOptions{KubeVersion: "v1.30.0"}})
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("chart -f %s: %v; want a refusal", values, err)
		}
	}
}
