package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"path"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/bkcache/bkcache/pkg/dockerd"
)

// memNode is a node's file system in memory: path -> bytes; dirs is the set of directories.
// failOn makes one operation fail once: "write PATH", "remove PATH", "mkdir DIR", "read PATH",
// "rmdir DIR", "list DIR", "rename FROM".
type memNode struct {
	name       string
	files      map[string][]byte
	dirs       map[string]bool
	restarts   int
	restartErr error
	// restartErrOnce fails only the first restart (the one on the new config).
	restartErrOnce bool
	hostCmds       []string
	dockerd        *memDockerd // nil: no docker on the node
	failOn         map[string]error
	onRestart      func(n *memNode) // runs before each restart: changes the failures mid-run
	closed         bool
	// staleMissing answers Missing for a directory with what it held earlier: the node
	// changes between the plan and the writes.
	staleMissing map[string][]string
}

func newMemNode(files map[string]string) *memNode {
	n := &memNode{name: "node-1", files: map[string][]byte{}, dirs: map[string]bool{"/": true, "/var": true, "/var/lib": true}, failOn: map[string]error{}}
	for p, c := range files {
		n.files[p] = []byte(c)
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			n.dirs[d] = true
		}
	}
	return n
}

// fail fires a failure once: a failed write is not failing again when it is put back.
func (n *memNode) fail(op, p string) error {
	err := n.failOn[op+" "+p]
	delete(n.failOn, op+" "+p)
	return err
}

func (n *memNode) Name() string { return n.name }
func (n *memNode) ReadFile(_ context.Context, p string) ([]byte, bool, error) {
	if err := CheckPath(p); err != nil {
		return nil, false, err
	}
	if err := n.fail("read", p); err != nil {
		return nil, false, err
	}
	b, ok := n.files[p]
	return b, ok, nil
}
func (n *memNode) WriteFile(_ context.Context, p string, data []byte) error {
	if err := n.fail("write", p); err != nil {
		return err
	}
	if !n.dirs[path.Dir(p)] {
		return errors.New("no directory " + path.Dir(p))
	}
	n.files[p] = append([]byte{}, data...)
	return nil
}
func (n *memNode) Remove(_ context.Context, p string) error {
	if err := n.fail("remove", p); err != nil {
		return err
	}
	delete(n.files, p)
	return nil
}
func (n *memNode) MkdirAll(_ context.Context, dir string) ([]string, error) {
	var created []string
	for d := dir; d != "/"; d = path.Dir(d) {
		if !n.dirs[d] {
			created = append([]string{d}, created...)
		}
	}
	for _, d := range created {
		if err := n.fail("mkdir", d); err != nil {
			return created[:slices.Index(created, d)], err
		}
		n.dirs[d] = true
	}
	return created, nil
}
func (n *memNode) Missing(_ context.Context, dir string) ([]string, error) {
	if m, ok := n.staleMissing[dir]; ok {
		return m, nil
	}
	var missing []string
	for d := dir; d != "/"; d = path.Dir(d) {
		if !n.dirs[d] {
			missing = append([]string{d}, missing...)
		}
	}
	return missing, nil
}

// plainNode is a node that cannot tell which directories are missing (as one reached by
// another kind of access): mkdir then records the directories in the manifest as they come.
type plainNode struct{ Node }

func (n *memNode) RemoveDirIfEmpty(_ context.Context, dir string) (bool, error) {
	if err := n.fail("rmdir", dir); err != nil {
		return false, err
	}
	for p := range n.files {
		if strings.HasPrefix(p, dir+"/") {
			return false, nil
		}
	}
	for d := range n.dirs {
		if strings.HasPrefix(d, dir+"/") {
			return false, nil
		}
	}
	removed := n.dirs[dir]
	delete(n.dirs, dir)
	return removed, nil
}
func (n *memNode) List(_ context.Context, dir string) ([]string, error) {
	if err := n.fail("list", dir); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, p := range append(slices.Collect(maps.Keys(n.files)), slices.Collect(maps.Keys(n.dirs))...) {
		if rest, ok := strings.CutPrefix(p, dir+"/"); ok {
			first, _, _ := strings.Cut(rest, "/")
			seen[first] = true
		}
	}
	return slices.Sorted(maps.Keys(seen)), nil
}
func (n *memNode) Rename(_ context.Context, from, to string) error {
	if err := n.fail("rename", from); err != nil {
		return err
	}
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
	if n.onRestart != nil {
		n.onRestart(n)
	}
	if n.restartErrOnce && n.restarts > 1 {
		return time.Millisecond, nil
	}
	return time.Millisecond, n.restartErr
}
func (n *memNode) Close(context.Context) error { n.closed = true; return nil }

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
	return nil, &ExitError{Code: 127, Stderr: "sh: " + cmd + ": not found"}
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

// snapshot is every file and directory outside the backups (backups are checked apart).
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

// all is every file and directory, backups included.
func (n *memNode) all() map[string]string {
	out := map[string]string{}
	for p, b := range n.files {
		out[p] = string(b)
	}
	for d := range n.dirs {
		out[d+"/"] = ""
	}
	return out
}

// memAccess opens memNodes by name; openErr makes a node unreachable; pulls answers --verify.
type memAccess struct {
	nodes   map[string]*memNode
	openErr map[string]error
	pulls   map[string]PullResult // image -> result (missing: pulled)
}

func (a *memAccess) Open(_ context.Context, node *corev1.Node) (Node, AccessImage, error) {
	img := chooseImage("", node.Status.Images)
	if err := a.openErr[node.Name]; err != nil {
		return nil, img, err
	}
	n, ok := a.nodes[node.Name]
	if !ok {
		return nil, img, fmt.Errorf("memAccess: no node %s", node.Name)
	}
	return n, img, nil
}

func (a *memAccess) VerifyPull(_ context.Context, node, image string) PullResult {
	if r, ok := a.pulls[image]; ok {
		return r
	}
	return PullResult{Image: image, Pulled: true}
}

// kubeNode is a Ready node object with the given runtime.
func kubeNode(name, runtime string) corev1.Node {
	n := corev1.Node{}
	n.Name = name
	n.Status.NodeInfo.ContainerRuntimeVersion = runtime
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	return n
}
