package docker

import (
	"bytes"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/golden"
	"github.com/bkcache/bkcache/pkg/cache"
)

// Bound to a host address, so the "Next:" lines do not depend on this machine's interfaces.
func TestPrintUp(t *testing.T) {
	results := []cache.UpResult{
		{Name: "bkhub", Container: "proxy-bkhub", Action: cache.ActionCreated, Layout: cache.LayoutFront, Address: "10.0.0.5:5500",
			Upstream: "https://hub.bktencent.com", ConfigPath: "/etc/docker/registry/bkhub.yaml", DataDir: "/var/lib/registry-bkhub",
			Backup: "/etc/docker/registry/bkhub.yaml.bak", Mode: cache.ModeOffline, Warning: cache.UnreachableWarning},
		{Name: "dockerio", Container: "proxy-dockerio", Action: cache.ActionUnchanged, Layout: cache.LayoutPlain, Address: "10.0.0.5:5501",
			Upstream: "https://registry-1.docker.io", ConfigPath: "/etc/docker/registry/dockerio.yaml", DataDir: "/var/lib/registry-dockerio", DryRun: true},
		{Name: "quay", Container: "proxy-quay", Action: cache.ActionCreated, Changes: []string{"image bkcache.local/registry:2 pulled"},
			Layout: cache.LayoutFront, Address: "10.0.0.5:5502", Upstream: "https://quay.io", ConfigPath: "/etc/docker/registry/quay.yaml",
			DataDir: "/var/lib/registry-quay", DryRun: true},
	}
	var out bytes.Buffer
	printUp(&out, results)
	golden.Assert(t, out.Bytes(), "up.txt")
}

// The caches file is a regular file: a named pipe would block up. (The files
// a cache mounts are checked by pkg/cache's Up: TestUpRefusesSpecialMounts.)
func TestUpRefusesSpecialFiles(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"up", "-f", fifo}} {
		done := make(chan error, 1)
		go func() { done <- run(t, "", args...) }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "is a named pipe, not a regular file") {
				t.Errorf("docker bkcache %s: %v; want a refusal", strings.Join(args, " "), err)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("docker bkcache %s: still running after 60 s", strings.Join(args, " "))
		}
	}
}
