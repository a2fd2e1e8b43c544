package nodes

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
)

// podPollInterval is how often a node-access pod is read when it cannot be watched, and how
// often a watched pod's silence is weighed (no status from the kubelet for a while).
const podPollInterval = 250 * time.Millisecond

// waitPod follows a new node-access pod until it runs or will not start (classifyPod) and
// returns its last state and verdict; an error is ctx ending first. It watches the pod, so
// the kubelet's Running arrives at once: reading it at intervals made each node wait up to
// an interval longer, and a run over many nodes waits for the unluckiest of them. Where the
// watch is refused (a ClusterRole without watch on pods), it reads the pod at intervals.
func (a *Access) waitPod(ctx context.Context, created *corev1.Pod, start time.Time) (*corev1.Pod, podVerdict, error) {
	pods := a.Client.CoreV1().Pods(a.Namespace)
	last, verdict := created, classifyPod(created, time.Since(start))
	settled := func(p *corev1.Pod) bool {
		if p != nil {
			last = p
		}
		verdict = classifyPod(last, time.Since(start))
		return verdict.running || verdict.cause != causeNone
	}
	tick := time.NewTicker(podPollInterval)
	defer tick.Stop()
	polling := false
	for {
		var events <-chan watch.Event
		var w watch.Interface
		if !polling {
			var err error
			w, err = pods.Watch(ctx, metav1.ListOptions{
				FieldSelector:   fields.OneTermEqualSelector("metadata.name", created.Name).String(),
				ResourceVersion: last.ResourceVersion,
			})
			switch {
			case err == nil:
				events = w.ResultChan()
			case apierrors.IsForbidden(err) || apierrors.IsMethodNotSupported(err):
				polling = true
			}
		}
		p, done, err := a.follow(ctx, events, tick.C, last.Name, settled)
		if w != nil {
			w.Stop()
		}
		if done || err != nil {
			return last, verdict, err
		}
		if p != nil {
			last = p // the watch ended: watch again from here
		}
	}
}

// follow takes the pod's states from events (nil: none) and, at each tick, reads it when
// there are no events or weighs its silence when there are. It returns when the pod is
// settled, when ctx ends, or after a read (to watch again from the pod it returns).
func (a *Access) follow(ctx context.Context, events <-chan watch.Event, tick <-chan time.Time, name string, settled func(*corev1.Pod) bool) (*corev1.Pod, bool, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case ev, ok := <-events:
			p, isPod := ev.Object.(*corev1.Pod)
			if !ok || ev.Type == watch.Error || !isPod {
				// Ended (the server closes watches now and then) or failed: the next tick
				// reads the pod, and the next watch starts from that version.
				events = nil
				continue
			}
			if settled(p) {
				return nil, true, nil
			}
		case <-tick:
			if events != nil {
				if settled(nil) {
					return nil, true, nil
				}
				continue
			}
			p, err := a.Client.CoreV1().Pods(a.Namespace).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				continue // transient; the deadline decides
			}
			if settled(p) {
				return nil, true, nil
			}
			return p, false, nil // watch again, unless polling
		}
	}
}
