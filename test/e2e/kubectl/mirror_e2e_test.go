//go:build cluster

// End-to-end tests of `kubectl bkcache mirror` on the real single-node cluster of
// scripts/cluster, through the real kubectl with the plugin built onto PATH:
//
//	go test -tags cluster -run Mirror -v ./test/e2e/kubectl/
//
// The node is this machine, so the test checks the node's files directly (CERTS_DIR is the
// node containerd's config_path) and the "cache" is a registry on 127.0.0.1. The upstream is
// the node's name with a closed port: it resolves to 127.0.0.1 through /etc/hosts and refuses
// connections, so a pull that bypasses the cache fails and nothing leaves the machine.
package kubectl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/bkcache/bkcache/internal/clustertest"
	"github.com/bkcache/bkcache/internal/registrytest"
	"github.com/bkcache/bkcache/pkg/nodes"
)

// pluginPath builds the plugin into the test's temp dir and returns the PATH entry that puts
// it first, and the binary.
func pluginPath(t testing.TB, env clustertest.Env) ([]string, string) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "kubectl-bkcache")
	build := exec.Command("go", "build", "-o", bin, "./cmd/kubectl-bkcache")
	build.Dir = env.RepoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return []string{"PATH=" + dir + string(os.PathListSeparator) + os.Getenv("PATH")}, bin
}

// mirrorFlags point the command at the test cluster's first node and its private containerd,
// and keep its backups in a per-test directory.
func mirrorFlags(env clustertest.Env, backups string) []string {
	return []string{"--image", env.NodeImage, "--containerd-config", env.ContainerdConfig, "--backup-dir", backups, "--nodes", env.NodeName}
}

// digests maps every file under the roots to its sha256 ("" for directories).
func digests(t *testing.T, roots ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				out[p] = ""
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			out[p] = hex.EncodeToString(h[:])
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func sameDigests(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, d := range before {
		if after[p] != d {
			t.Errorf("%s: %s changed (%q -> %q)", what, p, d, after[p])
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s appeared", what, p)
		}
	}
}

func closedPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// pullPod runs a pod on node with imagePullPolicy Always, so the kubelet resolves the image
// through containerd every time, and returns the reason of the first pull event: Pulled or Failed.
func pullPod(t *testing.T, cs kubernetes.Interface, ns, node, name, image string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	createPullPod(t, ctx, cs, ns, node, name, image)
	reason, msg, err := pullEvent(ctx, cs, ns, name)
	if err != nil {
		t.Fatalf("pod %s: no Pulled or Failed event: %v", name, err)
	}
	zero := int64(0)
	_ = cs.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	return reason, msg
}

func noNodeAccessPods(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var left []string
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: nodes.LabelManagedBy + "=bkcache"})
		if err != nil {
			return false, nil
		}
		left = nil
		for _, p := range pods.Items {
			left = append(left, p.Namespace+"/"+p.Name)
		}
		return len(left) == 0, nil
	})
	if err != nil {
		t.Fatalf("node-access pods left behind: %v", left)
	}
}

// TestMirrorThroughKubectl: dry-run, apply, a pull through the cache, a no-op second run,
// status, revert to the exact bytes, and the pull failing again.
func TestMirrorThroughKubectl(t *testing.T) {
	env := clustertest.Get(t)
	cs := clientset(t, env)
	path, _ := pluginPath(t, env)
	ns := testNamespace(t, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// The cache: a registry on 127.0.0.1 holding the image under the upstream's repository name.
	cache := registrytest.Start(t)
	img, err := registrytest.Image(1, 4096, runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cache.Push("blueking/mirror-e2e:1", img); err != nil {
		t.Fatal(err)
	}
	upstream := fmt.Sprintf("%s:%d", env.NodeName, closedPort(t))
	image := upstream + "/blueking/mirror-e2e:1"
	backups := filepath.Join(t.TempDir(), "backups")
	flags := mirrorFlags(env, backups)
	mirror := func(extra ...string) (string, string, error) {
		args := append([]string{"bkcache", "mirror", "--registry", cache.Addr, "--upstream", upstream}, flags...)
		return runKubectl(ctx, env, path, append(args, extra...)...)
	}
	ours := []string{filepath.Join(env.CertsDir, upstream, "hosts.toml"), filepath.Join(env.CertsDir, cache.Addr, "hosts.toml")}
	t.Cleanup(func() { // leave the node as it was even when the test fails half-way
		for _, p := range ours {
			os.RemoveAll(filepath.Dir(p))
		}
	})

	before := digests(t, env.CertsDir, env.ContainerdConfig)
	if reason, msg := pullPod(t, cs, ns, env.NodeName, "before", image); reason != "Failed" {
		t.Fatalf("before mirror: pull of %s = %s %s, want Failed (the upstream is unreachable)", image, reason, msg)
	}

	// Dry run: the plan, nothing touched.
	out, stderr, err := mirror("--dry-run")
	if err != nil {
		t.Fatalf("mirror --dry-run: %v\n%s%s", err, out, stderr)
	}
	for _, want := range []string{"+server = \"https://" + upstream + "\"", "+[host.\"http://" + cache.Addr + "\"]", "planned"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run output lacks %q:\n%s", want, out)
		}
	}
	sameDigests(t, "after --dry-run", before, digests(t, env.CertsDir, env.ContainerdConfig))

	// Apply.
	start := time.Now()
	out, stderr, err = mirror()
	if err != nil {
		t.Fatalf("mirror: %v\n%s%s", err, out, stderr)
	}
	t.Logf("apply on 1 node: %s\n%s", time.Since(start).Round(time.Millisecond), out)
	if !strings.Contains(out, "changed") {
		t.Errorf("mirror output does not report a change:\n%s", out)
	}
	for _, p := range ours {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("mirror did not write %s: %v", p, err)
		}
		if !strings.Contains(string(b), "[host.\"http://"+cache.Addr+"\"]\n  capabilities = [\"pull\", \"resolve\"]") {
			t.Errorf("%s:\n%s", p, b)
		}
	}
	applied := digests(t, env.CertsDir, env.ContainerdConfig)

	// The kubelet pulls the image through the cache (hosts.toml needs no restart).
	blobs := cache.BlobGets()
	if reason, msg := pullPod(t, cs, ns, env.NodeName, "through-cache", image); reason != "Pulled" {
		t.Fatalf("after mirror: pull of %s = %s %s, want Pulled through the cache", image, reason, msg)
	}
	if cache.BlobGets() == blobs {
		t.Errorf("the cache served no blob: the node did not pull through it")
	}

	// Second run: nothing to do.
	out, stderr, err = mirror("-o", "json")
	if err != nil {
		t.Fatalf("second mirror: %v\n%s%s", err, out, stderr)
	}
	var reports []nodes.NodeReport
	if err := json.Unmarshal([]byte(out), &reports); err != nil {
		t.Fatalf("mirror -o json: %v\n%s", err, out)
	}
	if len(reports) != 1 || reports[0].Status != "unchanged" || len(reports[0].Files) != 0 {
		t.Errorf("second run: %+v, want unchanged", reports)
	}
	sameDigests(t, "after the second run", applied, digests(t, env.CertsDir, env.ContainerdConfig))

	// --verify: the node pulls by the cache's name (only the cache can serve it) and by the
	// upstream name, through the kubelet.
	out, stderr, err = mirror("-o", "json", "--verify", image)
	if err != nil {
		t.Fatalf("mirror --verify: %v\n%s%s", err, out, stderr)
	}
	reports = nil
	if err := json.Unmarshal([]byte(out), &reports); err != nil || len(reports) != 1 {
		t.Fatalf("mirror --verify -o json: %v\n%s", err, out)
	}
	if v := reports[0].Verified; len(v) != 2 || !v[0].Pulled || !v[1].Pulled || v[0].Image != cache.Addr+"/blueking/mirror-e2e:1" {
		t.Errorf("verify: %+v", v)
	}
	t.Logf("verify pulls: %+v", reports[0].Verified)

	// Status matches the disk.
	out, stderr, err = runKubectl(ctx, env, path, append([]string{"bkcache", "mirror", "status", "-o", "json"}, flags...)...)
	if err != nil {
		t.Fatalf("mirror status: %v\n%s%s", err, out, stderr)
	}
	var st []nodes.NodeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	if len(st) != 1 || st[0].Config == nil || st[0].Config.CertsRoot != env.NodeCertsDir ||
		len(st[0].Hosts[upstream].Hosts) == 0 || st[0].Hosts[upstream].Hosts[0] != "http://"+cache.Addr ||
		st[0].Hosts[upstream].Server != "https://"+upstream || len(st[0].Backups) != 1 {
		t.Errorf("status does not match the disk:\n%s", out)
	}

	// Revert: exact bytes back, our files and directories gone.
	start = time.Now()
	out, stderr, err = runKubectl(ctx, env, path, append([]string{"bkcache", "mirror", "--revert"}, flags...)...)
	if err != nil {
		t.Fatalf("mirror --revert: %v\n%s%s", err, out, stderr)
	}
	t.Logf("revert on 1 node: %s\n%s", time.Since(start).Round(time.Millisecond), out)
	sameDigests(t, "after --revert", before, digests(t, env.CertsDir, env.ContainerdConfig))
	if reason, msg := pullPod(t, cs, ns, env.NodeName, "after-revert", image); reason != "Failed" {
		t.Errorf("after revert: pull of %s = %s %s, want Failed", image, reason, msg)
	}
	// A second revert finds nothing left to undo.
	out, stderr, err = runKubectl(ctx, env, path, append([]string{"bkcache", "mirror", "--revert", "-o", "json"}, flags...)...)
	if err != nil || !strings.Contains(out, `"status": "unchanged"`) {
		t.Errorf("second revert: %v\n%s%s", err, out, stderr)
	}
	noNodeAccessPods(t, cs)
}

// TestMirrorConfigPatch runs the command against copies of config.toml on the node: an empty
// config_path gets one inserted line (restart through --restart-command, here a no-op, so the
// cluster's containerd is left alone), revert restores the bytes; legacy mirrors are refused.
func TestMirrorConfigPatch(t *testing.T) {
	env := clustertest.Get(t)
	path, _ := pluginPath(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir() // on this machine = on the node
	certs := filepath.Join(dir, "certs.d")
	backups := filepath.Join(dir, "backups")
	cfg := filepath.Join(dir, "config.toml")
	const original = `# a 1.6-style config with comments
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9" # pinned
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
`
	if err := os.WriteFile(cfg, []byte(original), 0o600); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--image", env.NodeImage, "--containerd-config", cfg, "--backup-dir", backups,
		"--certs-dir", certs, "--restart-command", "true", "--registry", "127.0.0.1:5500", "--nodes", env.NodeName}
	out, stderr, err := runKubectl(ctx, env, path, append([]string{"bkcache", "mirror", "-o", "json"}, flags...)...)
	if err != nil {
		t.Fatalf("mirror: %v\n%s%s", err, out, stderr)
	}
	var reports []nodes.NodeReport
	if err := json.Unmarshal([]byte(out), &reports); err != nil || len(reports) != 1 {
		t.Fatalf("mirror -o json: %v\n%s", err, out)
	}
	r := reports[0]
	if !r.ConfigChanged || !r.Restarted || r.Status != "changed" {
		t.Errorf("report %+v: want config changed and restarted", r)
	}
	t.Logf("restart (no-op command) and CRI answering: %.2fs; node total %.2fs", r.RestartSeconds, r.Seconds)
	got, _ := os.ReadFile(cfg)
	want := strings.Replace(original, `config_path = ""`, fmt.Sprintf("config_path = %q", certs), 1)
	if string(got) != want {
		t.Errorf("config.toml:\n%s\nwant:\n%s", got, want)
	}
	if st, err := os.Stat(cfg); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("config.toml mode changed: %v %v", st.Mode(), err)
	}
	if _, err := os.Stat(filepath.Join(certs, "hub.bktencent.com", "hosts.toml")); err != nil {
		t.Errorf("hosts.toml for the default upstream: %v", err)
	}
	out, stderr, err = runKubectl(ctx, env, path, append([]string{"bkcache", "mirror", "--revert"}, flags...)...)
	if err != nil {
		t.Fatalf("revert: %v\n%s%s", err, out, stderr)
	}
	if got, _ := os.ReadFile(cfg); string(got) != original {
		t.Errorf("config.toml after revert:\n%s", got)
	}
	if _, err := os.Stat(certs); !os.IsNotExist(err) {
		t.Errorf("revert left %s behind: %v", certs, err)
	}

	// Legacy mirrors: refused on that node, non-zero exit, file untouched.
	legacy := original + `    [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
      endpoint = ["http://mirror.local:5000"]
`
	if err := os.WriteFile(cfg, []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, err = runKubectl(ctx, env, path, append([]string{"bkcache", "mirror"}, flags...)...)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Errorf("legacy mirrors: err = %v, want a non-zero exit\n%s%s", err, out, stderr)
	}
	if !strings.Contains(out, "--migrate-legacy") {
		t.Errorf("legacy mirrors: the report does not say what to do:\n%s", out)
	}
	if got, _ := os.ReadFile(cfg); string(got) != legacy {
		t.Errorf("legacy config.toml was changed:\n%s", got)
	}
	// --migrate-legacy turns them into hosts.toml and drops them from config.toml.
	out, stderr, err = runKubectl(ctx, env, path, append([]string{"bkcache", "mirror", "--migrate-legacy"}, flags...)...)
	if err != nil {
		t.Fatalf("--migrate-legacy: %v\n%s%s", err, out, stderr)
	}
	if got, _ := os.ReadFile(cfg); strings.Contains(string(got), "mirrors") {
		t.Errorf("config.toml still has mirrors:\n%s", got)
	}
	if b, err := os.ReadFile(filepath.Join(certs, "docker.io", "hosts.toml")); err != nil || !strings.Contains(string(b), "http://mirror.local:5000") {
		t.Errorf("migrated docker.io hosts.toml: %v\n%s", err, b)
	}
	noNodeAccessPods(t, clientset(t, env))
}

// TestMirrorInterrupted: Ctrl-C while the command works leaves no pod behind.
func TestMirrorInterrupted(t *testing.T) {
	env := clustertest.Get(t)
	cs := clientset(t, env)
	path, bin := pluginPath(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	cmd := exec.CommandContext(ctx, bin, "mirror", "--registry", "127.0.0.1:5500",
		"--image", env.NodeImage, "--containerd-config", filepath.Join(dir, "config.toml"), "--certs-dir", filepath.Join(dir, "certs.d"),
		"--backup-dir", filepath.Join(dir, "backups"), "--restart", "never", "--dry-run", "--nodes", env.NodeName)
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+env.Kubeconfig), path...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Interrupt as soon as the node-access pod exists.
	err := wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: nodes.LabelManagedBy + "=bkcache"})
		return err == nil && len(pods.Items) > 0, nil
	})
	if err != nil {
		t.Fatalf("no node-access pod appeared: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	t.Logf("interrupted run: %v", err)
	noNodeAccessPods(t, cs)
}
