package nodes

import (
	"cmp"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/bkcache/bkcache/pkg/imageref"
)

// kubeletAckTimeout is how long a pod pinned to a node may go without any status from the
// node's kubelet before the node is given up: a healthy kubelet reports within a second or two.
const kubeletAckTimeout = 20 * time.Second

// podCause is why a node-access pod will not start.
type podCause string

const (
	causeNone      podCause = ""
	causeImage     podCause = "image"     // the node cannot pull or find the image
	causeContainer podCause = "container" // the runtime cannot create or start the container
	causeSchedule  podCause = "schedule"  // the pod is not placed on the node
	causeRefused   podCause = "refused"   // the kubelet refused or ended the pod (admission, eviction)
	causeNoKubelet podCause = "kubelet"   // the node's kubelet never took the pod up
)

// Waiting reasons of the kubelet that do not go away by waiting longer (pkg/kubelet/images
// and pkg/kubelet/container): the first one ends the wait.
var (
	imageReasons     = []string{"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "ErrImageInspect", "RegistryUnavailable", "SignatureValidationFailed"}
	containerReasons = []string{"CreateContainerError", "CreateContainerConfigError", "RunContainerError", "StartError", "PreStartHookError", "PostStartHookError"}
)

// podVerdict is what a node-access pod's status says about waiting for it.
type podVerdict struct {
	running bool
	cause   podCause // set: the pod will not start, stop waiting
	reason  string   // the kubelet's or scheduler's reason
	message string
}

// classifyPod reads a node-access pod's status, waited after its creation.
func classifyPod(p *corev1.Pod, waited time.Duration) podVerdict {
	st := p.Status
	switch st.Phase {
	case corev1.PodRunning:
		return podVerdict{running: true}
	case corev1.PodFailed, corev1.PodSucceeded:
		v := podVerdict{cause: causeRefused, reason: st.Reason, message: st.Message}
		for _, c := range st.ContainerStatuses {
			if t := c.State.Terminated; t != nil && v.reason == "" {
				v.reason, v.message = t.Reason, t.Message
			}
		}
		if v.reason == "" {
			v.reason = "Pod" + string(st.Phase)
		}
		return v
	}
	for _, c := range st.ContainerStatuses {
		w := c.State.Waiting
		switch {
		case w == nil:
		case slices.Contains(imageReasons, w.Reason):
			return podVerdict{cause: causeImage, reason: w.Reason, message: w.Message}
		case slices.Contains(containerReasons, w.Reason):
			return podVerdict{cause: causeContainer, reason: w.Reason, message: w.Message}
		}
	}
	for _, c := range st.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return podVerdict{cause: causeSchedule, reason: c.Reason, message: c.Message}
		}
	}
	if len(st.Conditions) == 0 && len(st.ContainerStatuses) == 0 && waited >= kubeletAckTimeout {
		return podVerdict{cause: causeNoKubelet, reason: "NoKubeletStatus",
			message: fmt.Sprintf("no status from the node's kubelet %s after the pod was created", waited.Round(time.Second))}
	}
	return podVerdict{}
}

// explain is the error text for a pod that will not start: the reason and the fix.
func (v podVerdict) explain(img AccessImage) string {
	what := fmt.Sprintf("%s: %s", v.reason, strings.TrimSpace(v.message))
	switch v.cause {
	case causeImage:
		fix := fmt.Sprintf("the node cannot pull %s. Give an image the node holds or can pull with --image REGISTRY/…/busybox:TAG (it needs sh, base64, sha256sum and chroot)", img.Image)
		if img.Source != ImageGiven {
			fix += fmt.Sprintf(", or put %s into the registry the nodes pull from (add it to the docker bkcache push list)", img.Image)
		}
		return what + "; " + fix
	case causeContainer:
		return what + fmt.Sprintf("; the runtime cannot create the container from %s: check the runtime on the node (journalctl -u containerd), or try another image with --image", img.Image)
	case causeSchedule:
		return what + "; the pod is not placed on the node: check that the node takes pods (kubectl describe node: cordon, capacity)"
	case causeRefused:
		return what + "; the kubelet refused or ended the pod: kubectl describe node says why (e.g. OutOfpods: the node runs its maximum number of pods)"
	case causeNoKubelet:
		return what + "; check the kubelet on the node (journalctl -u kubelet)"
	}
	return what
}

// chooseImage picks the node-access image for one node: --image as given; else the default
// when the node holds it; else a known busybox or alpine image the node holds (knownShells);
// else the default, for the kubelet to pull.
func chooseImage(given string, held []corev1.ContainerImage) AccessImage {
	if given != "" {
		return AccessImage{Image: given, Source: ImageGiven}
	}
	want, _ := imageref.Normalize(DefaultAccessImage)
	type candidate struct {
		name string
		rank int
	}
	var cands []candidate
	for _, ci := range held {
		for _, name := range ci.Names {
			norm, err := imageref.Normalize(name)
			if err != nil {
				continue
			}
			if norm == want {
				return AccessImage{Image: DefaultAccessImage, Source: ImageOnNode}
			}
			if rank := substituteRank(norm); rank > 0 {
				cands = append(cands, candidate{name, rank})
			}
		}
	}
	if len(cands) == 0 {
		return AccessImage{Image: DefaultAccessImage, Source: ImagePull}
	}
	best := slices.MinFunc(cands, func(a, b candidate) int {
		return cmp.Or(cmp.Compare(a.rank, b.rank), cmp.Compare(a.name, b.name))
	})
	return AccessImage{Image: best.name, Source: ImageSubstitute}
}

// knownShells are the repositories whose images carry sh, base64, sha256sum and chroot: the
// official busybox and alpine and BlueKing's copies, on any registry (an intranet registry or
// the cache keeps the path). Another repository named busybox could hold anything.
var knownShells = map[string]int{"library/busybox": 1, "blueking/busybox": 1, "library/alpine": 5}

// substituteRank orders the images that can stand in for the default (lower is better; 0:
// not one): busybox before alpine, BlueKing's registry first, names with a tag before
// digest-only names.
func substituteRank(ref string) int {
	name, _, _ := strings.Cut(ref, "@")
	_, repo, _ := strings.Cut(name, "/") // ref is normalised: registry/repository[:tag]
	hasTag := strings.Contains(path.Base(repo), ":")
	repo, _, _ = strings.Cut(repo, ":")
	rank := knownShells[repo]
	if rank == 0 {
		return 0
	}
	if imageref.Registry(ref) != "hub.bktencent.com" {
		rank++
	}
	if !hasTag {
		rank += 2
	}
	return rank
}

// describe says which image a node's pod uses and why.
func (i AccessImage) describe() string {
	switch i.Source {
	case ImageGiven:
		return fmt.Sprintf("node-access image %s (--image)", i.Image)
	case ImageOnNode:
		return fmt.Sprintf("node-access image %s (the node holds it)", i.Image)
	case ImageSubstitute:
		return fmt.Sprintf("node-access image %s, which the node holds (%s is not on the node; --image overrides)", i.Image, DefaultAccessImage)
	}
	return fmt.Sprintf("node-access image %s is not on the node: the kubelet pulls it (offline: --image, or add it to the push list)", i.Image)
}
