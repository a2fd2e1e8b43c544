package nodes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bkcache/bkcache/pkg/containerd"
	"github.com/bkcache/bkcache/pkg/dockerd"
)

// Node is what the mirror logic needs of a node: its files, a containerd restart and host
// commands (docker reload). A *Session provides it through the API; tests use an in-memory node.
type Node interface {
	Name() string
	ReadFile(ctx context.Context, p string) ([]byte, bool, error)
	WriteFile(ctx context.Context, p string, data []byte) error
	Remove(ctx context.Context, p string) error
	MkdirAll(ctx context.Context, dir string) ([]string, error)
	RemoveDirIfEmpty(ctx context.Context, dir string) error
	List(ctx context.Context, dir string) ([]string, error)
	Rename(ctx context.Context, from, to string) error
	RestartContainerd(ctx context.Context, command string) (time.Duration, error)
	// RunOnHost runs a fixed command line in the host's root (chroot) and returns its stdout;
	// a non-zero exit is an *ExitError.
	RunOnHost(ctx context.Context, command string) ([]byte, error)
}

// Defaults for MirrorOptions.
const (
	DefaultContainerdConfig = "/etc/containerd/config.toml"
	DefaultBackupDir        = "/var/lib/bkcache/backups"
	DefaultRestartCommand   = "systemctl restart containerd"
	caFileName              = "bkcache-ca.crt"
	manifestName            = "manifest.json"
	revertedSuffix          = ".reverted"
)

// Where k3s and RKE2 keep their generated containerd config; probed when the default is missing.
var generatedConfigs = []string{
	"/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
	"/var/lib/rancher/rke2/agent/etc/containerd/config.toml",
}

// MirrorOptions is everything `kubectl bkcache mirror` asks for.
type MirrorOptions struct {
	Registry      string   // HOST:PORT of the cache
	Upstreams     []string // registries to send through the cache (default hub.bktencent.com)
	NoFallback    bool     // the cache is the only host: no silent bypass to the upstream
	TLS           bool     // reach the cache over https
	CA            []byte   // CA certificate for the cache (implies TLS); copied to the node
	Restart       string   // auto (when config.toml changed) | never
	RestartCmd    string   // node command that restarts containerd (default systemctl restart containerd)
	DryRun        bool     // plan only: diffs, touch nothing
	Revert        bool     // undo the newest backup on each node
	MigrateLegacy bool     // turn legacy registry.mirrors into hosts.toml instead of refusing
	Verify        string   // after configuring, pull this image on each node by its name and by the cache's

	// DockerReloadCmd makes dockerd re-read daemon.json (default systemctl reload docker: SIGHUP,
	// which applies insecure-registries and registry-mirrors live).
	DockerReloadCmd string
	ReloadTimeout   time.Duration // how long dockerd may take to show the reloaded keys (default 20s)

	ContainerdConfig string // config.toml on the nodes (default /etc/containerd/config.toml)
	DaemonJSON       string // dockerd's config on Docker-runtime nodes (default /etc/docker/daemon.json)
	CertsRoot        string // where an empty config_path is pointed (default /etc/containerd/certs.d)
	BackupDir        string // backups on the nodes (default /var/lib/bkcache/backups)

	Selector    string   // label selector for nodes
	Nodes       []string // node names (default: all matching Selector)
	Parallel    int      // nodes at once (default 10)
	NodeTimeout time.Duration

	Access Access // client, config, namespace and image of the node-access pods
}

// FileChange is one file a run writes or would write.
type FileChange struct {
	Path   string `json:"path"`
	Action string `json:"action"` // create | update | remove | restore
	Diff   string `json:"diff,omitempty"`
}

// NodeReport is the outcome on one node.
type NodeReport struct {
	Node           string       `json:"node"`
	Runtime        string       `json:"runtime"`
	Status         string       `json:"status"` // planned | changed | unchanged | reverted | skipped | failed
	ConfigFile     string       `json:"configFile,omitempty"`
	CertsRoot      string       `json:"certsRoot,omitempty"`
	Files          []FileChange `json:"files,omitempty"`
	ConfigChanged  bool         `json:"configChanged"`
	RestartNeeded  bool         `json:"restartNeeded"`
	Restarted      bool         `json:"restarted"`
	ReloadNeeded   bool         `json:"reloadNeeded,omitempty"` // Docker runtime: daemon.json changed
	Reloaded       bool         `json:"reloaded,omitempty"`     // dockerd reloaded and shows the new keys
	RestartSeconds float64      `json:"restartSeconds,omitempty"`
	Backup         string       `json:"backup,omitempty"`
	Verified       []PullResult `json:"verified,omitempty"`
	Warnings       []string     `json:"warnings,omitempty"`
	Error          string       `json:"error,omitempty"`
	Seconds        float64      `json:"seconds"`
}

// Failed reports whether any node failed.
func Failed(reports []NodeReport) bool {
	return slices.ContainsFunc(reports, func(r NodeReport) bool { return r.Status == "failed" })
}

// NewRunID names one run: sortable by time, so --revert finds the newest backup.
func NewRunID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

func (o *MirrorOptions) defaults() error {
	if o.ContainerdConfig == "" {
		o.ContainerdConfig = DefaultContainerdConfig
	}
	if o.CertsRoot == "" {
		o.CertsRoot = containerd.DefaultCertsRoot
	}
	if o.BackupDir == "" {
		o.BackupDir = DefaultBackupDir
	}
	if o.RestartCmd == "" {
		o.RestartCmd = DefaultRestartCommand
	}
	if o.DaemonJSON == "" {
		o.DaemonJSON = dockerd.DefaultPath
	}
	if o.DockerReloadCmd == "" {
		o.DockerReloadCmd = DefaultDockerReloadCommand
	}
	if o.ReloadTimeout <= 0 {
		o.ReloadTimeout = 20 * time.Second
	}
	if o.Restart == "" {
		o.Restart = "auto"
	}
	if o.Parallel <= 0 {
		o.Parallel = 10
	}
	if o.NodeTimeout <= 0 {
		o.NodeTimeout = 5 * time.Minute
	}
	if len(o.Upstreams) == 0 {
		o.Upstreams = []string{containerd.DefaultUpstream}
	}
	if o.Access.RunID == "" {
		o.Access.RunID = NewRunID()
	}
	if o.Restart != "auto" && o.Restart != "never" {
		return fmt.Errorf("--restart %q: want auto or never", o.Restart)
	}
	for _, p := range []string{o.ContainerdConfig, o.DaemonJSON, o.CertsRoot, o.BackupDir} {
		if err := CheckPath(p); err != nil {
			return err
		}
	}
	if !o.Revert {
		if err := containerd.ValidateRegistry(o.Registry); err != nil {
			return fmt.Errorf("--registry: %w", err)
		}
		for _, u := range o.Upstreams {
			if err := containerd.ValidateRegistry(u); err != nil || u == "_default" {
				return fmt.Errorf("--upstream %q: want a registry host name", u)
			}
		}
	}
	return nil
}

// SelectNodes lists the nodes a run works on.
func SelectNodes(ctx context.Context, o MirrorOptions) ([]corev1.Node, error) {
	list, err := o.Access.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: o.Selector})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	if len(o.Nodes) == 0 {
		if len(list.Items) == 0 {
			return nil, fmt.Errorf("no nodes match selector %q", o.Selector)
		}
		return list.Items, nil
	}
	var out []corev1.Node
	for _, name := range o.Nodes {
		i := slices.IndexFunc(list.Items, func(n corev1.Node) bool { return n.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("node %q not found (or not matching selector %q); see kubectl get nodes", name, o.Selector)
		}
		out = append(out, list.Items[i])
	}
	return out, nil
}

// prepare fills o's defaults, selects the nodes and removes node-access pods
// a killed run left behind (an hour is longer than any run).
func prepare(ctx context.Context, o *MirrorOptions) ([]corev1.Node, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	nodes, err := SelectNodes(ctx, *o)
	if err != nil {
		return nil, err
	}
	_, _ = o.Access.CleanupLeftovers(ctx, time.Hour)
	return nodes, nil
}

// Mirror configures (or with Revert, restores) containerd on every selected node, in
// parallel, and returns one report per node in node order. An error means nothing ran
// (bad options, nodes not listable); per-node failures are in the reports.
func Mirror(ctx context.Context, o MirrorOptions) ([]NodeReport, error) {
	nodes, err := prepare(ctx, &o)
	if err != nil {
		return nil, err
	}
	return forEachNode(ctx, o, nodes, func(ctx context.Context, s *Session, r *NodeReport) error {
		if o.Revert {
			return revertNode(ctx, o, s, r)
		}
		if err := applyNode(ctx, o, s, r); err != nil || o.Verify == "" || o.DryRun {
			return err
		}
		return verifyNode(ctx, o, r)
	}), nil
}

func forEachNode(ctx context.Context, o MirrorOptions, nodes []corev1.Node, fn func(context.Context, *Session, *NodeReport) error) []NodeReport {
	reports := make([]NodeReport, len(nodes))
	g := new(errgroup.Group)
	g.SetLimit(o.Parallel)
	for i, n := range nodes {
		g.Go(func() error {
			start := time.Now()
			r := &reports[i]
			r.Node, r.Runtime = n.Name, n.Status.NodeInfo.ContainerRuntimeVersion
			err := func() error {
				if !strings.HasPrefix(r.Runtime, "containerd://") && !isDocker(r.Runtime) {
					r.Status = "skipped"
					r.Warnings = append(r.Warnings, fmt.Sprintf("runtime %q: only containerd and docker are supported", r.Runtime))
					return nil
				}
				if !nodeReady(n) {
					return fmt.Errorf("node is NotReady: not touched; run again when it is Ready")
				}
				nctx, cancel := context.WithTimeout(ctx, o.NodeTimeout)
				defer cancel()
				s, err := o.Access.Open(nctx, n.Name)
				if err != nil {
					return err
				}
				defer func() {
					if err := s.Close(nctx); err != nil {
						r.Warnings = append(r.Warnings, err.Error())
					}
				}()
				return fn(nctx, s, r)
			}()
			if err != nil {
				r.Status, r.Error = "failed", err.Error()
			}
			r.Seconds = time.Since(start).Seconds()
			return nil
		})
	}
	_ = g.Wait()
	return reports
}

func nodeReady(n corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// readConfig finds and reads config.toml: the configured path, else a k3s/RKE2 one.
func readConfig(ctx context.Context, o MirrorOptions, s Node) (string, []byte, error) {
	data, ok, err := s.ReadFile(ctx, o.ContainerdConfig)
	if err != nil || ok || o.ContainerdConfig != DefaultContainerdConfig {
		return o.ContainerdConfig, data, err
	}
	for _, p := range generatedConfigs {
		if d, ok, err := s.ReadFile(ctx, p); err != nil || ok {
			return p, d, err
		}
	}
	return o.ContainerdConfig, nil, nil
}

type change struct {
	path     string
	old, new []byte // nil: absent
}

// planNode reads what is on the node and works out every file change. Pure apart from reads.
func planNode(ctx context.Context, o MirrorOptions, s Node, r *NodeReport) ([]change, error) {
	cfgPath, cfg, err := readConfig(ctx, o, s)
	if err != nil {
		return nil, err
	}
	r.ConfigFile = cfgPath
	info, err := containerd.InspectConfig(cfg, cfgPath, containerd.RuntimeMajor(r.Runtime))
	if err != nil {
		return nil, fmt.Errorf("%v; fix the file, or point --containerd-config at the right one", err)
	}
	if major, minor := containerd.RuntimeVersion(r.Runtime); major == 2 && minor == 0 {
		info.Warnings = slices.DeleteFunc(info.Warnings, func(w string) bool { return strings.Contains(w, "transfer service") })
	}
	r.Warnings = append(r.Warnings, info.Warnings...)
	root := info.CertsRoot
	if root == "" {
		root = o.CertsRoot
	}
	if err := CheckPath(root); err != nil {
		return nil, fmt.Errorf("config_path root: %v", err)
	}
	r.CertsRoot = root
	patch, err := containerd.EnsureConfigPath(cfg, info, root, o.MigrateLegacy)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", cfgPath, err)
	}
	var changes []change
	files := map[string][]byte{} // what each hosts.toml will hold, for later specs to merge onto
	current := func(p string) ([]byte, error) {
		if b, ok := files[p]; ok {
			return b, nil
		}
		b, _, err := s.ReadFile(ctx, p)
		if err != nil {
			return nil, err
		}
		files[p] = b
		return b, nil
	}
	var order []string
	set := func(p string, b []byte) error {
		if _, err := current(p); err != nil {
			return err
		}
		if !slices.Contains(order, p) {
			order = append(order, p)
		}
		files[p] = b
		return nil
	}
	olds := map[string][]byte{}
	remember := func(p string) error {
		if _, ok := olds[p]; ok {
			return nil
		}
		b, err := current(p)
		olds[p] = b
		return err
	}
	for _, name := range sortedKeys(patch.Migrated) {
		p := path.Join(root, containerd.LegacyHostsDir(name), "hosts.toml")
		if err := remember(p); err != nil {
			return nil, err
		}
		if olds[p] != nil {
			return nil, fmt.Errorf("legacy mirror %q: %s already exists; merge by hand, remove the mirrors section, and run again", name, p)
		}
		b, err := containerd.RenderLegacyHosts(name, patch.Migrated[name])
		if err != nil {
			return nil, err
		}
		if err := set(p, b); err != nil {
			return nil, err
		}
	}
	m := containerd.Cache{Host: o.Registry, TLS: o.TLS}
	if len(o.CA) > 0 {
		m.CAPath = path.Join(root, o.Registry, caFileName)
		if err := remember(m.CAPath); err != nil {
			return nil, err
		}
		if err := set(m.CAPath, o.CA); err != nil {
			return nil, err
		}
	}
	specs := []containerd.HostsSpec{}
	for _, u := range o.Upstreams {
		if u != o.Registry {
			specs = append(specs, containerd.HostsSpec{Upstream: u, Cache: m, NoFallback: o.NoFallback})
		}
	}
	specs = append(specs, containerd.CacheSpec(m))
	for _, spec := range specs {
		p := path.Join(root, containerd.HostsDir(spec.Upstream), "hosts.toml")
		if err := remember(p); err != nil {
			return nil, err
		}
		cur, _ := current(p)
		b, err := containerd.MergeHosts(cur, spec)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", p, err)
		}
		if err := set(p, b); err != nil {
			return nil, err
		}
	}
	for _, p := range order {
		if string(olds[p]) != string(files[p]) || (olds[p] == nil) != (files[p] == nil) {
			changes = append(changes, change{path: p, old: olds[p], new: files[p]})
		}
	}
	if patch.Changed {
		// config.toml last: hosts files are in place before containerd starts reading them.
		changes = append(changes, change{path: cfgPath, old: cfg, new: patch.Data})
		r.ConfigChanged = true
		r.RestartNeeded = true
	}
	return changes, nil
}

func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func describe(c change) FileChange {
	action := "update"
	switch {
	case c.old == nil:
		action = "create"
	case c.new == nil:
		action = "remove"
	}
	return FileChange{Path: c.path, Action: action, Diff: containerd.UnifiedDiff(c.path, c.old, c.new)}
}

// backup is manifest.json in a run's backup directory: what --revert needs.
type backup struct {
	RunID       string        `json:"runID"`
	Node        string        `json:"node"`
	Runtime     string        `json:"runtime,omitempty"` // "docker": ConfigFile is daemon.json (reload, not restart)
	Created     string        `json:"created"`
	ConfigFile  string        `json:"configFile"`
	CertsRoot   string        `json:"certsRoot"`
	Entries     []backupEntry `json:"entries"`
	CreatedDirs []string      `json:"createdDirs,omitempty"`
}

type backupEntry struct {
	Path    string `json:"path"`
	Existed bool   `json:"existed"`
	Old     string `json:"oldSHA256,omitempty"`
	New     string `json:"newSHA256"`
	Copy    string `json:"copy,omitempty"` // file name in the backup dir holding the old bytes
}

func applyNode(ctx context.Context, o MirrorOptions, s Node, r *NodeReport) error {
	docker := isDocker(r.Runtime)
	plan := planNode
	if docker {
		plan = planDocker
	}
	changes, err := plan(ctx, o, s, r)
	if err != nil {
		return err
	}
	for _, c := range changes {
		r.Files = append(r.Files, describe(c))
	}
	switch {
	case len(changes) == 0:
		r.Status = "unchanged"
		return nil
	case o.DryRun:
		r.Status = "planned"
		return nil
	}
	// Backup first: old bytes and the manifest exist before any file changes.
	dir := path.Join(o.BackupDir, o.Access.RunID)
	b := backup{RunID: o.Access.RunID, Node: s.Name(), Created: time.Now().UTC().Format(time.RFC3339), ConfigFile: r.ConfigFile, CertsRoot: r.CertsRoot}
	if docker {
		b.Runtime = dockerRuntime
	}
	if _, err := s.MkdirAll(ctx, dir); err != nil {
		return err
	}
	for i, c := range changes {
		e := backupEntry{Path: c.path, Existed: c.old != nil, New: sum(c.new)}
		if c.old != nil {
			e.Old, e.Copy = sum(c.old), fmt.Sprintf("%03d-%s", i, path.Base(c.path))
			if err := s.WriteFile(ctx, path.Join(dir, e.Copy), c.old); err != nil {
				return fmt.Errorf("backup: %v", err)
			}
		}
		b.Entries = append(b.Entries, e)
	}
	writeManifest := func() error {
		j, _ := json.MarshalIndent(b, "", "  ")
		return s.WriteFile(ctx, path.Join(dir, manifestName), j)
	}
	if err := writeManifest(); err != nil {
		return fmt.Errorf("backup: %v", err)
	}
	r.Backup = dir
	for _, c := range changes {
		created, err := s.MkdirAll(ctx, path.Dir(c.path))
		if err != nil {
			return err
		}
		if len(created) > 0 {
			b.CreatedDirs = append(b.CreatedDirs, created...)
			if err := writeManifest(); err != nil {
				return fmt.Errorf("backup: %v", err)
			}
		}
		if err := s.WriteFile(ctx, c.path, c.new); err != nil {
			return fmt.Errorf("%v (backup in %s: kubectl bkcache mirror --revert restores it)", err, dir)
		}
	}
	r.Status = "changed"
	if !r.ConfigChanged {
		return nil
	}
	cfg := changes[len(changes)-1]
	if docker {
		return reloadOrRollBack(ctx, o, s, r, cfg, dir)
	}
	if o.Restart == "never" {
		r.Warnings = append(r.Warnings, "config.toml changed but --restart never: restart containerd on this node for it to take effect")
		return nil
	}
	if err := restart(ctx, o, s, r); err != nil {
		// Put config.toml back and bring containerd up on the old file.
		var werr error
		if cfg.old == nil {
			werr = s.Remove(ctx, cfg.path)
		} else {
			werr = s.WriteFile(ctx, cfg.path, cfg.old)
		}
		if werr != nil {
			return fmt.Errorf("%v; restoring %s also failed: %v: restore it from %s by hand", err, cfg.path, werr, dir)
		}
		if rerr := restart(ctx, o, s, r); rerr != nil {
			return fmt.Errorf("%v; restored %s, but containerd did not come back: %v", err, cfg.path, rerr)
		}
		return fmt.Errorf("%v; restored the previous %s and restarted containerd", err, cfg.path)
	}
	return nil
}

// reloadOrRollBack reloads dockerd after daemon.json changed; when dockerd does not take the
// new file up, the old bytes go back and dockerd is reloaded on them.
func reloadOrRollBack(ctx context.Context, o MirrorOptions, s Node, r *NodeReport, cfg change, dir string) error {
	if o.Restart == "never" {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%s changed but --restart never: run %q on this node for it to take effect", cfg.path, o.DockerReloadCmd))
		return nil
	}
	err := reloadDocker(ctx, o, s, r, cfg.new)
	if err == nil {
		return nil
	}
	var werr error
	if cfg.old == nil {
		werr = s.Remove(ctx, cfg.path)
	} else {
		werr = s.WriteFile(ctx, cfg.path, cfg.old)
	}
	if werr != nil {
		return fmt.Errorf("%v; restoring %s also failed: %v: restore it from %s by hand", err, cfg.path, werr, dir)
	}
	if rerr := reloadDocker(ctx, o, s, r, cfg.old); rerr != nil {
		return fmt.Errorf("%v; restored %s, but the reload on it failed too: %v", err, cfg.path, rerr)
	}
	r.Reloaded = false
	return fmt.Errorf("%v; restored the previous %s and reloaded dockerd", err, cfg.path)
}

func restart(ctx context.Context, o MirrorOptions, n Node, r *NodeReport) error {
	d, err := n.RestartContainerd(ctx, o.RestartCmd)
	if err != nil {
		return err
	}
	r.Restarted, r.RestartSeconds = true, d.Seconds()
	return nil
}

// newestBackup finds the newest run's backup on the node that was not reverted yet.
func newestBackup(ctx context.Context, o MirrorOptions, s Node) (string, *backup, error) {
	names, err := s.List(ctx, o.BackupDir)
	if err != nil {
		return "", nil, err
	}
	sort.Sort(sort.Reverse(sort.StringSlice(names)))
	for _, n := range names {
		if strings.HasSuffix(n, revertedSuffix) || strings.HasPrefix(n, ".") {
			continue
		}
		dir := path.Join(o.BackupDir, n)
		data, ok, err := s.ReadFile(ctx, path.Join(dir, manifestName))
		if err != nil {
			return "", nil, err
		}
		if !ok {
			continue
		}
		var b backup
		if err := json.Unmarshal(data, &b); err != nil {
			return "", nil, fmt.Errorf("backup %s: manifest.json: %v", dir, err)
		}
		return dir, &b, nil
	}
	return "", nil, nil
}

func revertNode(ctx context.Context, o MirrorOptions, s Node, r *NodeReport) error {
	dir, b, err := newestBackup(ctx, o, s)
	if err != nil {
		return err
	}
	if b == nil {
		r.Status = "unchanged"
		r.Warnings = append(r.Warnings, fmt.Sprintf("no backup to revert in %s", o.BackupDir))
		return nil
	}
	r.Backup, r.ConfigFile, r.CertsRoot = dir, b.ConfigFile, b.CertsRoot
	var changes []change
	for i := len(b.Entries) - 1; i >= 0; i-- {
		e := b.Entries[i]
		cur, _, err := s.ReadFile(ctx, e.Path)
		if err != nil {
			return err
		}
		var old []byte
		if e.Existed {
			if old, _, err = s.ReadFile(ctx, path.Join(dir, e.Copy)); err != nil {
				return err
			}
			if sum(old) != e.Old {
				return fmt.Errorf("backup %s: copy of %s does not match its recorded sha256; restore by hand", dir, e.Path)
			}
		}
		if sum(cur) == sum(old) && (cur == nil) == !e.Existed {
			continue // already as it was
		}
		if sum(cur) != e.New {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s changed since run %s: left as it is (its old content is in %s)", e.Path, b.RunID, dir))
			continue
		}
		changes = append(changes, change{path: e.Path, old: cur, new: old})
	}
	docker := b.Runtime == dockerRuntime
	var restored []byte // the config file's bytes after the revert (nil: removed)
	for _, c := range changes {
		fc := describe(c)
		if c.new != nil {
			fc.Action = "restore"
		}
		r.Files = append(r.Files, fc)
		if c.path == b.ConfigFile {
			r.ConfigChanged, restored = true, c.new
			r.RestartNeeded, r.ReloadNeeded = !docker, docker
		}
	}
	if o.DryRun {
		r.Status = "planned"
		return nil
	}
	for _, c := range changes {
		if c.new == nil {
			err = s.Remove(ctx, c.path)
		} else {
			err = s.WriteFile(ctx, c.path, c.new)
		}
		if err != nil {
			return err
		}
	}
	for i := len(b.CreatedDirs) - 1; i >= 0; i-- {
		if err := s.RemoveDirIfEmpty(ctx, b.CreatedDirs[i]); err != nil {
			return err
		}
	}
	if err := s.Rename(ctx, dir, dir+revertedSuffix); err != nil {
		return fmt.Errorf("mark backup %s reverted: %v", dir, err)
	}
	r.Status = "reverted"
	switch {
	case !r.ConfigChanged:
	case o.Restart != "auto":
		r.Warnings = append(r.Warnings, fmt.Sprintf("%s restored but --restart never: restart or reload the runtime on this node for it to take effect", b.ConfigFile))
	case docker:
		return reloadDocker(ctx, o, s, r, restored)
	default:
		return restart(ctx, o, s, r)
	}
	return nil
}

// NodeStatus is what a node has now.
type NodeStatus struct {
	Node       string                          `json:"node"`
	Runtime    string                          `json:"runtime"`
	ConfigFile string                          `json:"configFile,omitempty"`
	Config     *containerd.ConfigInfo          `json:"config,omitempty"`
	Hosts      map[string]containerd.HostsFile `json:"hosts,omitempty"`  // registry dir -> parsed hosts.toml
	Docker     *dockerd.Config                 `json:"docker,omitempty"` // Docker runtime: daemon.json's registry keys
	Backups    []string                        `json:"backups,omitempty"`
	Error      string                          `json:"error,omitempty"`
}

// Status reads every selected node's containerd registry configuration.
func Status(ctx context.Context, o MirrorOptions) ([]NodeStatus, error) {
	o.Revert = true // no registry needed
	nodes, err := prepare(ctx, &o)
	if err != nil {
		return nil, err
	}
	out := make([]NodeStatus, len(nodes))
	var mu sync.Mutex
	reports := forEachNode(ctx, o, nodes, func(ctx context.Context, s *Session, r *NodeReport) error {
		st := NodeStatus{Node: r.Node, Runtime: r.Runtime, Hosts: map[string]containerd.HostsFile{}}
		info := containerd.ConfigInfo{}
		if isDocker(r.Runtime) {
			data, _, err := s.ReadFile(ctx, o.DaemonJSON)
			if err != nil {
				return err
			}
			dc, err := dockerd.Parse(data)
			if err != nil {
				return fmt.Errorf("%s: %v", o.DaemonJSON, err)
			}
			st.ConfigFile, st.Docker = o.DaemonJSON, &dc
		} else {
			cfgPath, cfg, err := readConfig(ctx, o, s)
			if err != nil {
				return err
			}
			st.ConfigFile = cfgPath
			if info, err = containerd.InspectConfig(cfg, cfgPath, containerd.RuntimeMajor(r.Runtime)); err != nil {
				return err
			}
			st.Config = &info
		}
		if info.CertsRoot != "" {
			dirs, err := s.List(ctx, info.CertsRoot)
			if err != nil {
				return err
			}
			for _, d := range dirs {
				if strings.HasPrefix(d, ".") || CheckPath(path.Join(info.CertsRoot, d)) != nil {
					continue
				}
				data, ok, err := s.ReadFile(ctx, path.Join(info.CertsRoot, d, "hosts.toml"))
				if err != nil || !ok {
					continue
				}
				hf, err := containerd.ParseHosts(data)
				if err != nil {
					hf = containerd.HostsFile{Server: "(does not parse: containerd ignores it)"}
				}
				st.Hosts[d] = hf
			}
		}
		var err error
		if st.Backups, err = s.List(ctx, o.BackupDir); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for i := range nodes {
			if nodes[i].Name == r.Node {
				out[i] = st
			}
		}
		r.Status = "ok"
		return nil
	})
	for i, r := range reports {
		out[i].Node, out[i].Runtime = r.Node, r.Runtime
		if r.Error != "" {
			out[i].Error = r.Error
		} else if r.Status == "skipped" && len(r.Warnings) > 0 {
			out[i].Error = r.Warnings[0]
		}
	}
	return out, nil
}

// verifyNode pulls o.Verify by the cache's name (only the cache can serve that) and by its own
// name (the kubelet's path for the deployment's pods).
func verifyNode(ctx context.Context, o MirrorOptions, r *NodeReport) error {
	var failed []string
	for _, img := range []string{CacheName(o.Verify, o.Registry), o.Verify} {
		res := o.Access.VerifyPull(ctx, r.Node, img)
		r.Verified = append(r.Verified, res)
		if !res.Pulled {
			failed = append(failed, fmt.Sprintf("%s: %s", img, res.Error))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("verify: pull failed: %s; check that the node reaches %s and the cache holds or can fetch the image", strings.Join(failed, "; "), o.Registry)
	}
	return nil
}
