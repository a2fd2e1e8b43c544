package containerd

import (
	"testing"
)

func TestUnifiedDiff(t *testing.T) {
	got := UnifiedDiff("/c/hosts.toml", nil, []byte("a\nb\n"))
	want := "--- /dev/null\n+++ /c/hosts.toml\n@@ -0,0 +1,2 @@\n+a\n+b\n"
	if got != want {
		t.Errorf("got:\n%q\nwant:\n%q", got, want)
	}
	if d := UnifiedDiff("x", []byte("a\n"), []byte("a\n")); d != "" {
		t.Errorf("diff of equal files = %q", d)
	}
}
