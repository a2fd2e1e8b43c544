//go:build cluster

// End-to-end tests of `kubectl bkcache mirror` across the nodes of scripts/cluster up --nodes 3,
// with the command's defaults for the nodes' files (/etc/containerd/config.toml, its
// config_path /etc/containerd/certs.d, backups in /var/lib/bkcache/backups): each node sees its
// own copies, which this machine reads under the node's Root.
//
//	go test -tags cluster -run 'TestMirrorNodes' -v ./test/e2e/kubectl/
package kubectl

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/bkcache/bkcache/internal/clustertest"
	"github.com/bkcache/bkcache/internal/registrytest"
	"github.com/bkcache/bkcache/pkg/nodes"
)

// nodeFiles are the node's files mirror may touch, as this machine sees them.
func nodeFiles(n clustertest.Node) []string {
	return []string{n.HostPath("/etc/containerd"), n.HostPath("/var/lib/bkcache")}
}

// mirrorRun is one `kubectl bkcache mirror … -o json` on every node.
type mirrorRun struct {
	t     *testing.T
	env   clustertest.Env
	path  []string
	flags []string
}

func (m mirrorRun) reports(ctx context.Context, extra ...string) ([]nodes.NodeReport, error) {
	m.t.Helper()
	args := append(append([]string{"bkcache", "mirror", "-o", "json"}, m.flags...), extra...)
	out, stderr, err := runKubectl(ctx, m.env, m.path, args...)
	var rs []nodes.NodeReport
	if jerr := json.Unmarshal([]byte(out), &rs); jerr != nil || len(rs) != len(m.env.Nodes) {
		m.t.Fatalf("mirror %v: %v; want %d reports: %v\n%s%s", extra, err, len(m.env.Nodes), jerr, out, stderr)
	}
	byName := map[string]nodes.NodeReport{}
	for _, r := range rs {
		byName[r.Node] = r
	}
	// In the order of env.Nodes, so rs[i] is env.Nodes[i].
	for i, n := range m.env.Nodes {
		r, ok := byName[n.Name]
		if !ok {
			m.t.Fatalf("mirror %v: no report for node %s:\n%s", extra, n.Name, out)
		}
		rs[i] = r
	}
	m.t.Logf("mirror %v: %v\n%s", extra, err, stderr)
	return rs, err
}

// removeOnNodes removes what a test may leave on every node's files (also when it fails).
func removeOnNodes(t testing.TB, env clustertest.Env, paths ...string) {
	t.Cleanup(func() {
		for _, n := range env.Nodes {
			for _, p := range paths {
				os.RemoveAll(n.HostPath(p))
			}
		}
	})
}

// TestMirrorNodesAll: --dry-run, apply, pulls through the cache, status, --verify and --revert
// on three nodes at once, each node's row checked against that node's own files.
func TestMirrorNodesAll(t *testing.T) {
	env := clustertest.Get(t)
	env.NeedNodes(t, 3)
	cs := clientset(t, env)
	path, _ := pluginPath(t, env)
	ns := testNamespace(t, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	cache := registrytest.Start(t)
	img, err := registrytest.Image(2, 4096, runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cache.Push("blueking/nodes-e2e:1", img); err != nil {
		t.Fatal(err)
	}
	// --verify pulls an image no node holds yet, so every node fetches its blobs.
	verifyImg, err := registrytest.Image(2, 4096, runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cache.Push("blueking/nodes-e2e:verify", verifyImg); err != nil {
		t.Fatal(err)
	}
	upstream := fmt.Sprintf("%s:%d", env.NodeName, closedPort(t))
	image := upstream + "/blueking/nodes-e2e:1"
	removeOnNodes(t, env, "/etc/containerd/certs.d/"+upstream, "/etc/containerd/certs.d/"+cache.Addr, "/var/lib/bkcache/backups")
	m := mirrorRun{t: t, env: env, path: path, flags: []string{"--registry", cache.Addr, "--upstream", upstream, "--image", env.NodeImage}}

	before := make([]map[string]string, len(env.Nodes))
	for i, n := range env.Nodes {
		before[i] = digests(t, nodeFiles(n)...)
	}

	rs, err := m.reports(ctx, "--dry-run")
	if err != nil {
		t.Fatalf("--dry-run: %v", err)
	}
	for i, n := range env.Nodes {
		if r := rs[i]; r.Status != nodes.StatePlanned || len(r.Files) != 2 || r.ConfigFile != nodes.DefaultContainerdConfig || r.CertsRoot != "/etc/containerd/certs.d" {
			t.Errorf("--dry-run on %s: %+v", n.Name, r)
		}
		sameDigests(t, "after --dry-run on "+n.Name, before[i], digests(t, nodeFiles(n)...))
	}

	start := time.Now()
	rs, err = m.reports(ctx)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	t.Logf("apply on %d nodes: %s", len(env.Nodes), time.Since(start).Round(time.Millisecond))
	for i, n := range env.Nodes {
		r := rs[i]
		if r.Status != nodes.StateChanged || r.Restarted || r.Backup == "" {
			t.Errorf("apply on %s: %+v", n.Name, r)
		}
		for _, reg := range []string{upstream, cache.Addr} {
			b, err := os.ReadFile(n.HostPath("/etc/containerd/certs.d/" + reg + "/hosts.toml"))
			if err != nil || !strings.Contains(string(b), "[host.\"http://"+cache.Addr+"\"]") {
				t.Errorf("node %s: hosts.toml for %s: %v\n%s", n.Name, reg, err, b)
			}
		}
		if _, err := os.Stat(n.HostPath(r.Backup)); err != nil {
			t.Errorf("node %s: backup %s: %v", n.Name, r.Backup, err)
		}
	}

	// Every kubelet pulls through the cache (the upstream refuses connections).
	for _, n := range env.Nodes {
		gets := cache.BlobGets()
		if reason, msg := pullPod(t, cs, ns, n.Name, "pull-"+strings.ReplaceAll(n.IP, ".", "-"), image); reason != "Pulled" {
			t.Errorf("node %s: pull of %s = %s %s, want Pulled through the cache", n.Name, image, reason, msg)
		} else if cache.BlobGets() == gets {
			t.Errorf("node %s: the cache served no blob", n.Name)
		}
	}

	// Status: one row per node, each as its files are.
	out, stderr, err := runKubectl(ctx, env, path, "bkcache", "mirror", "status", "-o", "json", "--image", env.NodeImage)
	if err != nil {
		t.Fatalf("status: %v\n%s%s", err, out, stderr)
	}
	var st []nodes.NodeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st) != len(env.Nodes) {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	for _, s := range st {
		if s.Status != nodes.StateOK || s.Config == nil || s.Config.CertsRoot != "/etc/containerd/certs.d" ||
			len(s.Hosts[upstream].Hosts) != 1 || s.Hosts[upstream].Hosts[0] != "http://"+cache.Addr || len(s.Backups) != 1 {
			t.Errorf("status of %s: %+v", s.Node, s)
		}
	}

	// --verify: every node pulls by the cache's name and by the upstream's, through the cache:
	// each node fetches the two layers and the config once.
	gets := cache.BlobGets()
	rs, err = m.reports(ctx, "--verify", upstream+"/blueking/nodes-e2e:verify")
	if err != nil {
		t.Fatalf("--verify: %v", err)
	}
	for i, n := range env.Nodes {
		if v := rs[i].Verified; rs[i].Status != nodes.StateUnchanged || len(v) != 2 || !v[0].Pulled || !v[1].Pulled {
			t.Errorf("--verify on %s: %+v", n.Name, rs[i])
		}
	}
	if got, want := cache.BlobGets()-gets, 3*len(env.Nodes); got < want {
		t.Errorf("--verify: the cache served %d blobs, want at least %d (3 per node)", got, want)
	}

	// --revert: every node's files back byte for byte (the backups stay, marked reverted).
	rs, err = m.reports(ctx, "--revert")
	if err != nil {
		t.Fatalf("--revert: %v", err)
	}
	for i, n := range env.Nodes {
		if rs[i].Status != nodes.StateReverted {
			t.Errorf("--revert on %s: %+v", n.Name, rs[i])
		}
		sameDigests(t, "after --revert on "+n.Name, before[i], digests(t, n.HostPath("/etc/containerd")))
	}
	noNodeAccessPods(t, cs)
}

// restartFromHost restarts node n's containerd from this machine, as its restart command does
// on the node: stop it, wait for the supervisor's new one to answer.
func restartFromHost(t *testing.T, ctx context.Context, n clustertest.Node) {
	t.Helper()
	pidFile := n.HostPath("/run/bkcache-node/containerd.pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("node %s: %v", n.Name, err)
	}
	old, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("node %s: %s: %v", n.Name, pidFile, err)
	}
	if err := syscall.Kill(old, syscall.SIGTERM); err != nil {
		t.Fatalf("node %s: stop containerd (pid %d): %v", n.Name, old, err)
	}
	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		b, _ := os.ReadFile(pidFile)
		if strings.TrimSpace(string(b)) == strconv.Itoa(old) {
			return false, nil
		}
		return exec.CommandContext(ctx, "ctr", "-a", n.ContainerdSock, "version").Run() == nil, nil
	})
	if err != nil {
		t.Fatalf("node %s: containerd did not come back: %v", n.Name, err)
	}
}

// TestMirrorNodesOneFails: config_path is empty on every node, so mirror changes config.toml
// and restarts containerd; on the second node the restart fails. That node is put back byte
// for byte, the others keep their new config, the exit is non-zero and the report names the
// step; the next run configures only the node that is left.
func TestMirrorNodesOneFails(t *testing.T) {
	env := clustertest.Get(t)
	env.NeedNodes(t, 3)
	cs := clientset(t, env)
	path, _ := pluginPath(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	originals := make([][]byte, len(env.Nodes))
	for i, n := range env.Nodes {
		cfg := n.HostPath(nodes.DefaultContainerdConfig)
		b, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		originals[i] = b
		empty := strings.Replace(string(b), `config_path = "/etc/containerd/certs.d"`, `config_path = ""`, 1)
		if empty == string(b) {
			t.Fatalf("node %s: no config_path line in %s:\n%s", n.Name, cfg, b)
		}
		if err := os.WriteFile(cfg, []byte(empty), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { // the nodes' containerd back on their own config, whatever happened
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for i, n := range env.Nodes {
			os.Remove(n.HostPath("/run/bkcache-node/fail-next-restart"))
			if err := os.WriteFile(n.HostPath(nodes.DefaultContainerdConfig), originals[i], 0o644); err != nil {
				t.Error(err)
			}
			restartFromHost(t, ctx, n)
		}
	})
	removeOnNodes(t, env, "/etc/containerd/certs.d/hub.bktencent.com", "/etc/containerd/certs.d/127.0.0.1:5500", "/var/lib/bkcache/backups")

	before := make([]map[string]string, len(env.Nodes))
	for i, n := range env.Nodes {
		before[i] = digests(t, nodeFiles(n)...)
	}
	failing := env.Nodes[1]
	if err := os.WriteFile(failing.HostPath("/run/bkcache-node/fail-next-restart"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m := mirrorRun{t: t, env: env, path: path, flags: []string{"--registry", "127.0.0.1:5500", "--image", env.NodeImage,
		"--restart-command", env.RestartCommand}}

	rs, err := m.reports(ctx)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Errorf("a failed node: err = %v, want a non-zero exit", err)
	}
	for i, n := range env.Nodes {
		r := rs[i]
		if n.Name == failing.Name {
			if r.Status != nodes.StateFailed || r.FailedStep != "restart containerd" || !strings.Contains(r.Error, "the node is as it was before the run") {
				t.Errorf("failing node %s: %+v", n.Name, r)
			}
			sameDigests(t, "the failed node "+n.Name, before[i], digests(t, nodeFiles(n)...))
			continue
		}
		if r.Status != nodes.StateChanged || !r.ConfigChanged || !r.Restarted {
			t.Errorf("node %s: %+v, want changed and restarted", n.Name, r)
		}
		if b, _ := os.ReadFile(n.HostPath(nodes.DefaultContainerdConfig)); !strings.Contains(string(b), `config_path = "/etc/containerd/certs.d"`) {
			t.Errorf("node %s lost its new config:\n%s", n.Name, b)
		}
	}

	// The re-run touches only the node that is left.
	rs, err = m.reports(ctx)
	if err != nil {
		t.Fatalf("re-run: %v", err)
	}
	for i, n := range env.Nodes {
		want := nodes.StateUnchanged
		if n.Name == failing.Name {
			want = nodes.StateChanged
		}
		if rs[i].Status != want || (n.Name == failing.Name) != rs[i].Restarted {
			t.Errorf("re-run on %s: %+v, want %s", n.Name, rs[i], want)
		}
	}
	noNodeAccessPods(t, cs)
}

// TestMirrorNodesOneCannotRun: a cordoned node still gets its pod (pinned by nodeName), and a
// node that lacks the node-access image is reported unreachable without holding the others.
func TestMirrorNodesOneCannotRun(t *testing.T) {
	env := clustertest.Get(t)
	env.NeedNodes(t, 3)
	cs := clientset(t, env)
	path, _ := pluginPath(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	cordoned, imageless := env.Nodes[2], env.Nodes[1]
	setUnschedulable := func(v bool) error {
		patch := fmt.Sprintf(`{"spec":{"unschedulable":%t}}`, v)
		_, err := cs.CoreV1().Nodes().Patch(context.Background(), cordoned.Name, "application/merge-patch+json", []byte(patch), metav1.PatchOptions{})
		return err
	}
	if err := setUnschedulable(true); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := setUnschedulable(false); err != nil {
			t.Errorf("uncordon %s: %v", cordoned.Name, err)
		}
	})

	// A node-access image only this test uses, present on every node but one.
	const accessImage = "bkcache.test/access-e2e:1"
	for _, n := range env.Nodes {
		ctr := func(args ...string) {
			t.Helper()
			// Not the test's context: this also runs in cleanup, after it is cancelled.
			if out, err := exec.Command("ctr", append([]string{"-a", n.ContainerdSock, "-n", "k8s.io"}, args...)...).CombinedOutput(); err != nil {
				t.Fatalf("node %s: ctr %v: %v\n%s", n.Name, args, err, out)
			}
		}
		if n.Name != imageless.Name {
			ctr("images", "tag", "--force", env.NodeImage, accessImage)
			t.Cleanup(func() { ctr("images", "rm", accessImage) })
		}
	}
	removeOnNodes(t, env, "/etc/containerd/certs.d/hub.bktencent.com", "/etc/containerd/certs.d/127.0.0.1:5500")

	m := mirrorRun{t: t, env: env, path: path, flags: []string{"--registry", "127.0.0.1:5500", "--image", accessImage}}
	start := time.Now()
	rs, err := m.reports(ctx, "--dry-run")
	took := time.Since(start)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Errorf("a node without the image: err = %v, want a non-zero exit", err)
	}
	for i, n := range env.Nodes {
		r := rs[i]
		if n.Name == imageless.Name {
			if r.Status != nodes.StateUnreachable || !strings.Contains(r.Error, accessImage) {
				t.Errorf("node %s without the image: %+v", n.Name, r)
			}
			continue
		}
		if r.Status != nodes.StatePlanned {
			t.Errorf("node %s: %+v, want planned", n.Name, r)
		}
	}
	// The bound: the run does not wait out the pod start timeout for the failed node.
	if took >= nodes.DefaultPodTimeout {
		t.Errorf("the run took %s: the node without the image held it up to the pod timeout", took)
	}
	t.Logf("run with one node unable to start its pod: %s", took.Round(time.Millisecond))
	noNodeAccessPods(t, cs)
}

// nodeMount runs mount(8) in node n's mount namespace (its containerd's), as a change on that
// machine: pods started later see it.
func nodeMount(t *testing.T, n clustertest.Node, args ...string) error {
	t.Helper()
	ns := "--mount=/proc/" + readPid(n) + "/ns/mnt"
	out, err := exec.Command("nsenter", append([]string{ns, "--", "mount"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("node %s: mount %v: %v: %s", n.Name, args, err, out)
	}
	return nil
}

// TestMirrorNodesOneUnwritable: the third node's certs.d is read-only (a read-only bind mount
// on that node). Its first write fails; it is left as it was, byte for byte, the others are
// configured, the exit is non-zero and the report names the write; once the directory is
// writable again, a re-run configures only that node.
func TestMirrorNodesOneUnwritable(t *testing.T) {
	env := clustertest.Get(t)
	env.NeedNodes(t, 3)
	cs := clientset(t, env)
	path, _ := pluginPath(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	removeOnNodes(t, env, "/etc/containerd/certs.d/hub.bktencent.com", "/etc/containerd/certs.d/127.0.0.1:5500", "/var/lib/bkcache/backups")

	ro := env.Nodes[2]
	const certs = "/etc/containerd/certs.d"
	if err := nodeMount(t, ro, "--bind", certs, certs); err != nil {
		t.Fatal(err)
	}
	unmounted := false
	t.Cleanup(func() {
		if !unmounted {
			_ = exec.Command("nsenter", "--mount=/proc/"+readPid(ro)+"/ns/mnt", "--", "umount", certs).Run()
		}
	})
	if err := nodeMount(t, ro, "-o", "remount,bind,ro", certs); err != nil {
		t.Fatal(err)
	}
	before := digests(t, nodeFiles(ro)...)

	m := mirrorRun{t: t, env: env, path: path, flags: []string{"--registry", "127.0.0.1:5500", "--image", env.NodeImage}}
	rs, err := m.reports(ctx)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Errorf("a node with a read-only certs.d: err = %v, want a non-zero exit", err)
	}
	for i, n := range env.Nodes {
		r := rs[i]
		if n.Name == ro.Name {
			if r.Status != nodes.StateFailed || !strings.HasPrefix(r.FailedStep, "write "+certs+"/") || !strings.Contains(r.Error, "Read-only file system") {
				t.Errorf("read-only node %s: %+v", n.Name, r)
			}
			continue
		}
		if r.Status != nodes.StateChanged {
			t.Errorf("node %s: %+v, want changed", n.Name, r)
		}
	}
	sameDigests(t, "the read-only node "+ro.Name, before, digests(t, nodeFiles(ro)...))

	out, err := exec.Command("nsenter", "--mount=/proc/"+readPid(ro)+"/ns/mnt", "--", "umount", certs).CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: umount %s: %v: %s", ro.Name, certs, err, out)
	}
	unmounted = true
	rs, err = m.reports(ctx)
	if err != nil {
		t.Fatalf("re-run: %v", err)
	}
	for i, n := range env.Nodes {
		want := nodes.StateUnchanged
		if n.Name == ro.Name {
			want = nodes.StateChanged
		}
		if rs[i].Status != want {
			t.Errorf("re-run on %s: %+v, want %s", n.Name, rs[i], want)
		}
	}
	noNodeAccessPods(t, cs)
}

// readPid is node n's containerd PID (its mount namespace is the node's).
func readPid(n clustertest.Node) string {
	b, _ := os.ReadFile(n.HostPath("/run/bkcache-node/containerd.pid"))
	return strings.TrimSpace(string(b))
}
