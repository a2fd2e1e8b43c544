//go:build cluster

package main

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bkcache/bkcache/internal/clustertest"
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
