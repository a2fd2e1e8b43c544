//go:build cluster

// End-to-end smoke test against the real single-node cluster of scripts/cluster:
//
//	go test -tags cluster ./test/e2e/kubectl/
package kubectl

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/bkcache/bkcache/internal/clustertest"
)

// The real kubectl, as an operator runs it.
const kubectlPath = "/usr/bin/kubectl"

func TestMain(m *testing.M) { clustertest.Main(m) }

func clientset(t testing.TB, env clustertest.Env) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", env.Kubeconfig)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", env.Kubeconfig, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// testNamespace creates a namespace for one test and deletes it when the test ends, also on failure.
func testNamespace(t testing.TB, cs kubernetes.Interface) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "bkcache-e2e-" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		// Pods first, without grace, so the namespace goes quickly.
		zero := int64(0)
		_ = cs.CoreV1().Pods(name).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero}, metav1.ListOptions{})
		if err := cs.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", name, err)
			return
		}
		err := wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			_, err := cs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			t.Errorf("namespace %s still exists: %v", name, err)
		}
	})
	return name
}

func TestClusterNodeReady(t *testing.T) {
	env := clustertest.Get(t)
	cs := clientset(t, env)
	nodes, err := cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list nodes: %v", err)
	}
	var want []string
	for _, n := range env.Nodes {
		want = append(want, n.Name)
	}
	slices.Sort(want)
	if got := nodeNames(nodes.Items); !slices.Equal(got, want) || want[0] == "" {
		t.Fatalf("nodes = %v, want exactly %v", got, want)
	}
	for _, n := range nodes.Items {
		ready := false
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				ready = c.Status == corev1.ConditionTrue
			}
		}
		if !ready {
			t.Fatalf("node %s is not Ready: %+v", n.Name, n.Status.Conditions)
		}
		t.Logf("node %s Ready, kubelet %s", n.Name, n.Status.NodeInfo.KubeletVersion)
	}
}

// nodeNames lists the nodes' names, sorted.
func nodeNames(nodes []corev1.Node) []string {
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	slices.Sort(names)
	return names
}

// hostPod is the kind of pod `kubectl bkcache mirror` uses to reach a node: privileged,
// host namespaces, the node's / at /host, pinned by nodeName.
func hostPod(name, node, image string) *corev1.Pod {
	privileged := true
	zero := int64(0)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "bkcache-e2e"}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			HostPID:                       true,
			HostNetwork:                   true,
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &zero,
			Tolerations:                   []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name:            "host",
				Image:           image,
				ImagePullPolicy: corev1.PullNever,
				Command:         []string{"sleep", "3600"},
				SecurityContext: &corev1.SecurityContext{Privileged: &privileged},
				VolumeMounts:    []corev1.VolumeMount{{Name: "host", MountPath: "/host"}},
			}},
			Volumes: []corev1.Volume{{Name: "host", VolumeSource: corev1.VolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: "/"},
			}}},
		},
	}
}

func TestClusterHostPodExec(t *testing.T) {
	env := clustertest.Get(t)
	cs := clientset(t, env)
	ns := testNamespace(t, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if _, err := cs.CoreV1().Pods(ns).Create(ctx, hostPod("host", env.NodeName, env.NodeImage), metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	var pod *corev1.Pod
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var err error
		pod, err = cs.CoreV1().Pods(ns).Get(ctx, "host", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded {
			return false, fmt.Errorf("pod ended: %s", pod.Status.Phase)
		}
		return pod.Status.Phase == corev1.PodRunning, nil
	})
	if err != nil {
		t.Fatalf("pod not Running: %v; status: %+v", err, pod.Status)
	}

	out, stderr, err := runKubectl(ctx, env, nil, "exec", "-n", ns, "host", "--", "chroot", "/host", "cat", "/etc/hostname")
	if err != nil {
		t.Fatalf("kubectl exec: %v: %s", err, stderr)
	}
	want, err := os.ReadFile("/etc/hostname")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out); got != strings.TrimSpace(string(want)) {
		t.Fatalf("node /etc/hostname through the pod = %q, want %q", got, strings.TrimSpace(string(want)))
	}

	// Exit codes come back through exec.
	_, _, err = runKubectl(ctx, env, nil, "exec", "-n", ns, "host", "--", "chroot", "/host", "sh", "-c", "exit 3")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("kubectl exec 'exit 3': err = %v, want exit status 3", err)
	}
}

func TestClusterDaemonSet(t *testing.T) {
	env := clustertest.Get(t)
	cs := clientset(t, env)
	ns := testNamespace(t, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	labels := map[string]string{"app": "bkcache-e2e-ds"}
	pod := hostPod("", "", env.NodeImage)
	pod.Spec.NodeName = ""
	pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "ds"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: pod.Spec},
		},
	}
	if _, err := cs.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create daemonset: %v", err)
	}
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		got, err := cs.AppsV1().DaemonSets(ns).Get(ctx, "ds", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		ds = got
		n := int32(len(env.Nodes))
		return got.Status.DesiredNumberScheduled == n && got.Status.NumberReady == n, nil
	})
	if err != nil {
		t.Fatalf("daemonset not ready: %v; status %+v", err, ds.Status)
	}

	fg := metav1.DeletePropagationForeground
	if err := cs.AppsV1().DaemonSets(ns).Delete(ctx, "ds", metav1.DeleteOptions{PropagationPolicy: &fg}); err != nil {
		t.Fatalf("delete daemonset: %v", err)
	}
	err = wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := cs.AppsV1().DaemonSets(ns).Get(ctx, "ds", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return false, nil
		}
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=bkcache-e2e-ds"})
		return err == nil && len(pods.Items) == 0, nil
	})
	if err != nil {
		t.Fatalf("daemonset or its pods not gone: %v", err)
	}
}

// TestKubectlPluginVersion runs the plugin the way an operator does: built onto PATH, invoked
// through the real kubectl, against the cluster.
func TestKubectlPluginVersion(t *testing.T) {
	env := clustertest.Get(t)
	if _, err := os.Stat(kubectlPath); err != nil {
		t.Fatalf("the real kubectl is needed: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin := t.TempDir()
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, "kubectl-bkcache"), "./cmd/kubectl-bkcache")
	build.Dir = env.RepoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	path := []string{"PATH=" + bin + string(os.PathListSeparator) + os.Getenv("PATH")}

	// kubectl lists the plugin first on PATH; it exits non-zero when another kubectl-bkcache
	// (an installed one) is overshadowed, which is fine here.
	out, stderr, err := runKubectl(ctx, env, path, "plugin", "list")
	if lines := strings.Fields(out); !slices.Contains(lines, filepath.Join(bin, "kubectl-bkcache")) {
		t.Fatalf("kubectl plugin list does not show the plugin built in %s: %v\n%s%s", bin, err, out, stderr)
	}
	out, stderr, err = runKubectl(ctx, env, path, "bkcache", "version")
	if err != nil || !strings.HasPrefix(out, "kubectl-bkcache ") {
		t.Fatalf("kubectl bkcache version: %v: %q %s", err, out, stderr)
	}
	// The plugin takes kubectl's connection flags against this cluster.
	out, stderr, err = runKubectl(ctx, env, path, "bkcache", "--kubeconfig", env.Kubeconfig, "version", "-o", "json")
	if err != nil || !strings.Contains(out, `"plugin": "kubectl-bkcache"`) {
		t.Fatalf("kubectl bkcache version -o json: %v: %q %s", err, out, stderr)
	}
	out, stderr, err = runKubectl(ctx, env, path, "version", "-o", "json")
	if err != nil || !strings.Contains(out, `"serverVersion"`) {
		t.Fatalf("kubectl version: %v: %s %s", err, out, stderr)
	}
}

// runKubectl runs the real kubectl against the cluster; extraEnv overrides the environment.
func runKubectl(ctx context.Context, env clustertest.Env, extraEnv []string, args ...string) (string, string, error) {
	cmd := exec.CommandContext(ctx, kubectlPath, args...)
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+env.Kubeconfig), extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}
