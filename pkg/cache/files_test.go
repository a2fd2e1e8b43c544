package cache

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The files a cache mounts (--tls-cert, --tls-key, --htpasswd) are regular
// files: opening a named pipe to check it is readable would block up.
func TestUpRefusesSpecialMounts(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []Spec{
		{Name: "tls", ConfigDir: dir, TLSCert: fifo, TLSKey: fifo},
		{Name: "auth", ConfigDir: dir, Htpasswd: fifo},
	} {
		done := make(chan error, 1)
		go func() {
			_, err := Up(context.Background(), newFakeEngine(), spec, UpOptions{DryRun: true})
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "is a named pipe, not a regular file") {
				t.Errorf("up of cache %s with a named pipe: %v; want a refusal", spec.Name, err)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("up of cache %s with a named pipe: still running after 60 s", spec.Name)
		}
	}
}
