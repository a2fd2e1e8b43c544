package golden

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recorder is a testing.TB that keeps what Assert reports.
type recorder struct {
	testing.TB
	failed bool
	msg    string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Name() string              { return "TestX" }
func (r *recorder) Errorf(f string, a ...any) { r.failed, r.msg = true, f }
func (r *recorder) Fatalf(f string, a ...any) { r.failed, r.msg = true, f }

func TestAssert(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", "out.txt"), []byte("a\nb\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &recorder{TB: t}
	Assert(r, []byte("a\nb\n"), "out.txt")
	if r.failed {
		t.Fatalf("equal output failed: %s", r.msg)
	}
	Assert(r, []byte("a\nc\n"), "out.txt")
	if !r.failed || !strings.Contains(r.msg, "-update") {
		t.Fatalf("different output passed (%q)", r.msg)
	}
	r = &recorder{TB: t}
	Assert(r, nil, "missing.txt")
	if !r.failed {
		t.Fatal("missing golden file passed")
	}
	*update = true
	defer func() { *update = false }()
	Assert(r, []byte("new\n"), "sub/new.txt")
	if b, err := os.ReadFile(filepath.Join("testdata", "sub", "new.txt")); err != nil || string(b) != "new\n" {
		t.Fatalf("-update wrote %q, %v", b, err)
	}
}
