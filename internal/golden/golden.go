// Package golden compares command output with files under testdata/, as helm's tests do. A
// test calls
//
//	golden.Assert(t, out.Bytes(), "mirror-plan.txt")
//
// and `go test ./plugins/kubectl/ -run Golden -update` rewrites the files from what the
// tests produce; review the change with git diff before committing it.
package golden

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/pmezard/go-difflib/difflib"
)

// update is the -update flag of every test binary that imports this package.
var update = flag.Bool("update", false, "rewrite the golden files under testdata/ with the output the tests produce")

// Assert fails t when got differs from testdata/<name>, showing a unified diff; with -update
// it writes got to that file instead.
func Assert(t testing.TB, got []byte, name string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("golden file %s: %v (create it with go test -run %s -update)", p, err, t.Name())
	}
	if bytes.Equal(got, want) {
		return
	}
	diff, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(string(want)), B: difflib.SplitLines(string(got)),
		FromFile: p, ToFile: "output", Context: 3,
	})
	t.Errorf("output differs from %s (go test -run %s -update rewrites it):\n%s", p, t.Name(), diff)
}
