//go:build cluster

package kubectl

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/clustertest"
)

// BenchmarkMirrorNodes (P4): `kubectl bkcache mirror` on one node, then on every node at once
// (apply, then --revert, with the command's defaults for the nodes' files); the nodes run in
// parallel, so three should cost about what one does. Prints the median of each and the ratio.
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
