// Package containerdtest runs a private containerd (Debian's 1.6) for tests:
// its own root, state and socket under a temp dir, beside any other
// containerd on the machine, with hosts.toml files written for `ctr
// --hosts-dir` pulls through a cache.
package containerdtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Containerd is a running private containerd.
type Containerd struct {
	// Dir holds root, state, the socket, config.toml and containerd.log.
	Dir string
	// Config is the config.toml path; Sock the gRPC socket.
	Config, Sock string
	// HostsDir is a certs.d directory for `ctr --hosts-dir` (see WriteHosts).
	HostsDir string

	cmd *exec.Cmd
	log *os.File
}

// Start runs containerd until the test ends; extra is appended to its
// config.toml (e.g. a CRI registry section). It fails the test (never skips)
// when containerd is missing: apt-get install containerd.
func Start(t testing.TB, extra string) *Containerd {
	t.Helper()
	for _, bin := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is needed: apt-get install containerd (%v)", bin, err)
		}
	}
	dir, err := os.MkdirTemp("/tmp", "bkcache-ctrd-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	c := &Containerd{Dir: dir, Config: filepath.Join(dir, "config.toml"), Sock: filepath.Join(dir, "c.sock"),
		HostsDir: filepath.Join(dir, "certs.d")}
	t.Cleanup(func() {
		c.Stop()
		exec.Command("umount", "-R", filepath.Join(dir, "root")).Run() //nolint:errcheck // nothing mounted is fine
		os.RemoveAll(dir)
	})
	cfg := fmt.Sprintf(`# private containerd for bkcache tests
version = 2
root = "%[1]s/root"
state = "%[1]s/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

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
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "%[1]s/cni"
    conf_dir = "%[1]s/cni"
%[2]s`, dir, extra)
	if err := os.WriteFile(c.Config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if c.log, err = os.Create(filepath.Join(dir, "containerd.log")); err != nil {
		t.Fatal(err)
	}
	if err := c.start(); err != nil {
		t.Fatalf("%v\n%s", err, c.Log())
	}
	return c
}

func (c *Containerd) start() error {
	c.cmd = exec.Command("containerd", "--config", c.Config)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := c.Ctr("version"); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd did not answer on %s within 20 s", c.Sock)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends containerd (SIGTERM, then SIGKILL after 10 s); safe twice.
func (c *Containerd) Stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }() //nolint:errcheck
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill() //nolint:errcheck
		<-done
	}
	c.cmd = nil
}

// Restart stops and starts containerd again (after a config change).
func (c *Containerd) Restart() error {
	c.Stop()
	return c.start()
}

// Ctr runs ctr against this containerd.
func (c *Containerd) Ctr(args ...string) (string, error) {
	out, err := exec.Command("ctr", append([]string{"-a", c.Sock}, args...)...).CombinedOutput()
	return string(out), err
}

// Pull runs `ctr -n NS images pull --hosts-dir HostsDir REF`, as kubelet's
// pulls go through hosts.toml.
func (c *Containerd) Pull(namespace, ref string, extra ...string) (string, error) {
	args := append([]string{"-n", namespace, "images", "pull", "--hosts-dir", c.HostsDir}, extra...)
	return c.Ctr(append(args, ref)...)
}

// Log is containerd's output so far.
func (c *Containerd) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "containerd.log"))
	return string(b)
}

// WriteHosts writes HostsDir/<registry>/hosts.toml sending pulls of registry
// ("_default" for every registry without its own file) to the plain-HTTP
// mirrors, in order, before the registry itself (server; "" = none, as for
// _default).
func (c *Containerd) WriteHosts(registry, server string, mirrors ...string) error {
	var b strings.Builder
	if server != "" {
		fmt.Fprintf(&b, "server = %q\n", server)
	}
	for _, m := range mirrors {
		fmt.Fprintf(&b, "\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", m)
	}
	dir := filepath.Join(c.HostsDir, registry)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(b.String()), 0o644)
}
