package nodes

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// PullResult is one verification pull on a node.
type PullResult struct {
	Image   string  `json:"image"`
	Pulled  bool    `json:"pulled"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
}

// CacheName rewrites image to the cache's own name (HOST:PORT/repo:tag). That name has only
// the cache behind it (its hosts.toml has the cache as server), so a pull by it succeeding
// proves the node reaches the cache and the cache serves the image.
func CacheName(image, cache string) string {
	first, rest, ok := strings.Cut(image, "/")
	if !ok || !strings.ContainsAny(first, ".:") && first != "localhost" {
		rest = image // docker.io short name
		if !strings.Contains(rest, "/") {
			rest = "library/" + rest
		}
	}
	return cache + "/" + rest
}

// VerifyPull makes the kubelet on node pull image (imagePullPolicy Always: through the CRI,
// as for any pod) in a pod that never runs the image's program, and reports the outcome.
func (a *Access) VerifyPull(ctx context.Context, node, image string) PullResult {
	start := time.Now()
	res := PullResult{Image: image}
	zero := int64(0)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "bkcache-verify-",
			Labels:       map[string]string{LabelManagedBy: "bkcache", LabelComponent: "verify", LabelRun: a.RunID},
		},
		Spec: corev1.PodSpec{
			NodeName: node, HostNetwork: true, RestartPolicy: corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: &zero, AutomountServiceAccountToken: new(bool),
			Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{
				Name: "pull", Image: image, ImagePullPolicy: corev1.PullAlways,
				// Only the pull matters: the program does not exist, so nothing from the image runs.
				Command: []string{"/bkcache-verify-does-not-run"},
			}},
		},
	}
	created, err := a.Client.CoreV1().Pods(a.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		res.Error = fmt.Sprintf("create verify pod: %v", err)
		return res
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = a.Client.CoreV1().Pods(a.Namespace).Delete(dctx, created.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	}()
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	err = wait.PollUntilContextCancel(wctx, 300*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := a.Client.CoreV1().Pods(a.Namespace).Get(ctx, created.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range p.Status.ContainerStatuses {
			switch {
			case c.ImageID != "" || c.State.Running != nil || c.State.Terminated != nil:
				res.Pulled = true
				return true, nil
			case c.State.Waiting != nil:
				switch c.State.Waiting.Reason {
				case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull":
					res.Error = c.State.Waiting.Reason + ": " + c.State.Waiting.Message
					return true, nil
				case "CreateContainerError", "RunContainerError", "StartError":
					res.Pulled = true // it got as far as starting: the image is there
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil && res.Error == "" {
		res.Error = fmt.Sprintf("no pull outcome within 3m: %v", err)
	}
	res.Seconds = time.Since(start).Seconds()
	return res
}

// verifyNode pulls o.Verify by the cache's name (only the cache can serve that) and by its own
// name (the kubelet's path for the deployment's pods).
func verifyNode(ctx context.Context, o MirrorOptions, r *NodeReport, access NodeAccess) error {
	var failed []string
	for _, img := range []string{CacheName(o.Verify, o.Registry), o.Verify} {
		res := access.VerifyPull(ctx, r.Node, img)
		r.Verified = append(r.Verified, res)
		if !res.Pulled {
			failed = append(failed, fmt.Sprintf("%s: %s", img, res.Error))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("pull failed: %s; check that the node reaches %s and the cache holds or can fetch the image", strings.Join(failed, "; "), o.Registry)
	}
	return nil
}
