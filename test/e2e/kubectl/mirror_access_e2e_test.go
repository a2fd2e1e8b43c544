//go:build cluster

// The node-access pod and the all-or-nothing rule on the real cluster, through the real
// kubectl. The test node cannot pull from anywhere (like an intranet-only BlueKing node), and
// its only shell image, NODE_IMAGE, is not a repository bkcache knows to carry a shell.
//
//	go test -tags cluster -run 'MirrorDefaultImage|MirrorImageOnNode|MirrorRestartCannotRun' -v ./test/e2e/kubectl/
package kubectl

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/bkcache/bkcache/internal/clustertest"
	"github.com/bkcache/bkcache/pkg/nodes"
)

// scratchFlags point a run at a config.toml and backups in a temp dir, so the cluster's own
// containerd is never touched.
func scratchFlags(t *testing.T, env clustertest.Env, config string) (string, []string) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, []string{"--registry", "127.0.0.1:5500", "--containerd-config", cfg, "--certs-dir", filepath.Join(dir, "certs.d"),
		"--backup-dir", filepath.Join(dir, "backups"), "--nodes", env.NodeName}
}

const emptyConfigPath = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"\"\n"

// nodeImages is what the kubelet reports the node holds.
func nodeImages(t *testing.T, env clustertest.Env) []string {
	t.Helper()
	n, err := clientset(t, env).CoreV1().Nodes().Get(context.Background(), env.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, img := range n.Status.Images {
		names = append(names, img.Names...)
	}
	return names
}

func decodeReports(t *testing.T, out string) []nodes.NodeReport {
	t.Helper()
	var rs []nodes.NodeReport
	if err := json.Unmarshal([]byte(out), &rs); err != nil || len(rs) != 1 {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	return rs
}

// The default image is not on the node and cannot be pulled: the node fails within seconds
// with the kubelet's reason and the fix, is shown unreachable with no plan, and status and
// --revert say the same.
func TestMirrorDefaultImageUnpullable(t *testing.T) {
	env := clustertest.Get(t)
	path, _ := pluginPath(t, env)
	if held := nodeImages(t, env); slices.ContainsFunc(held, func(n string) bool { return strings.Contains(n, "/library/busybox") }) {
		t.Fatalf("the node holds a busybox bkcache would use instead of the default: %v", held)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, flags := scratchFlags(t, env, emptyConfigPath)
	for _, run := range [][]string{
		append([]string{"bkcache", "mirror", "--dry-run"}, flags...),
		append([]string{"bkcache", "mirror", "status"}, flags[2:]...),
		append([]string{"bkcache", "mirror", "--revert"}, flags[2:]...),
	} {
		start := time.Now()
		out, stderr, err := runKubectl(ctx, env, path, run...)
		took := time.Since(start)
		t.Logf("%s: %s\n%s%s", strings.Join(run[:3], " "), took.Round(time.Millisecond), out, stderr)
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
			t.Errorf("%v: err = %v, want a non-zero exit", run[:3], err)
		}
		if took > 15*time.Second {
			t.Errorf("%v took %s: want the node failed within 15s", run[:3], took)
		}
		for _, w := range []string{"unreachable", nodes.DefaultAccessImage, "--image REGISTRY/…/busybox:TAG", "push list"} {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q", run[:3], w)
			}
		}
		if !strings.Contains(out, "ErrImagePull") && !strings.Contains(out, "ImagePullBackOff") {
			t.Errorf("%v: the kubelet's reason is missing", run[:3])
		}
		if strings.Contains(out, "# node") || strings.Contains(out, "file(s)") {
			t.Errorf("%v: a plan for a node whose files were not read", run[:3])
		}
		if !strings.Contains(stderr, "is not on the node: the kubelet pulls it") {
			t.Errorf("%v: no word on the image the node lacks:\n%s", run[:3], stderr)
		}
	}
	out, _, _ := runKubectl(ctx, env, path, append([]string{"bkcache", "mirror", "--dry-run", "-o", "json"}, flags...)...)
	r := decodeReports(t, out)[0]
	if r.Status != nodes.StateUnreachable || len(r.Files) != 0 || r.ConfigChanged || r.AccessImage == nil ||
		*r.AccessImage != (nodes.AccessImage{Image: nodes.DefaultAccessImage, Source: nodes.ImagePull}) {
		t.Errorf("json report: %+v", r)
	}
	noNodeAccessPods(t, clientset(t, env))
}

// A known busybox the node holds stands in for the default, and says so; --image is used as
// given even then.
func TestMirrorImageOnNode(t *testing.T) {
	env := clustertest.Get(t)
	path, _ := pluginPath(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The node image under a library/busybox name, as an intranet registry would hold it.
	const alias = "bkcache.test/library/busybox:1.36"
	ctr := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ctr", append([]string{"-a", env.ContainerdSock, "-n", "k8s.io", "images"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ctr images %v: %v\n%s", args, err, out)
		}
	}
	ctr("tag", "--force", env.NodeImage, alias)
	t.Cleanup(func() { _ = exec.Command("ctr", "-a", env.ContainerdSock, "-n", "k8s.io", "images", "rm", alias).Run() })
	// The kubelet lists images it learns of within about half a minute.
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, 2*time.Minute, true, func(context.Context) (bool, error) {
		return slices.Contains(nodeImages(t, env), alias), nil
	})
	if err != nil {
		t.Fatalf("the kubelet does not list %s: %v", alias, err)
	}
	_, flags := scratchFlags(t, env, emptyConfigPath)

	out, stderr, err := runKubectl(ctx, env, path, append([]string{"bkcache", "mirror", "--dry-run", "-o", "json"}, flags...)...)
	if err != nil {
		t.Fatalf("mirror --dry-run: %v\n%s%s", err, out, stderr)
	}
	r := decodeReports(t, out)[0]
	if r.Status != nodes.StatePlanned || r.AccessImage == nil || *r.AccessImage != (nodes.AccessImage{Image: alias, Source: nodes.ImageSubstitute}) {
		t.Errorf("report: %+v", r)
	}
	if !strings.Contains(stderr, "node-access image "+alias+", which the node holds ("+nodes.DefaultAccessImage+" is not on the node") {
		t.Errorf("no word on the image used:\n%s", stderr)
	}

	// --image as given: the node's own image works, and an image the node cannot pull fails
	// fast although a usable busybox is on the node.
	out, stderr, err = runKubectl(ctx, env, path, append([]string{"bkcache", "mirror", "--dry-run", "-o", "json", "--image", env.NodeImage}, flags...)...)
	if err != nil {
		t.Fatalf("--image %s: %v\n%s%s", env.NodeImage, err, out, stderr)
	}
	if r := decodeReports(t, out)[0]; r.Status != nodes.StatePlanned || r.AccessImage == nil || *r.AccessImage != (nodes.AccessImage{Image: env.NodeImage, Source: nodes.ImageGiven}) {
		t.Errorf("--image %s: %+v", env.NodeImage, r)
	}
	start := time.Now()
	out, _, err = runKubectl(ctx, env, path, append([]string{"bkcache", "mirror", "--dry-run", "-o", "json", "--image", nodes.DefaultAccessImage}, flags...)...)
	r = decodeReports(t, out)[0]
	if err == nil || r.Status != nodes.StateUnreachable || r.AccessImage.Source != nodes.ImageGiven || time.Since(start) > 15*time.Second ||
		strings.Contains(r.Error, "push list") || !strings.Contains(r.Error, "cannot pull "+nodes.DefaultAccessImage) {
		t.Errorf("--image %s (after %s): %v %+v", nodes.DefaultAccessImage, time.Since(start), err, r)
	}
	noNodeAccessPods(t, clientset(t, env))
}

// A restart command that cannot run: the node ends as it began — config.toml's bytes back, the
// hosts.toml files and directories the run created gone, no backup left — and the message says
// the command could not run, not that containerd did not come back.
func TestMirrorRestartCannotRun(t *testing.T) {
	env := clustertest.Get(t)
	path, _ := pluginPath(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir, flags := scratchFlags(t, env, emptyConfigPath)
	before := digests(t, dir)
	flags = append(flags, "--image", env.NodeImage, "--upstream", "hub.bktencent.com", "--upstream", "docker.io",
		"--restart-command", "/nonexistent/restart-containerd")
	out, stderr, err := runKubectl(ctx, env, path, append([]string{"bkcache", "mirror", "-o", "json"}, flags...)...)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Fatalf("err = %v, want a non-zero exit\n%s%s", err, out, stderr)
	}
	r := decodeReports(t, out)[0]
	t.Logf("error: %s", r.Error)
	if r.Status != nodes.StateFailed || r.FailedStep != "restart containerd" || r.Restarted || r.Backup != "" {
		t.Errorf("report: %+v", r)
	}
	for _, w := range []string{`the command "/nonexistent/restart-containerd" could not run`, "nothing was restarted", "--restart-command",
		"rolled back: restored " + filepath.Join(dir, "config.toml"), "removed " + filepath.Join(dir, "certs.d", "hub.bktencent.com", "hosts.toml"),
		"removed " + filepath.Join(dir, "certs.d", "docker.io", "hosts.toml"), "the node is as it was before the run"} {
		if !strings.Contains(r.Error, w) {
			t.Errorf("error lacks %q", w)
		}
	}
	if strings.Contains(r.Error, "did not come back") || strings.Contains(r.Error, "did not answer") {
		t.Errorf("error blames containerd: %s", r.Error)
	}
	sameDigests(t, "after the failed run", before, digests(t, dir))
	noNodeAccessPods(t, clientset(t, env))
}
