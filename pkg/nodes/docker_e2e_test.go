//go:build e2e

// The Docker-runtime path against a real dockerd (Debian's 20.10): a second dockerd started
// here with its own socket, data root, exec root, pidfile, containerd namespaces and
// daemon.json, with no bridge, no iptables, no IP forwarding, so the host's engine and network
// are left alone. It is reached through the same node code (applyNode, revertNode) as a
// cluster node, by a Node that runs on this machine; the reload is its SIGHUP.
//
//	go test -tags e2e -run RealDockerd -v ./pkg/nodes/
package nodes

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// realDockerd is a dockerd this test started, and a Node on this machine that reaches it.
type realDockerd struct {
	*localNode
	daemon string // its daemon.json
	pid    int
	log    string
}

// startDockerd starts a private dockerd with daemon.json holding original and extra flags.
func startDockerd(t *testing.T, original string, flags ...string) *realDockerd {
	t.Helper()
	if _, err := exec.LookPath("dockerd"); err != nil {
		t.Fatalf("dockerd is needed (apt-get install docker.io): %v", err)
	}
	dir, err := os.MkdirTemp("/tmp", "bkcache-dockerd-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	d := &realDockerd{localNode: &localNode{t: t, dir: dir}, daemon: filepath.Join(dir, "daemon.json"), log: filepath.Join(dir, "dockerd.log")}
	if err := os.WriteFile(d.daemon, []byte(original), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "docker.sock")
	d.hostEnv = []string{"DOCKER_HOST=unix://" + sock}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns := "bkcache-test-" + hex.EncodeToString(b)
	logf, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"), "-H", "unix://" + sock, "--config-file", d.daemon,
		"--containerd-namespace", ns, "--containerd-plugins-namespace", ns + "-plugins",
		"--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false", "--ip6tables=false"}, flags...)
	cmd := exec.Command("dockerd", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own network namespace: a dockerd with --bridge=none deletes the
	// interface docker0 on start, which would be the host's, breaking the
	// host dockerd's bridge network. This one is reached by its socket only.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Cloneflags: syscall.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.pid = cmd.Process.Pid
	t.Cleanup(func() {
		// By PID: this dockerd only, never the host's.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		_ = exec.Command("umount", "-R", filepath.Join(dir, "data")).Run()
		_ = exec.Command("umount", "-R", filepath.Join(dir, "exec")).Run()
		_ = os.RemoveAll(dir)
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := d.RunOnHost(context.Background(), "docker version"); err == nil {
			return d
		}
		if time.Now().After(deadline) || cmd.ProcessState != nil {
			t.Fatalf("dockerd did not answer on %s:\n%s", sock, d.logText())
		}
	}
}

func (d *realDockerd) logText() string { b, _ := os.ReadFile(d.log); return string(b) }

// registryConfig is what this dockerd runs with, as `docker info` shows it.
func (d *realDockerd) registryConfig(t *testing.T) (insecure map[string]bool, mirrors []string) {
	t.Helper()
	out, err := d.RunOnHost(context.Background(), dockerInfoCommand)
	if err != nil {
		t.Fatalf("docker info: %v", err)
	}
	var rc struct {
		IndexConfigs map[string]struct{ Secure bool }
		Mirrors      []string
	}
	if err := json.Unmarshal(out, &rc); err != nil {
		t.Fatalf("docker info: %v\n%s", err, out)
	}
	insecure = map[string]bool{}
	for name, ic := range rc.IndexConfigs {
		if !ic.Secure {
			insecure[name] = true
		}
	}
	return insecure, rc.Mirrors
}

func (d *realDockerd) options(t *testing.T) MirrorOptions {
	o := MirrorOptions{Registry: "10.0.0.5:5500", Upstreams: []string{"hub.bktencent.com", "docker.io"}, DaemonJSON: d.daemon,
		BackupDir: filepath.Join(d.dir, "backups"), DockerReloadCmd: fmt.Sprintf("kill -HUP %d", d.pid), ReloadTimeout: 5 * time.Second}
	o.Access.RunID = NewRunID()
	if err := o.complete(); err != nil {
		t.Fatal(err)
	}
	return o
}

// members is a JSON object's keys and compacted values.
func members(t *testing.T, data []byte) map[string]string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for k, v := range m {
		var b bytes.Buffer
		if err := json.Compact(&b, v); err != nil {
			t.Fatal(err)
		}
		out[k] = b.String()
	}
	return out
}

const realDaemon = `{
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "3"},
    "registry-mirrors": ["https://mirror.example"],
    "max-concurrent-downloads": 4
}
`

func TestRealDockerdApplyRevert(t *testing.T) {
	ctx := context.Background()
	d := startDockerd(t, realDaemon)
	if insecure, mirrors := d.registryConfig(t); insecure["10.0.0.5:5500"] || !slices.Equal(mirrors, []string{"https://mirror.example/"}) {
		t.Fatalf("before: insecure %v mirrors %v", insecure, mirrors)
	}
	o := d.options(t)
	r := NodeReport{Node: "local", Runtime: "docker://20.10.24"}
	if err := applyNode(ctx, o, d, &r, nil); err != nil {
		t.Fatalf("apply: %v\n%s", err, d.logText())
	}
	if r.Status != StateChanged || !r.Reloaded {
		t.Fatalf("apply: %+v", r)
	}
	t.Logf("reload seen in docker info after %.2fs", r.RestartSeconds)
	// dockerd runs with the cache: insecure, and first among the docker.io mirrors.
	if insecure, mirrors := d.registryConfig(t); !insecure["10.0.0.5:5500"] || !slices.Equal(mirrors, []string{"http://10.0.0.5:5500/", "https://mirror.example/"}) {
		t.Errorf("after apply, docker info: insecure %v mirrors %v", insecure, mirrors)
	}
	after, _ := os.ReadFile(d.daemon)
	was, now := members(t, []byte(realDaemon)), members(t, after)
	for k, v := range was {
		if k != "registry-mirrors" && now[k] != v {
			t.Errorf("daemon.json %s: %s became %s", k, v, now[k])
		}
	}
	if now["insecure-registries"] != `["10.0.0.5:5500"]` || now["registry-mirrors"] != `["http://10.0.0.5:5500","https://mirror.example"]` {
		t.Errorf("daemon.json:\n%s", after)
	}

	// A second run changes nothing.
	o2 := d.options(t)
	r = NodeReport{Node: "local", Runtime: "docker://20.10.24"}
	if err := applyNode(ctx, o2, d, &r, nil); err != nil || r.Status != StateUnchanged || r.Reloaded {
		t.Fatalf("second run: %v %+v", err, r)
	}

	o3 := d.options(t)
	o3.Revert = true
	r = NodeReport{Node: "local", Runtime: "docker://20.10.24"}
	if err := revertNode(ctx, o3, d, &r); err != nil || r.Status != StateReverted || !r.Reloaded {
		t.Fatalf("revert: %v %+v", err, r)
	}
	if got, _ := os.ReadFile(d.daemon); string(got) != realDaemon {
		t.Errorf("daemon.json after revert:\n%s\nwant:\n%s", got, realDaemon)
	}
	// registry-mirrors is back as it was. insecure-registries was not in the original file,
	// and dockerd re-reads only the keys a file has: it keeps the cache insecure until it
	// restarts, and the report says so instead of claiming a clean revert.
	insecure, mirrors := d.registryConfig(t)
	if !slices.Equal(mirrors, []string{"https://mirror.example/"}) {
		t.Errorf("after revert, docker info mirrors %v", mirrors)
	}
	if w := strings.Join(r.Warnings, "\n"); insecure["10.0.0.5:5500"] != strings.Contains(w, "dockerd still runs with insecure-registries 10.0.0.5:5500") {
		t.Errorf("after revert, docker info insecure %v; warnings %q", insecure, r.Warnings)
	}
	t.Logf("after revert: %q", r.Warnings)
}

// A flag in dockerd's command line that sets the same key makes dockerd refuse the reload
// (it logs why and keeps running on the old configuration): the run rolls back.
func TestRealDockerdRefusedReload(t *testing.T) {
	d := startDockerd(t, realDaemon, "--insecure-registry", "10.9.9.9:5000")
	o := d.options(t)
	r := NodeReport{Node: "local", Runtime: "docker://20.10.24"}
	err := applyNode(context.Background(), o, d, &r, nil)
	if err == nil || r.Status != StateFailed || r.FailedStep != stepReload {
		t.Fatalf("refused reload: %v %+v", err, r)
	}
	for _, w := range []string{"did not take up", "rolled back: restored " + d.daemon, "reloaded dockerd on the restored", "the node is as it was before the run"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
	if got, _ := os.ReadFile(d.daemon); string(got) != realDaemon {
		t.Errorf("daemon.json not restored:\n%s", got)
	}
	if ents, _ := os.ReadDir(o.BackupDir); len(ents) != 0 {
		t.Errorf("backups left after the rollback: %v", ents)
	}
	if !strings.Contains(d.logText(), "specified both as a flag and in the configuration file") {
		t.Errorf("dockerd's log does not show the refusal:\n%s", d.logText())
	}
	if insecure, mirrors := d.registryConfig(t); insecure["10.0.0.5:5500"] || !slices.Equal(mirrors, []string{"https://mirror.example/"}) {
		t.Errorf("dockerd runs with insecure %v mirrors %v", insecure, mirrors)
	}
}
