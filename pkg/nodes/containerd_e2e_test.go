//go:build e2e

// The mirror logic against a real containerd (Debian's 1.6, started here with its own root,
// state and socket beside any other): config.toml patched and restarted, the CRI plugin still
// loading, hosts.toml accepted by containerd's own parser (a pull through a real pull-through
// cache with `crictl pull`, the CRI path kubelet uses, and with `ctr --hosts-dir`), revert to
// the exact bytes, legacy mirrors refused or migrated.
//
//	go test -tags e2e -run RealContainerd -v ./pkg/nodes/
package nodes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/containerdtest"
	"github.com/bkcache/bkcache/internal/registrytest"
)

// criStatus is the CRI plugin's status as `ctr plugins ls` shows it: ok or error.
func (n *localNode) criStatus() string {
	out, err := n.ctr("plugins", "ls")
	if err != nil {
		return "ctr failed: " + err.Error()
	}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 && f[0] == "io.containerd.grpc.v1" && f[1] == "cri" {
			return f[len(f)-1]
		}
	}
	return "missing"
}

func startContainerd(t *testing.T, registrySection string) *localNode {
	t.Helper()
	c := containerdtest.Start(t, registrySection)
	n := &localNode{t: t, dir: c.Dir, config: c.Config, sock: c.Sock, ctrd: c}
	if st := n.criStatus(); st != "ok" {
		t.Fatalf("CRI plugin %s before any change; log:\n%s", st, n.logText())
	}
	return n
}

func (n *localNode) logText() string { return n.ctrd.Log() }

func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestRealContainerdApplyRevert(t *testing.T) {
	ctx := context.Background()
	n := startContainerd(t, `  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
`)
	original, _ := os.ReadFile(n.config)

	// The image lives only in a loopback registry that the image's name does not point at;
	// a real registry:2 pull-through cache (Debian's docker-registry, proxy.remoteurl) fronts it.
	origin := registrytest.Start(t)
	img, err := registrytest.Image(1, 2048, runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := origin.Push("blueking/app:1", img); err != nil {
		t.Fatal(err)
	}
	cache := startProxyCache(t, "http://"+origin.Addr)
	crictl := crictlBinary(t)
	upstream := fmt.Sprintf("127.0.0.1:%d", closedPort(t)) // refuses: only the cache can serve
	certs := filepath.Join(n.dir, "certs.d")
	o := MirrorOptions{Registry: cache.Addr, Upstreams: []string{upstream}, ContainerdConfig: n.config,
		CertsRoot: certs, BackupDir: filepath.Join(n.dir, "backups")}
	o.Access.RunID = NewRunID()
	if err := o.complete(); err != nil {
		t.Fatal(err)
	}
	image := upstream + "/blueking/app:1"
	cri := func(args ...string) (string, error) {
		ep := "unix://" + n.sock
		out, err := exec.Command(crictl, append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "30s"}, args...)...).CombinedOutput()
		return string(out), err
	}
	// pull tries both clients: crictl (CRI: config.toml's config_path, as kubelet pulls) and
	// ctr --hosts-dir; both must agree.
	pull := func() error {
		var errs []error
		if out, err := cri("pull", image); err != nil {
			errs = append(errs, fmt.Errorf("crictl pull: %v: %s", err, out))
		} else {
			_, _ = cri("rmi", image)
		}
		if out, err := n.ctr("-n", "bkcache-test", "images", "pull", "--hosts-dir", certs, image); err != nil {
			errs = append(errs, fmt.Errorf("ctr pull: %v: %s", err, out))
		} else {
			_, _ = n.ctr("-n", "bkcache-test", "images", "rm", image)
		}
		return errors.Join(errs...)
	}
	if out, err := cri("pull", image); err == nil {
		t.Fatalf("crictl pull succeeded before the mirror was configured: %s", out)
	}
	if out, err := n.ctr("-n", "bkcache-test", "images", "pull", "--hosts-dir", certs, image); err == nil {
		t.Fatalf("ctr pull succeeded before the mirror was configured: %s", out)
	}

	r := NodeReport{Runtime: "containerd://1.6.20"}
	if err := applyNode(ctx, o, n, &r, nil); err != nil {
		t.Fatalf("apply: %v\n%s", err, n.logText())
	}
	if !r.ConfigChanged || !r.Restarted {
		t.Fatalf("report %+v: want config.toml changed and containerd restarted", r)
	}
	t.Logf("apply: restart + answering %.2fs", r.RestartSeconds)
	if st := n.criStatus(); st != "ok" {
		t.Fatalf("CRI plugin %s after the patch; log:\n%s", st, n.logText())
	}
	// containerd's own hosts.toml parser accepted the file: the pull went through the cache.
	if err := pull(); err != nil {
		t.Fatalf("pull through the cache: %v\ncache log:\n%s", err, cache.logText())
	}
	// The cache saw containerd's mirror requests (they carry ?ns=<original registry>).
	if l := cache.logText(); !strings.Contains(l, "ns="+url.QueryEscape(upstream)) {
		t.Errorf("the cache's access log has no request for ns=%s:\n%s", upstream, l)
	}

	o.Revert = true
	r = NodeReport{Runtime: "containerd://1.6.20"}
	if err := revertNode(ctx, o, n, &r); err != nil {
		t.Fatalf("revert: %v", err)
	}
	if got, _ := os.ReadFile(n.config); !bytes.Equal(got, original) || !r.Restarted {
		t.Fatalf("after revert (restarted %v) config.toml:\n%s", r.Restarted, got)
	}
	if _, err := os.Stat(certs); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("revert left %s: %v", certs, err)
	}
	if st := n.criStatus(); st != "ok" {
		t.Fatalf("CRI plugin %s after revert", st)
	}
	if out, err := cri("pull", image); err == nil {
		t.Errorf("crictl pull still succeeds after revert: %s", out)
	}
	if out, err := n.ctr("-n", "bkcache-test", "images", "pull", "--hosts-dir", certs, image); err == nil {
		t.Errorf("ctr pull still succeeds after revert: %s", out)
	}
}

// proxyCache is Debian's docker-registry (distribution 2.8, what registry:2 runs) as a
// pull-through cache of one loopback upstream, with its access log in a file.
type proxyCache struct {
	Addr string
	log  string
}

func (c *proxyCache) logText() string { b, _ := os.ReadFile(c.log); return string(b) }

func startProxyCache(t *testing.T, remote string) *proxyCache {
	t.Helper()
	const bin = registrytest.DistributionBinary
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is missing: apt-get install docker-registry", bin)
	}
	dir := t.TempDir()
	c := &proxyCache{Addr: fmt.Sprintf("127.0.0.1:%d", closedPort(t)), log: filepath.Join(dir, "registry.log")}
	cfg := fmt.Sprintf("version: 0.1\nlog: {level: info}\nstorage: {filesystem: {rootdirectory: %s/data}}\nhttp: {addr: %s}\nproxy: {remoteurl: %s}\n", dir, c.Addr, remote)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); logf.Close() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(30 * time.Millisecond) {
		if conn, err := net.Dial("tcp", c.Addr); err == nil {
			conn.Close()
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("pull-through cache on %s did not start:\n%s", c.Addr, c.logText())
		}
	}
}

// crictlBinary builds crictl v1.37.0 (its own module graph, not this module's) once and keeps
// it in the user cache directory.
func crictlBinary(t *testing.T) string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	bin := filepath.Join(cache, "bkcache-test", "crictl-v1.37.0", "crictl")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	cmd := exec.Command("go", "install", "sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0")
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Dir(bin), "GOFLAGS=", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build crictl: %v\n%s", err, out)
	}
	return bin
}

func TestRealContainerdLegacyMirrors(t *testing.T) {
	ctx := context.Background()
	n := startContainerd(t, `  [plugins."io.containerd.grpc.v1.cri".registry]
    [plugins."io.containerd.grpc.v1.cri".registry.mirrors]
      [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
        endpoint = ["http://127.0.0.1:5999"]
`)
	original, _ := os.ReadFile(n.config)
	o := MirrorOptions{Registry: "127.0.0.1:5500", ContainerdConfig: n.config,
		CertsRoot: filepath.Join(n.dir, "certs.d"), BackupDir: filepath.Join(n.dir, "backups")}
	o.Access.RunID = NewRunID()
	if err := o.complete(); err != nil {
		t.Fatal(err)
	}
	err := applyNode(ctx, o, n, &NodeReport{Runtime: "containerd://1.6.20"}, nil)
	if err == nil || !strings.Contains(err.Error(), "--migrate-legacy") {
		t.Fatalf("legacy mirrors: err = %v", err)
	}
	if got, _ := os.ReadFile(n.config); !bytes.Equal(got, original) {
		t.Fatal("refused run changed config.toml")
	}
	// Negative control: the combination bkcache refuses does break the CRI plugin here.
	broken := strings.Replace(string(original), "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n",
		"[plugins.\"io.containerd.grpc.v1.cri\".registry]\n    config_path = \"/etc/containerd/certs.d\"\n", 1)
	if err := os.WriteFile(n.config, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := n.RestartContainerd(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if st := n.criStatus(); st != "error" {
		t.Errorf("config_path + mirrors: CRI plugin %s, want error (containerd refuses `mirrors` together with `config_path`)", st)
	}
	if err := os.WriteFile(n.config, original, 0o600); err != nil {
		t.Fatal(err)
	}

	o.MigrateLegacy = true
	r := NodeReport{Runtime: "containerd://1.6.20"}
	if err := applyNode(ctx, o, n, &r, nil); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	// The combination that breaks the CRI plugin was not written: it loads.
	if st := n.criStatus(); st != "ok" || !r.Restarted {
		t.Fatalf("CRI plugin %s after migration (restarted %v); log:\n%s", st, r.Restarted, n.logText())
	}
	if b, err := os.ReadFile(filepath.Join(n.dir, "certs.d", "docker.io", "hosts.toml")); err != nil || !strings.Contains(string(b), "http://127.0.0.1:5999") {
		t.Errorf("migrated docker.io hosts.toml: %v\n%s", err, b)
	}
}
