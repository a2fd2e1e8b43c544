//go:build cluster

package kubectl

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
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
	// busy is the share of the machine's CPU time the last run used: near 1,
	// the nodes (all on this host) were waiting for CPUs, not for each other.
	var busy float64
	run := func(extra ...string) time.Duration {
		b.Helper()
		settle(ctx, b, env)
		args := append([]string{"bkcache", "mirror", "-o", "json", "--registry", "127.0.0.1:5500", "--image", env.NodeImage}, extra...)
		cpu0, start := machineCPU(b), time.Now()
		out, stderr, err := runKubectl(ctx, env, path, args...)
		if err != nil {
			b.Fatalf("mirror %v: %v\n%s%s", extra, err, out, stderr)
		}
		d := time.Since(start)
		busy = (machineCPU(b) - cpu0).Seconds() / (d.Seconds() * float64(runtime.NumCPU()))
		return d
	}
	var one, all []time.Duration
	var oneBusy, allBusy []float64
	for i := 0; i < b.N; i++ {
		one = append(one, run("--nodes", env.NodeName))
		oneBusy = append(oneBusy, busy)
		run("--revert", "--nodes", env.NodeName)
		all = append(all, run())
		allBusy = append(allBusy, busy)
		run("--revert")
	}
	slices.Sort(oneBusy)
	slices.Sort(allBusy)
	b.Logf("CPU of this %d-core host in use during the runs (median): 1 node %.0f%%, %d nodes %.0f%%",
		runtime.NumCPU(), 100*oneBusy[len(oneBusy)/2], len(env.Nodes), 100*allBusy[len(allBusy)/2])
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

// machineCPU is the CPU time all processes of this machine used so far
// (user, nice, system, irq and softirq of /proc/stat's first line).
func machineCPU(b *testing.B) time.Duration {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		b.Fatalf("/proc/stat: unexpected first line %q", line)
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7} {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			b.Fatalf("/proc/stat: %q: %v", line, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ is 100 on Linux
}
