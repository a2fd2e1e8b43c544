package front

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// TestMain lets the test binary run as the front process itself
// (docker-bkcache front …) for the process-level test below.
func TestMain(m *testing.M) {
	if os.Getenv("BKCACHE_TEST_FRONT_MAIN") == "1" {
		os.Exit(Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// The front as a process: it serves, its children's lines reach its stderr
// prefixed, and SIGTERM stops the children and exits 0.
func TestProcessSIGTERM(t *testing.T) {
	e := newEnv(t) // for the config and the upstream; its in-process front is not used
	e.stop()
	img, _ := registrytest.Image(1, 10<<10, "amd64")
	e.push("lib/p:1", img)
	runDir := t.TempDir()
	addr, metrics := freePort(t), freePort(t)
	cmd := exec.Command(os.Args[0], "--registry-config", e.config, "--listen", addr, "--metrics-listen", metrics,
		"--run-dir", runDir, "--registry-bin", registrytest.DistributionBinary, "--upstream-rate", "10M")
	cmd.Env = append(os.Environ(), "BKCACHE_TEST_FRONT_MAIN=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	e.host = addr
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.pull(ctx, "lib/p:1"); err != nil {
		t.Fatalf("pull through the front process: %v\n%s", err, out.String())
	}
	children := childPIDs(t, runDir)
	if len(children) != 2 {
		t.Fatalf("want 2 registry children, found %v", children)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit within 30 s of SIGTERM\n%s", out.String())
	}
	if strings.Contains(out.String(), "not kept") {
		t.Errorf("SIGTERM lost blobs already fetched:\n%s", out.String())
	}
	for _, pid := range children {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("registry child %d still runs", pid)
		}
	}
	log := out.String()
	for _, want := range []string{"bkcache front ", "registry-proxy: ", "fetched blob", "stopping"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

// childPIDs finds the processes serving a config of runDir.
func childPIDs(t *testing.T, runDir string) []int {
	t.Helper()
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, en := range entries {
		var pid int
		if _, err := fmt.Sscanf(en.Name(), "%d", &pid); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", en.Name(), "cmdline"))
		if err == nil && strings.HasPrefix(string(cmdline), registrytest.DistributionBinary) && strings.Contains(string(cmdline), runDir) {
			pids = append(pids, pid)
		}
	}
	return pids
}
