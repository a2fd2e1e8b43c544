package nodes

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func pendingPod() *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bkcache-node-x", Namespace: "ns", ResourceVersion: "1"}}
}

// The pod's states come by watch: Running, or a reason it will not start, ends the wait as
// soon as the kubelet reports it.
func TestWaitPodWatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state corev1.PodStatus
		want  podVerdict
	}{
		{"running", corev1.PodStatus{Phase: corev1.PodRunning}, podVerdict{running: true}},
		{"image", corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "not found"}}}}},
			podVerdict{cause: causeImage, reason: "ErrImagePull", message: "not found"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewClientset(pendingPod())
			fw := watch.NewFake()
			cs.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) { return true, fw, nil })
			a := &Access{Client: cs, Namespace: "ns"}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			go func() {
				// No Get in between: the wait lives on the watch's events alone. The first
				// state changes nothing; the second settles it.
				p := pendingPod()
				p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}}
				fw.Modify(p)
				p = pendingPod()
				p.Status = tc.state
				fw.Modify(p)
			}()
			_, v, err := a.waitPod(ctx, pendingPod(), time.Now())
			if err != nil || v != tc.want {
				t.Fatalf("verdict %+v, %v; want %+v", v, err, tc.want)
			}
		})
	}
}

// A user whose role may not watch pods still gets the wait, by reading the pod.
func TestWaitPodWatchRefused(t *testing.T) {
	running := pendingPod()
	running.Status.Phase = corev1.PodRunning
	cs := fake.NewClientset(running)
	watches := 0
	cs.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) {
		watches++
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", nil)
	})
	a := &Access{Client: cs, Namespace: "ns"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, v, err := a.waitPod(ctx, pendingPod(), time.Now())
	if err != nil || !v.running || watches != 1 {
		t.Fatalf("verdict %+v, %v, %d watches", v, err, watches)
	}
}

// A watch that ends (the server closes watches now and then) is followed by a read of the pod.
func TestWaitPodWatchEnds(t *testing.T) {
	running := pendingPod()
	running.Status.Phase = corev1.PodRunning
	cs := fake.NewClientset(running)
	fw := watch.NewFake()
	fw.Stop() // ends at once
	cs.PrependWatchReactor("pods", func(k8stesting.Action) (bool, watch.Interface, error) { return true, fw, nil })
	a := &Access{Client: cs, Namespace: "ns"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, v, err := a.waitPod(ctx, pendingPod(), time.Now()); err != nil || !v.running {
		t.Fatalf("verdict %+v, %v", v, err)
	}
}
