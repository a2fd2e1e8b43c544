//go:build cluster

package kubectl

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bkcache/bkcache/internal/clustertest"
	"github.com/bkcache/bkcache/pkg/cache"
)

// What the cluster runs now, read through the kubeconfig by the real kubectl.
func TestImagesFromCluster(t *testing.T) {
	env := clustertest.Get(t)
	cs := clientset(t, env)
	ns := testNamespace(t, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pod := hostPod("images-e2e", env.NodeName, env.NodeImage)
	pod.Spec.InitContainers = []corev1.Container{{Name: "init", Image: env.NodeImage, ImagePullPolicy: corev1.PullNever, Command: []string{"true"}}}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	path, _ := pluginPath(t, env)

	out, errOut, err := runKubectl(ctx, env, path, "bkcache", "images", "--from-cluster", "-n", ns)
	if err != nil {
		t.Fatalf("kubectl bkcache images --from-cluster -n %s: %v\n%s", ns, err, errOut)
	}
	lines := strings.Fields(strings.TrimSpace(out))
	if len(lines) != 1 || !strings.Contains(lines[0], strings.Split(env.NodeImage, ":")[0]) {
		t.Errorf("images in namespace %s = %q, want only %s", ns, lines, env.NodeImage)
	}

	all, errOut, err := runKubectl(ctx, env, path, "bkcache", "images", "--from-cluster", "-A", "-o", "json")
	if err != nil {
		t.Fatalf("kubectl bkcache images --from-cluster -A: %v\n%s", err, errOut)
	}
	if !strings.Contains(all, ns) || !strings.Contains(all, "images-e2e") {
		t.Errorf("-A -o json does not name the pod %s/images-e2e as a source:\n%s", ns, all)
	}
}

// TestImagesUpstreamsIntoMirror: what `images --upstreams` prints is what
// `docker bkcache up -f` (checked with its parser: up has no dry run) and
// `kubectl bkcache mirror` take: each printed mirror command, run with
// --dry-run against the cluster, plans its hosts.toml and changes nothing.
func TestImagesUpstreamsIntoMirror(t *testing.T) {
	env := clustertest.Get(t)
	path, _ := pluginPath(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tree := filepath.Join(env.RepoRoot, "pkg/helmfile/testdata/bkdocs/base.yaml.gotmpl")
	out, errOut, err := runKubectl(ctx, env, path, "bkcache", "images", "--from-helmfile", tree, "--upstreams", "--cache-host", "127.0.0.1")
	if err != nil {
		t.Fatalf("images --upstreams: %v\n%s", err, errOut)
	}
	caches, err := cache.ParseCachesFile([]byte(out))
	if err != nil || len(caches) != 3 {
		t.Fatalf("docker bkcache up -f would not take the --upstreams output (%d caches): %v\n%s", len(caches), err, out)
	}
	var commands [][]string
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, "#   kubectl "); ok && strings.HasPrefix(rest, "bkcache mirror ") {
			commands = append(commands, strings.Fields(rest))
		}
	}
	if len(commands) != len(caches) {
		t.Fatalf("%d mirror commands for %d caches:\n%s", len(commands), len(caches), out)
	}
	before := digests(t, env.CertsDir, env.ContainerdConfig)
	for i, args := range commands {
		c := caches[i]
		args = append(append(args, mirrorFlags(env, filepath.Join(t.TempDir(), "backups"))...), "--dry-run")
		out, errOut, err := runKubectl(ctx, env, path, args...)
		if err != nil {
			t.Errorf("%s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
			continue
		}
		upstream := strings.TrimPrefix(strings.TrimPrefix(c.Upstream, "https://"), "registry-1.")
		for _, want := range []string{fmt.Sprintf("+[host.\"http://127.0.0.1:%d\"]", c.Port), "planned", upstream} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: dry-run output lacks %q:\n%s", strings.Join(args, " "), want, out)
			}
		}
	}
	sameDigests(t, "after the --dry-run of every printed mirror command", before, digests(t, env.CertsDir, env.ContainerdConfig))
}
