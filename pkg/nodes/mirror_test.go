package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"path"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/bkcache/bkcache/manifests"
	"github.com/bkcache/bkcache/pkg/dockerd"
)

// memNode is a node's file system in memory: path -> bytes; dirs is the set of directories.
type memNode struct {
	files      map[string][]byte
	dirs       map[string]bool
	restarts   int
	restartErr error
	hostCmds   []string
	dockerd    *memDockerd // nil: no docker on the node
}

func newMemNode(files map[string]string) *memNode {
	n := &memNode{files: map[string][]byte{}, dirs: map[string]bool{"/": true, "/var": true, "/var/lib": true}}
	for p, c := range files {
		n.files[p] = []byte(c)
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			n.dirs[d] = true
		}
	}
	return n
}

func (n *memNode) Name() string { return "node-1" }
func (n *memNode) ReadFile(_ context.Context, p string) ([]byte, bool, error) {
	if err := CheckPath(p); err != nil {
		return nil, false, err
	}
	b, ok := n.files[p]
	return b, ok, nil
}
func (n *memNode) WriteFile(_ context.Context, p string, data []byte) error {
	if !n.dirs[path.Dir(p)] {
		return errors.New("no directory " + path.Dir(p))
	}
	n.files[p] = append([]byte{}, data...)
	return nil
}
func (n *memNode) Remove(_ context.Context, p string) error { delete(n.files, p); return nil }
func (n *memNode) MkdirAll(_ context.Context, dir string) ([]string, error) {
	var created []string
	for d := dir; d != "/"; d = path.Dir(d) {
		if !n.dirs[d] {
			created = append([]string{d}, created...)
		}
	}
	for _, d := range created {
		n.dirs[d] = true
	}
	return created, nil
}
func (n *memNode) RemoveDirIfEmpty(_ context.Context, dir string) error {
	for p := range n.files {
		if strings.HasPrefix(p, dir+"/") {
			return nil
		}
	}
	for d := range n.dirs {
		if strings.HasPrefix(d, dir+"/") {
			return nil
		}
	}
	delete(n.dirs, dir)
	return nil
}
func (n *memNode) List(_ context.Context, dir string) ([]string, error) {
	seen := map[string]bool{}
	for p := range n.files {
		if rest, ok := strings.CutPrefix(p, dir+"/"); ok {
			first, _, _ := strings.Cut(rest, "/")
			seen[first] = true
		}
	}
	for d := range n.dirs {
		if rest, ok := strings.CutPrefix(d, dir+"/"); ok {
			first, _, _ := strings.Cut(rest, "/")
			seen[first] = true
		}
	}
	var out []string
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}
func (n *memNode) Rename(_ context.Context, from, to string) error {
	for p, b := range maps.Clone(n.files) {
		if rest, ok := strings.CutPrefix(p, from+"/"); ok {
			delete(n.files, p)
			n.files[to+"/"+rest] = b
		}
	}
	delete(n.dirs, from)
	n.dirs[to] = true
	return nil
}
func (n *memNode) RestartContainerd(context.Context, string) (time.Duration, error) {
	n.restarts++
	return time.Millisecond, n.restartErr
}

// memDockerd stands in for dockerd: a reload takes up daemon.json unless refuse is set, and
// `docker info` shows what was last taken up.
type memDockerd struct {
	running []byte
	refuse  bool // like dockerd with a conflicting flag: the reload "succeeds" and changes nothing
	noCLI   bool
}

func (n *memNode) RunOnHost(_ context.Context, cmd string) ([]byte, error) {
	n.hostCmds = append(n.hostCmds, cmd)
	d := n.dockerd
	switch {
	case d != nil && cmd == DefaultDockerReloadCommand:
		if !d.refuse {
			d.running = n.files[dockerd.DefaultPath]
		}
		return nil, nil
	case d != nil && cmd == dockerInfoCommand && !d.noCLI:
		return registryConfig(d.running), nil
	}
	return nil, &ExitError{Code: 127, Stderr: "sh: not found"}
}

// registryConfig is `docker info --format '{{json .RegistryConfig}}'` for a daemon.json.
func registryConfig(daemon []byte) []byte {
	c, err := dockerd.Parse(daemon)
	if err != nil {
		panic(err)
	}
	type index struct {
		Name    string
		Mirrors []string
		Secure  bool
	}
	rc := struct {
		IndexConfigs          map[string]index
		InsecureRegistryCIDRs []string
		Mirrors               []string
	}{IndexConfigs: map[string]index{}, InsecureRegistryCIDRs: []string{"127.0.0.0/8"}, Mirrors: []string{}}
	for _, m := range c.RegistryMirrors {
		rc.Mirrors = append(rc.Mirrors, strings.TrimSuffix(m, "/")+"/")
	}
	rc.IndexConfigs["docker.io"] = index{Name: "docker.io", Mirrors: rc.Mirrors, Secure: true}
	for _, r := range c.InsecureRegistries {
		if _, nw, err := net.ParseCIDR(r); err == nil {
			rc.InsecureRegistryCIDRs = append(rc.InsecureRegistryCIDRs, nw.String())
		} else {
			rc.IndexConfigs[r] = index{Name: r, Secure: false}
		}
	}
	j, _ := json.Marshal(rc)
	return j
}

func (n *memNode) snapshot() map[string]string {
	out := map[string]string{}
	for p, b := range n.files {
		if !strings.HasPrefix(p, DefaultBackupDir) {
			out[p] = string(b)
		}
	}
	for d := range n.dirs {
		if !strings.HasPrefix(d, "/var/lib/bkcache") {
			out[d+"/"] = ""
		}
	}
	return out
}

const cfg16 = `# site config
version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = ""
`

func opts(runID string) MirrorOptions {
	o := MirrorOptions{Registry: "10.0.0.5:5500", Upstreams: []string{"hub.bktencent.com", "docker.io"}}
	o.Access.RunID = runID
	if err := o.defaults(); err != nil {
		panic(err)
	}
	return o
}

func TestApplySecondRunRevert(t *testing.T) {
	ctx := context.Background()
	existing := "server = \"https://registry-1.docker.io\"\n\n[host.\"https://site-mirror:443\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
	n := newMemNode(map[string]string{
		DefaultContainerdConfig:                        cfg16,
		"/etc/containerd/certs.d/docker.io/hosts.toml": existing,
	})
	before := n.snapshot()
	o := opts("20260101T000000Z-aaaaaa")

	// Dry run: plan only.
	o.DryRun = true
	var r NodeReport
	r.Runtime = "containerd://1.6.20"
	if err := applyNode(ctx, o, n, &r); err != nil {
		t.Fatal(err)
	}
	if r.Status != "planned" || !r.RestartNeeded || len(r.Files) != 4 {
		t.Fatalf("dry run: %+v", r)
	}
	if !maps.Equal(before, n.snapshot()) || n.restarts != 0 {
		t.Fatal("dry run changed the node")
	}

	o.DryRun = false
	r = NodeReport{Runtime: "containerd://1.6.20"}
	if err := applyNode(ctx, o, n, &r); err != nil {
		t.Fatal(err)
	}
	if r.Status != "changed" || !r.ConfigChanged || !r.Restarted || n.restarts != 1 {
		t.Fatalf("apply: %+v", r)
	}
	if got := string(n.files[DefaultContainerdConfig]); !strings.Contains(got, `config_path = "/etc/containerd/certs.d"`) || !strings.HasPrefix(got, "# site config\n") {
		t.Errorf("config.toml:\n%s", got)
	}
	dockerio := string(n.files["/etc/containerd/certs.d/docker.io/hosts.toml"])
	if i, j := strings.Index(dockerio, "http://10.0.0.5:5500"), strings.Index(dockerio, "https://site-mirror:443"); i < 0 || j < i {
		t.Errorf("docker.io hosts.toml: ours not first or the site mirror lost:\n%s", dockerio)
	}
	for _, p := range []string{"hub.bktencent.com", "10.0.0.5:5500"} {
		if _, ok := n.files["/etc/containerd/certs.d/"+p+"/hosts.toml"]; !ok {
			t.Errorf("no hosts.toml for %s", p)
		}
	}
	applied := n.snapshot()

	// Second run: nothing to do, no backup, no restart.
	o2 := opts("20260101T000100Z-bbbbbb")
	r = NodeReport{Runtime: "containerd://1.6.20"}
	if err := applyNode(ctx, o2, n, &r); err != nil {
		t.Fatal(err)
	}
	if r.Status != "unchanged" || len(r.Files) != 0 || n.restarts != 1 || r.Backup != "" {
		t.Fatalf("second run: %+v", r)
	}
	if !maps.Equal(applied, n.snapshot()) {
		t.Fatal("second run changed files")
	}

	// Revert: exact bytes back, created dirs gone, restart for config.toml.
	o3 := opts("20260101T000200Z-cccccc")
	o3.Revert = true
	r = NodeReport{Runtime: "containerd://1.6.20"}
	if err := revertNode(ctx, o3, n, &r); err != nil {
		t.Fatal(err)
	}
	if r.Status != "reverted" || n.restarts != 2 {
		t.Fatalf("revert: %+v", r)
	}
	if got := n.snapshot(); !maps.Equal(before, got) {
		t.Fatalf("after revert:\n%v\nwant:\n%v", got, before)
	}
	// Nothing left to revert.
	r = NodeReport{}
	if err := revertNode(ctx, o3, n, &r); err != nil || r.Status != "unchanged" {
		t.Fatalf("second revert: %+v %v", r, err)
	}
}

func TestRevertKeepsLaterEdits(t *testing.T) {
	ctx := context.Background()
	n := newMemNode(map[string]string{DefaultContainerdConfig: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n"})
	o := opts("20260101T000000Z-aaaaaa")
	if err := applyNode(ctx, o, n, &NodeReport{Runtime: "containerd://1.7.0"}); err != nil {
		t.Fatal(err)
	}
	p := "/etc/containerd/certs.d/hub.bktencent.com/hosts.toml"
	n.files[p] = []byte("# edited by someone later\n")
	o.Revert = true
	var r NodeReport
	if err := revertNode(ctx, o, n, &r); err != nil {
		t.Fatal(err)
	}
	if string(n.files[p]) != "# edited by someone later\n" || !strings.Contains(strings.Join(r.Warnings, "\n"), "changed since") {
		t.Fatalf("revert overwrote a later edit: %+v", r)
	}
}

func TestApplyRefusesAndRollsBack(t *testing.T) {
	ctx := context.Background()
	legacy := "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n  endpoint = [\"http://m:5000\"]\n"
	n := newMemNode(map[string]string{DefaultContainerdConfig: legacy})
	o := opts("20260101T000000Z-aaaaaa")
	err := applyNode(ctx, o, n, &NodeReport{Runtime: "containerd://1.6.20"})
	if err == nil || !strings.Contains(err.Error(), "--migrate-legacy") || string(n.files[DefaultContainerdConfig]) != legacy {
		t.Fatalf("legacy mirrors: err %v", err)
	}
	o.MigrateLegacy = true
	if err := applyNode(ctx, o, n, &NodeReport{Runtime: "containerd://1.6.20"}); err != nil {
		t.Fatal(err)
	}
	if b := string(n.files["/etc/containerd/certs.d/docker.io/hosts.toml"]); !strings.Contains(b, "http://m:5000") || !strings.Contains(b, "http://10.0.0.5:5500") {
		t.Errorf("migrated docker.io hosts.toml:\n%s", b)
	}

	// k3s: the generated config is found and refused with the registries.yaml hint.
	k := newMemNode(map[string]string{generatedConfigs[0]: "version = 3\n"})
	err = applyNode(ctx, opts("x"), k, &NodeReport{Runtime: "containerd://2.0.5-k3s1"})
	if err == nil || !strings.Contains(err.Error(), "registries.yaml") {
		t.Fatalf("k3s: %v", err)
	}

	// A restart that fails puts config.toml back and restarts again.
	f := newMemNode(map[string]string{DefaultContainerdConfig: cfg16})
	f.restartErr = errors.New("boom")
	err = applyNode(ctx, opts("y"), f, &NodeReport{Runtime: "containerd://1.6.20"})
	if err == nil || string(f.files[DefaultContainerdConfig]) != cfg16 || f.restarts != 2 {
		t.Fatalf("restart failure: err %v, restarts %d, config:\n%s", err, f.restarts, f.files[DefaultContainerdConfig])
	}
}

func TestCAFile(t *testing.T) {
	n := newMemNode(map[string]string{DefaultContainerdConfig: "version = 3\n"})
	o := opts("z")
	o.CA = []byte("-----BEGIN CERTIFICATE-----\n")
	if err := applyNode(context.Background(), o, n, &NodeReport{Runtime: "containerd://2.1.0"}); err != nil {
		t.Fatal(err)
	}
	ca := "/etc/containerd/certs.d/10.0.0.5:5500/bkcache-ca.crt"
	if string(n.files[ca]) != string(o.CA) {
		t.Fatal("CA not copied")
	}
	if b := string(n.files["/etc/containerd/certs.d/hub.bktencent.com/hosts.toml"]); !strings.Contains(b, `ca = "`+ca+`"`) || !strings.Contains(b, "https://10.0.0.5:5500") {
		t.Errorf("hosts.toml does not use the CA over https:\n%s", b)
	}
}

func TestOptionsAndPaths(t *testing.T) {
	for _, p := range []string{"/etc/x", "/a/b.toml", "/etc/containerd/certs.d/10.0.0.5:5500/hosts.toml"} {
		if err := CheckPath(p); err != nil {
			t.Errorf("CheckPath(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", "rel", "/", "/a/../b", "/a//b", "/a\nb", "/a/"} {
		if CheckPath(p) == nil {
			t.Errorf("CheckPath(%q) accepted", p)
		}
	}
	for _, o := range []MirrorOptions{{Registry: "bad host"}, {Registry: "h:1", Restart: "sometimes"}, {Registry: "h:1", Upstreams: []string{"../x"}}, {Registry: "h:1", BackupDir: "rel"}} {
		if err := o.defaults(); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
	if a, b := NewRunID(), NewRunID(); a == b || len(a) > 63 {
		t.Errorf("run ids %q %q", a, b)
	}
}

func TestNodeAccessPodManifest(t *testing.T) {
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(manifests.NodeAccessPod, &pod); err != nil {
		t.Fatal(err)
	}
	c := pod.Spec.Containers[0]
	if !pod.Spec.HostPID || !pod.Spec.HostNetwork || c.SecurityContext == nil || !*c.SecurityContext.Privileged ||
		pod.Spec.Volumes[0].HostPath.Path != "/" || c.VolumeMounts[0].MountPath != hostMount ||
		pod.Labels[LabelManagedBy] != "bkcache" || pod.Spec.Tolerations[0].Operator != corev1.TolerationOpExists {
		t.Errorf("node-access pod: %+v", pod.Spec)
	}
}

func TestCacheName(t *testing.T) {
	for in, want := range map[string]string{
		"hub.bktencent.com/library/registry:2": "10.0.0.5:5500/library/registry:2",
		"busybox:1.36":                         "10.0.0.5:5500/library/busybox:1.36",
		"bitnami/redis:7":                      "10.0.0.5:5500/bitnami/redis:7",
		"localhost/x:1":                        "10.0.0.5:5500/x:1",
		"vm:4000/blueking/app@sha256:abc":      "10.0.0.5:5500/blueking/app@sha256:abc",
	} {
		if got := CacheName(in, "10.0.0.5:5500"); got != want {
			t.Errorf("CacheName(%q) = %q, want %q", in, got, want)
		}
	}
}
