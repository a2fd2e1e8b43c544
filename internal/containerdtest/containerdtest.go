// Package containerdtest runs a private containerd (Debian's 1.6, its own root,
// state and socket beside any other containerd) for end-to-end tests that pull
// through a cache as a node does: `ctr images pull --hosts-dir`, with
// hosts.toml files pointing at the cache.
package containerdtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Containerd is a containerd process a test started.
type Containerd struct {
	// Dir holds root, state, socket, config and log; HostsDir the hosts.toml tree.
	Dir, HostsDir string
	// Sock is the gRPC socket ctr talks to.
	Sock string
	cmd  *exec.Cmd
	log  *os.File
}

// Start runs containerd until the test ends. It fails the test (never skips)
// when containerd or ctr is missing: apt-get install containerd.
func Start(t testing.TB) *Containerd {
	t.Helper()
	for _, bin := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is needed for this test (apt-get install containerd): %v", bin, err)
		}
	}
	dir, err := os.MkdirTemp("/tmp", "bkcache-ctrd-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	c := &Containerd{Dir: dir, HostsDir: filepath.Join(dir, "certs.d"), Sock: filepath.Join(dir, "c.sock")}
	t.Cleanup(func() {
		c.stop()
		_ = exec.Command("umount", "-R", filepath.Join(dir, "root")).Run()
		_ = os.RemoveAll(dir)
	})
	// Pulls only: no CRI, no snapshotters that need their own file systems.
	cfg := fmt.Sprintf(`version = 2
root = "%[1]s/root"
state = "%[1]s/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "%[1]s/c.sock"
[ttrpc]
  address = "%[1]s/c.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "%[1]s/opt"
`, dir)
	config := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if c.log, err = os.Create(filepath.Join(dir, "containerd.log")); err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command("containerd", "--config", config)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if out, err := exec.Command("ctr", "-a", c.Sock, "version").CombinedOutput(); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s: %v %s\n%s", c.Sock, err, out, c.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c
}

func (c *Containerd) stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
	c.cmd = nil
	c.log.Close()
}

// Log is what containerd printed so far.
func (c *Containerd) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "containerd.log"))
	return string(b)
}

// Mirror writes HostsDir/<registry>/hosts.toml: pulls of registry (host:port,
// or "_default" for every registry without its own file) go to each mirror in
// turn (plain-HTTP base URLs), then to server ("" for none, as _default has).
func (c *Containerd) Mirror(t testing.TB, registry, server string, mirrors ...string) {
	t.Helper()
	var b strings.Builder
	if server != "" {
		fmt.Fprintf(&b, "server = %q\n\n", server)
	}
	for _, m := range mirrors {
		fmt.Fprintf(&b, "[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n\n", m)
	}
	dir := filepath.Join(c.HostsDir, registry)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Pull runs `ctr images pull --hosts-dir HostsDir ref` (plus args) and
// returns its combined output.
func (c *Containerd) Pull(ctx context.Context, ref string, args ...string) (string, error) {
	argv := append([]string{"-a", c.Sock, "images", "pull", "--hosts-dir", c.HostsDir}, args...)
	argv = append(argv, ref)
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "ctr", argv...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// ImageDigest is the digest containerd recorded for ref ("" when it has none).
func (c *Containerd) ImageDigest(ref string) string {
	out, err := exec.Command("ctr", "-a", c.Sock, "images", "ls").Output()
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == ref {
			return f[2]
		}
	}
	return ""
}
