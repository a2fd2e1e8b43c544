package front

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// A registry child that dies is restarted; pulls go on meanwhile.
func TestChildRestarted(t *testing.T) {
	e := newEnv(t)
	img, _ := registrytest.Image(1, 10<<10, "amd64")
	e.push("lib/r:1", img)
	var proxyPID int
	for _, pid := range childPIDs(t, e.srv.opts.RunDir) {
		if cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline")); strings.Contains(string(cmdline), "proxy.yml") {
			proxyPID = pid
		}
	}
	if proxyPID == 0 {
		t.Fatal("no proxy child found")
	}
	if err := syscall.Kill(proxyPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.pull(ctx, "lib/r:1"); err != nil {
		t.Fatalf("pull while the proxy child restarts: %v", err)
	}
	waitFor(t, func() bool { return e.status().ProxyChild == childRunning })
	if !strings.Contains(e.log.String(), "registry proxy child exited") {
		t.Error("the child's exit was not logged")
	}
}
