// Package nodes is `kubectl bkcache mirror`: it points containerd (hosts.toml) or dockerd
// (daemon.json) on every node at the cache, all or nothing per node, and reverts it.
//
// A node's files and commands are reached through the Kubernetes API alone: a short-lived
// privileged pod pinned to the node (the node's / mounted at /host), driven by exec. File
// contents travel as base64 inside the command, never on stdin (stdin over exec loses short
// payloads now and then: kubernetes/kubernetes#112834, containerd#12734), and every write is checked by reading back its sha256.
// Paths are validated and passed as positional arguments, never spliced into shell code.
//
// Files by job: options.go (options, defaults, checks), run.go (node selection, the parallel
// runner over the Node interface), plan.go and docker.go (what changes on containerd and
// Docker nodes), apply.go (backup, writes, restart, one rollback), revert.go, status.go,
// verify.go, access.go and podstate.go (the node-access pod), session.go (a node's files
// through that pod).
package nodes

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/bkcache/bkcache/manifests"
)

// Labels on every node-access pod; a later run deletes leftovers by them.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelComponent = "app.kubernetes.io/component"
	LabelRun       = "bkcache.io/run"
	hostMount      = "/host"
	// maxArg keeps one base64 argument under Linux's 128 KiB limit per argument.
	maxArg = 120 << 10
)

// DefaultAccessImage is the node-access pod's image when --image is not given: the busybox
// BlueKing's own charts pull, so every BlueKing node can pull it before any mirror exists.
const DefaultAccessImage = "hub.bktencent.com/library/busybox:1.34.0"

// DefaultPodTimeout is how long a node-access pod may take to start (an image pull included).
const DefaultPodTimeout = 2 * time.Minute

// Access creates node-access pods.
type Access struct {
	Client    kubernetes.Interface
	Config    *rest.Config
	Namespace string
	// Image is --image: used as is on every node. Empty: DefaultAccessImage, or when a node
	// does not hold it, a busybox or alpine image the node holds (node.status.images).
	Image      string
	RunID      string        // labels this run's pods
	PodTimeout time.Duration // how long a pod may take to start (default 2 min)
	// Progress, when set, hears what happens on a node while it happens (the image chosen, a
	// restart under way); the reports carry the outcome.
	Progress func(node, msg string)
}

func (a *Access) progress(node, format string, args ...any) {
	if a.Progress != nil {
		a.Progress(node, fmt.Sprintf(format, args...))
	}
}

// Session is one running node-access pod.
type Session struct {
	a    *Access
	Node string
	Pod  string
}

// Open chooses the node-access image for node, starts the pod and waits until it runs. A
// pod that cannot start (image not pullable, container not creatable, refused by the
// kubelet) ends the wait at once with the kubelet's reason and the fix.
func (a *Access) Open(ctx context.Context, node *corev1.Node) (Node, AccessImage, error) {
	img := chooseImage(a.Image, node.Status.Images)
	a.progress(node.Name, "%s", img.describe())
	s, err := a.open(ctx, node.Name, img)
	if err != nil {
		return nil, img, err
	}
	return s, img, nil
}

func (a *Access) open(ctx context.Context, node string, img AccessImage) (*Session, error) {
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(manifests.NodeAccessPod, &pod); err != nil {
		return nil, fmt.Errorf("internal error: manifests/node-access-pod.yaml: %w", err)
	}
	pod.Namespace = a.Namespace
	pod.Labels[LabelRun] = a.RunID
	pod.Spec.NodeName = node
	pod.Spec.Containers[0].Image = img.Image
	created, err := a.Client.CoreV1().Pods(a.Namespace).Create(ctx, &pod, metav1.CreateOptions{})
	if err != nil {
		if ctx.Err() != nil {
			// Cancelled mid-call: the server may have created the pod anyway.
			a.deleteRunPods(ctx, node)
		}
		return nil, fmt.Errorf("node %s: create the node-access pod in namespace %s: %w", node, a.Namespace, err)
	}
	s := &Session{a: a, Node: node, Pod: created.Name}
	timeout := a.PodTimeout
	if timeout == 0 {
		timeout = DefaultPodTimeout
	}
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last, verdict, err := a.waitPod(wctx, created, start)
	if err == nil && verdict.running {
		return s, nil
	}
	_ = s.Close(context.WithoutCancel(ctx))
	if ctx.Err() != nil {
		return nil, fmt.Errorf("node %s: stopped while waiting for the node-access pod %s/%s: %w", node, a.Namespace, s.Pod, context.Cause(ctx))
	}
	if verdict.cause != causeNone {
		return nil, fmt.Errorf("node %s: node-access pod %s/%s: %s", node, a.Namespace, s.Pod, verdict.explain(img))
	}
	return nil, fmt.Errorf("node %s: node-access pod %s/%s did not start within %s%s; check that the node is Ready and can run image %s (--image)",
		node, a.Namespace, s.Pod, timeout, waitingReason(last), img.Image)
}

func waitingReason(p *corev1.Pod) string {
	if p == nil {
		return ""
	}
	for _, c := range p.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil {
			return fmt.Sprintf(" (%s: %s)", w.Reason, w.Message)
		}
	}
	return fmt.Sprintf(" (phase %s)", p.Status.Phase)
}

// Close deletes the pod without grace. It uses its own deadline so it also runs after Ctrl-C.
func (s *Session) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	zero := int64(0)
	err := s.a.Client.CoreV1().Pods(s.a.Namespace).Delete(ctx, s.Pod, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("node %s: delete pod %s/%s: %w (delete it by hand)", s.Node, s.a.Namespace, s.Pod, err)
	}
	return nil
}

// deleteRunPods deletes this run's pods on node, best effort, also after cancellation.
func (a *Access) deleteRunPods(ctx context.Context, node string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	zero := int64(0)
	_ = a.Client.CoreV1().Pods(a.Namespace).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &zero},
		metav1.ListOptions{LabelSelector: LabelRun + "=" + a.RunID, FieldSelector: "spec.nodeName=" + node})
}

// CleanupLeftovers deletes node-access pods that earlier runs left behind (killed mid-run);
// pods of runs that may still be going (younger than maxAge) are left alone.
func (a *Access) CleanupLeftovers(ctx context.Context, maxAge time.Duration) (int, error) {
	sel := LabelManagedBy + "=bkcache," + LabelComponent + "=node-access," + LabelRun + "!=" + a.RunID
	pods, err := a.Client.CoreV1().Pods(a.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return 0, fmt.Errorf("list leftover node-access pods in %s: %w", a.Namespace, err)
	}
	n := 0
	zero := int64(0)
	for _, p := range pods.Items {
		if time.Since(p.CreationTimestamp.Time) < maxAge {
			continue
		}
		if err := a.Client.CoreV1().Pods(a.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
			return n, fmt.Errorf("delete leftover pod %s/%s: %w", a.Namespace, p.Name, err)
		}
		n++
	}
	return n, nil
}
