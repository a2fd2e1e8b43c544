package docker

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// An image list is read from a regular file only: a named pipe would block the
// command for ever, /dev/zero would never end.
func TestImageListRefusesSpecialFiles(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "images.txt")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, "/dev/zero"} {
		done := make(chan error, 1)
		go func() { done <- run(t, "", "push", "-f", p, "--to", "127.0.0.1:5000") }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("push -f %s: %v; want a refusal", p, err)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("push -f %s: still running after 60 s", p)
		}
	}
}
