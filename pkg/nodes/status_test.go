package nodes

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/bkcache/bkcache/pkg/dockerd"
)

// cluster is five nodes of every kind the runner meets, on in-memory nodes.
func cluster() ([]corev1.Node, *memAccess) {
	c1 := newMemNode(map[string]string{DefaultContainerdConfig: cfg16, dockerHost: siteMirror})
	d1 := newMemNode(map[string]string{dockerd.DefaultPath: siteDaemon})
	d1.dockerd = &memDockerd{running: []byte(siteDaemon)}
	bad := newMemNode(map[string]string{DefaultContainerdConfig: "version = [\n"})
	c1.name, d1.name, bad.name = "c1", "d1", "bad"
	nodes := []corev1.Node{
		kubeNode("c1", "containerd://1.6.20"), kubeNode("d1", docker), kubeNode("crio", "cri-o://1.30.0"),
		kubeNode("notready", "containerd://1.7.0"), kubeNode("gone", "containerd://1.7.0"), kubeNode("bad", "containerd://1.6.20"),
	}
	nodes[3].Status.Conditions[0].Status = corev1.ConditionFalse
	nodes[0].Status.Images = []corev1.ContainerImage{{Names: []string{"docker.io/library/busybox:1.36"}}}
	a := &memAccess{
		nodes:   map[string]*memNode{"c1": c1, "d1": d1, "bad": bad},
		openErr: map[string]error{"gone": errors.New("node gone: node-access pod bkcache-node-x: ErrImagePull: …")},
	}
	return nodes, a
}

func byNode[T any](items []T, name func(T) string) map[string]T {
	m := map[string]T{}
	for _, it := range items {
		m[name(it)] = it
	}
	return m
}

func TestMirrorOrchestration(t *testing.T) {
	ctx := context.Background()
	nodes, a := cluster()
	o := opts(runID)
	o.DryRun = true
	reports := mirror(ctx, o, nodes, a)
	if got := len(reports); got != len(nodes) {
		t.Fatalf("%d reports for %d nodes", got, len(nodes))
	}
	for i, r := range reports {
		if r.Node != nodes[i].Name {
			t.Errorf("report %d is for %s, want node order (%s)", i, r.Node, nodes[i].Name)
		}
	}
	rs := byNode(reports, func(r NodeReport) string { return r.Node })
	want := map[string]State{"c1": StatePlanned, "d1": StatePlanned, "crio": StateSkipped, "notready": StateUnreachable, "gone": StateUnreachable, "bad": StateFailed}
	for name, st := range want {
		if rs[name].Status != st {
			t.Errorf("%s: status %s, want %s (%+v)", name, rs[name].Status, st, rs[name])
		}
	}
	for _, name := range []string{"crio", "notready", "gone", "bad"} {
		if r := rs[name]; r.Read() || len(r.Files) > 0 || r.ConfigChanged || r.RestartNeeded {
			t.Errorf("%s: a node whose files were not read reports a plan: %+v", name, r)
		}
	}
	if !strings.Contains(rs["gone"].Error, "ErrImagePull") || !strings.Contains(rs["notready"].Error, "NotReady") || rs["bad"].FailedStep != stepPlan {
		t.Errorf("reasons: gone %q, notready %q, bad step %q", rs["gone"].Error, rs["notready"].Error, rs["bad"].FailedStep)
	}
	if img := rs["c1"].AccessImage; img == nil || img.Image != "docker.io/library/busybox:1.36" || img.Source != ImageSubstitute {
		t.Errorf("c1 access image: %+v", img)
	}
	if !Failed(reports) || !a.nodes["c1"].closed || !a.nodes["bad"].closed {
		t.Error("Failed() is false, or an opened node was not closed")
	}
	if len(a.nodes["c1"].hostCmds)+a.nodes["c1"].restarts != 0 || a.nodes["c1"].dirs[DefaultBackupDir] {
		t.Error("dry run changed a node")
	}

	// Apply, then a second run: changed, then unchanged.
	o.DryRun = false
	rs = byNode(mirror(ctx, o, nodes, a), func(r NodeReport) string { return r.Node })
	if rs["c1"].Status != StateChanged || !rs["c1"].Restarted || rs["d1"].Status != StateChanged || !rs["d1"].Reloaded {
		t.Fatalf("apply: c1 %+v\nd1 %+v", rs["c1"], rs["d1"])
	}
	o2 := opts("20260101T000100Z-bbbbbb")
	rs = byNode(mirror(ctx, o2, nodes, a), func(r NodeReport) string { return r.Node })
	if rs["c1"].Status != StateUnchanged || rs["d1"].Status != StateUnchanged {
		t.Errorf("second run: c1 %s d1 %s", rs["c1"].Status, rs["d1"].Status)
	}

	// Status after the apply: what is on each node now.
	sts := byNode(status(ctx, o2, nodes, a), func(s NodeStatus) string { return s.Node })
	c1 := sts["c1"]
	if c1.Status != StateOK || c1.Config == nil || c1.Config.ConfigPath != "/etc/containerd/certs.d" ||
		c1.Hosts["hub.bktencent.com"].Hosts[0] != "http://10.0.0.5:5500" || !slices.Equal(c1.Hosts["docker.io"].Hosts, []string{"http://10.0.0.5:5500", "https://site-mirror:443"}) ||
		!slices.Equal(c1.Backups, []string{runID}) {
		t.Errorf("status c1: %+v", c1)
	}
	if d := sts["d1"]; d.Status != StateOK || d.Docker == nil || !slices.Equal(d.Docker.InsecureRegistries, []string{"10.0.0.5:5500"}) || d.ConfigFile != dockerd.DefaultPath {
		t.Errorf("status d1: %+v", d)
	}
	for name, st := range map[string]State{"crio": StateSkipped, "notready": StateUnreachable, "gone": StateUnreachable, "bad": StateFailed} {
		s := sts[name]
		if s.Status != st || s.Config != nil || s.Hosts != nil || s.Docker != nil || s.Backups != nil {
			t.Errorf("status %s: %+v, want %s and nothing read", name, s, st)
		}
	}
	if !strings.Contains(sts["bad"].Error, "does not parse as TOML") || !strings.Contains(sts["crio"].Warnings[0], "only containerd and docker") {
		t.Errorf("status reasons: bad %q crio %q", sts["bad"].Error, sts["crio"].Warnings)
	}

	// Revert through the runner: every reachable node back, unreachable ones untouched.
	o3 := opts("20260101T000200Z-cccccc")
	o3.Revert = true
	rs = byNode(mirror(ctx, o3, nodes, a), func(r NodeReport) string { return r.Node })
	if rs["c1"].Status != StateReverted || rs["d1"].Status != StateReverted || rs["gone"].Status != StateUnreachable {
		t.Errorf("revert: c1 %s d1 %s gone %s", rs["c1"].Status, rs["d1"].Status, rs["gone"].Status)
	}
	if string(a.nodes["c1"].files[DefaultContainerdConfig]) != cfg16 || string(a.nodes["d1"].files[dockerd.DefaultPath]) != siteDaemon {
		t.Error("revert did not restore the files")
	}
}

// A status read that fails half-way shows nothing it read.
func TestStatusFailureShowsNothingRead(t *testing.T) {
	n := newMemNode(map[string]string{DefaultContainerdConfig: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n"})
	n.failOn["list "+DefaultBackupDir] = errors.New("permission denied")
	st := status(context.Background(), opts(runID), []corev1.Node{kubeNode("node-1", "containerd://1.7.0")}, &memAccess{nodes: map[string]*memNode{"node-1": n}})
	if s := st[0]; s.Status != StateFailed || s.Config != nil || s.ConfigFile != "" || !strings.Contains(s.Error, "permission denied") {
		t.Errorf("status: %+v", s)
	}
}

func TestPickNodes(t *testing.T) {
	list := []corev1.Node{kubeNode("a", "containerd://1.7.0"), kubeNode("b", "containerd://1.7.0")}
	if got, err := pickNodes(list, nil, ""); err != nil || len(got) != 2 {
		t.Errorf("all: %v %v", got, err)
	}
	if got, err := pickNodes(list, []string{"b"}, ""); err != nil || len(got) != 1 || got[0].Name != "b" {
		t.Errorf("b: %v %v", got, err)
	}
	if _, err := pickNodes(list, []string{"c"}, "role=x"); err == nil || !strings.Contains(err.Error(), `node "c" not found (or not matching selector "role=x")`) {
		t.Errorf("c: %v", err)
	}
	if _, err := pickNodes(nil, nil, "role=x"); err == nil {
		t.Error("no nodes accepted")
	}
}
