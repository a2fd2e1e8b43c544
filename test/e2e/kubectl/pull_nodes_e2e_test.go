//go:build cluster

// Every node pulls through one cache: three kubelets pull the same image at the same moment
// through a `docker bkcache up` cache (front + registry:2, the real Docker plugin under the
// real docker CLI), which reaches the upstream through a counting relay.
//
//	go test -tags cluster -run TestNodesPullOnce -v ./test/e2e/kubectl/
package kubectl

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/bkcache/bkcache/internal/clustertest"
	"github.com/bkcache/bkcache/internal/registrytest"
)

// registryImage is the registry:2 image `docker bkcache up` runs in tests (scripts/registry-image.sh).
const registryImage = "bkcache.local/registry:2"

// dockerCache is a cache `docker bkcache up` started; it is removed when the test ends.
type dockerCache struct {
	Addr string // 127.0.0.1:PORT, on the host network
	name string
	env  []string // DOCKER_CONFIG with the plugin built from this checkout
}

func freeLoopbackPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startDockerCache builds the Docker plugin and runs `docker bkcache up` for upstream.
func startDockerCache(t testing.TB, env clustertest.Env, upstream string) *dockerCache {
	t.Helper()
	if out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		t.Fatalf("the Docker engine is needed (docker version: %v: %s)", err, bytes.TrimSpace(out))
	}
	if exec.Command("docker", "image", "inspect", registryImage).Run() != nil {
		script := filepath.Join(env.RepoRoot, "scripts", "registry-image.sh")
		if out, err := exec.Command(script, registryImage).CombinedOutput(); err != nil {
			t.Fatalf("build %s with %s: %v\n%s", registryImage, script, err, out)
		}
	}
	cfg := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(cfg, "cli-plugins", "docker-bkcache"), "./cmd/docker-bkcache")
	build.Dir = env.RepoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build docker-bkcache: %v\n%s", err, out)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	port, metrics := freeLoopbackPort(t), freeLoopbackPort(t)
	c := &dockerCache{Addr: "127.0.0.1:" + strconv.Itoa(port), name: "bkn-" + hex.EncodeToString(b), env: append(os.Environ(), "DOCKER_CONFIG="+cfg)}
	root, err := os.MkdirTemp("", "bkcache-nodes-cache-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("docker", "rm", "-f", "proxy-"+c.name).Run() //nolint:errcheck // gone already is fine
		os.RemoveAll(root)
	})
	up := exec.Command("docker", "bkcache", "up", "--name", c.name, "--upstream", upstream, "--port", strconv.Itoa(port),
		"--network", "host", "--bind", "127.0.0.1", "--image", registryImage, "--pull", "never",
		"--config-dir", filepath.Join(root, "etc"), "--data-dir", filepath.Join(root, "data"),
		"--metrics-port", strconv.Itoa(metrics), "--wait", "30s")
	up.Env = c.env
	if out, err := up.CombinedOutput(); err != nil {
		t.Fatalf("docker bkcache up: %v\n%s", err, out)
	}
	return c
}

// createPullPod creates a pod on node that pulls image (imagePullPolicy Always) and returns at once.
func createPullPod(t testing.TB, ctx context.Context, cs kubernetes.Interface, ns, node, name, image string) {
	t.Helper()
	zero := int64(0)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			NodeName: node, HostNetwork: true, RestartPolicy: corev1.RestartPolicyNever, TerminationGracePeriodSeconds: &zero,
			Containers: []corev1.Container{{Name: "c", Image: image, ImagePullPolicy: corev1.PullAlways}},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s on %s: %v", name, node, err)
	}
}

// pullEvent waits for the pod's first pull outcome: Pulled, or Failed with the message.
func pullEvent(ctx context.Context, cs kubernetes.Interface, ns, name string) (string, string, error) {
	var reason, msg string
	err := wait.PollUntilContextCancel(ctx, 300*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		evs, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err != nil {
			return false, nil
		}
		for _, e := range evs.Items {
			if e.Reason == "Pulled" || e.Reason == "Failed" && strings.Contains(e.Message, "pull") {
				reason, msg = e.Reason, e.Message
				return true, nil
			}
		}
		return false, nil
	})
	return reason, msg, err
}

// TestNodesPullOnce: three kubelets pull the same image at the same moment through one
// `docker bkcache up` cache; the upstream sends every blob once.
func TestNodesPullOnce(t *testing.T) {
	env := clustertest.Get(t)
	env.NeedNodes(t, 3)
	cs := clientset(t, env)
	path, _ := pluginPath(t, env)
	ns := testNamespace(t, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	upstream := registrytest.Start(t)
	img, err := registrytest.Image(4, 1<<20, runtime.GOARCH)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := upstream.Push("blueking/once:1", img); err != nil {
		t.Fatal(err)
	}
	relay := registrytest.StartRelay(t, upstream.URL)
	cache := startDockerCache(t, env, relay.URL)

	// Nodes name the relay as their upstream; over https (the relay speaks http) it refuses,
	// so a pull that bypasses the cache fails.
	removeOnNodes(t, env, "/etc/containerd/certs.d/"+relay.Addr, "/etc/containerd/certs.d/"+cache.Addr, "/var/lib/bkcache/backups")
	out, stderr, err := runKubectl(ctx, env, path, "bkcache", "mirror", "--registry", cache.Addr, "--upstream", relay.Addr, "--image", env.NodeImage)
	if err != nil {
		t.Fatalf("mirror: %v\n%s%s", err, out, stderr)
	}

	relay.SetRate(2 << 20) // 4 MiB at 2 MiB/s: the three pulls overlap
	relay.ResetLog()
	image := relay.Addr + "/blueking/once:1"
	start := time.Now()
	for i, n := range env.Nodes {
		createPullPod(t, ctx, cs, ns, n.Name, fmt.Sprintf("once-%d", i+1), image)
	}
	for i, n := range env.Nodes {
		reason, msg, err := pullEvent(ctx, cs, ns, fmt.Sprintf("once-%d", i+1))
		if err != nil || reason != "Pulled" {
			t.Errorf("node %s: pull of %s = %s %s (%v), want Pulled through the cache", n.Name, image, reason, msg, err)
		}
		t.Logf("node %s: %s", n.Name, msg) // each pull's time shows they overlapped the slow fetch
	}
	t.Logf("3 nodes pulled 4 MiB through the cache in %s", time.Since(start).Round(time.Millisecond))

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{cfg.String()}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, d.String())
	}
	gets := relay.BlobGetsByDigest()
	for _, d := range want {
		if gets[d] != 1 {
			t.Errorf("blob %s: %d upstream GETs, want 1", d, gets[d])
		}
	}
	if len(gets) != len(want) {
		t.Errorf("upstream blob GETs %v, want one for each of %v", gets, want)
	}
	t.Logf("upstream blob GETs: %v", gets)
}
