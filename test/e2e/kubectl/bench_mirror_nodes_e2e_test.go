//go:build cluster

package kubectl

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/bkcache/bkcache/internal/clustertest"
)

// BenchmarkMirrorNodes (P4): `kubectl bkcache mirror` on one node, then on every node at once
// (apply, then --revert, with the command's defaults for the nodes' files); the nodes run in
// parallel, so three should cost about what one does. Prints the median of each and the ratio.
// Each timed run starts once the nodes have torn down the pods of the run before (mirror
// returns while its deleted pods are still being stopped): else one run pays for another's.
//
//	go test -tags cluster -run '^$' -bench BenchmarkMirrorNodes -benchtime 5x ./test/e2e/kubectl/
func BenchmarkMirrorNodes(b *testing.B) {
	env := clustertest.Get(b)
	env.NeedNodes(b, 3)
	path, _ := pluginPath(b, env)
	removeOnNodes(b, env, "/etc/containerd/certs.d/hub.bktencent.com", "/etc/containerd/certs.d/127.0.0.1:5500", "/var/lib/bkcache/backups")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	run := func(extra ...string) time.Duration {
		b.Helper()
		settle(ctx, b, env)
		args := append([]string{"bkcache", "mirror", "-o", "json", "--registry", "127.0.0.1:5500", "--image", env.NodeImage}, extra...)
		start := time.Now()
		out, stderr, err := runKubectl(ctx, env, path, args...)
		if err != nil {
			b.Fatalf("mirror %v: %v\n%s%s", extra, err, out, stderr)
		}
		return time.Since(start)
	}
	var one, all []time.Duration
	for i := 0; i < b.N; i++ {
		one = append(one, run("--nodes", env.NodeName))
		run("--revert", "--nodes", env.NodeName)
		all = append(all, run())
		run("--revert")
	}
	med := func(d []time.Duration) time.Duration { s := slices.Clone(d); slices.Sort(s); return s[len(s)/2] }
	ratio := float64(med(all)) / float64(med(one))
	b.ReportMetric(med(one).Seconds(), "s-1-node")
	b.ReportMetric(med(all).Seconds(), "s-3-nodes")
	b.ReportMetric(ratio, "ratio")
	b.Logf("mirror apply, median of %d: 1 node %s, %d nodes %s: %.2fx (P4: <= 1.3x); all runs: 1 node %v, %d nodes %v",
		b.N, med(one).Round(time.Millisecond), len(env.Nodes), med(all).Round(time.Millisecond), ratio, one, len(env.Nodes), all)
}

// settle waits until no node runs a task of a node-access pod (a stopped pod's container
// stays listed until the kubelet's garbage collection, a minute later: its task is what counts).
func settle(ctx context.Context, b *testing.B, env clustertest.Env) {
	b.Helper()
	ctr := func(ctx context.Context, n clustertest.Node, args ...string) ([]string, error) {
		out, err := exec.CommandContext(ctx, "ctr", append([]string{"-a", n.ContainerdSock, "-n", "k8s.io"}, args...)...).Output()
		var first []string
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) > 0 {
				first = append(first, f[0])
			}
		}
		return first, err
	}
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, n := range env.Nodes {
			ids, err := ctr(ctx, n, "containers", "ls", "-q", `labels."io.kubernetes.pod.name"~="^bkcache-node-"`)
			if err != nil {
				return false, nil
			}
			tasks, err := ctr(ctx, n, "tasks", "ls")
			if err != nil || slices.ContainsFunc(tasks, func(t string) bool { return slices.Contains(ids, t) }) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		b.Fatalf("node-access pods of the run before still running on the nodes after 2m: %v", err)
	}
}
