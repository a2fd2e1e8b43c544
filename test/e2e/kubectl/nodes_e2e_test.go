//go:build cluster

// End-to-end tests of the test cluster itself with several nodes (scripts/cluster up --nodes 3):
//
//	go test -tags cluster -run TestClusterNodes -v ./test/e2e/kubectl/
package kubectl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/bkcache/bkcache/internal/clustertest"
)

// nodePaths are the paths every test node has its own copy of.
var nodePaths = []string{"/etc/containerd", "/etc/docker", "/var/lib/bkcache", "/run/bkcache-node"}

// runHostPod starts hostPod on node and waits until it runs.
func runHostPod(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, name, node, image string) {
	t.Helper()
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, hostPod(name, node, image), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s on %s: %v", name, node, err)
	}
	var pod *corev1.Pod
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var err error
		pod, err = cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
			return false, fmt.Errorf("pod ended: %s", pod.Status.Phase)
		}
		return pod.Status.Phase == corev1.PodRunning, nil
	})
	if err != nil {
		t.Fatalf("pod %s on %s not Running: %v", name, node, err)
	}
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestClusterNodesOwnFiles: each node's node-access pod (chroot /host, as mirror reaches a
// node) sees that node's own files at the standard paths, no other node's, and not this
// machine's; each node's containerd runs on its own config.toml.
func TestClusterNodesOwnFiles(t *testing.T) {
	env := clustertest.Get(t)
	env.NeedNodes(t, 3)
	cs := clientset(t, env)
	ns := testNamespace(t, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	mark := "bkcache-harness-" + strings.TrimPrefix(ns, "bkcache-e2e-")
	for _, n := range env.Nodes {
		for _, p := range nodePaths {
			f := filepath.Join(n.HostPath(p), mark)
			if err := os.WriteFile(f, []byte(n.Name+" "+p+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(f) })
		}
	}
	for _, p := range nodePaths {
		if _, err := os.Stat(filepath.Join(p, mark)); !os.IsNotExist(err) {
			t.Errorf("this machine's %s holds a node's file (%v)", p, err)
		}
	}

	for i, n := range env.Nodes {
		pod := fmt.Sprintf("files-%d", i+1)
		runHostPod(t, ctx, cs, ns, pod, n.Name, env.NodeImage)
		var script strings.Builder
		for _, p := range nodePaths {
			fmt.Fprintf(&script, "cat %s/%s; ", p, mark)
		}
		script.WriteString("sha256sum /etc/containerd/config.toml")
		out, stderr, err := runKubectl(ctx, env, nil, "exec", "-n", ns, pod, "--", "chroot", "/host", "sh", "-c", script.String())
		if err != nil {
			t.Fatalf("node %s: %v: %s", n.Name, err, stderr)
		}
		var want strings.Builder
		for _, p := range nodePaths {
			fmt.Fprintf(&want, "%s %s\n", n.Name, p)
		}
		cfg, err := os.ReadFile(n.HostPath("/etc/containerd/config.toml"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&want, "%s  /etc/containerd/config.toml\n", sha256Hex(cfg))
		if out != want.String() {
			t.Errorf("node %s sees:\n%swant:\n%s", n.Name, out, want.String())
		}
		// The node's containerd was started on that file: its socket is the one the file names.
		if !strings.Contains(string(cfg), fmt.Sprintf("address = %q", n.ContainerdSock)) {
			t.Errorf("node %s: config.toml does not name its socket %s:\n%s", n.Name, n.ContainerdSock, cfg)
		}
	}
}
