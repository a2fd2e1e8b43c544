package nodes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/bkcache/bkcache/pkg/containerd"
)

// change is one file a run writes: its bytes before and after (nil: absent).
type change struct {
	path     string
	old, new []byte
}

func describe(c change) FileChange {
	action := ActionUpdate
	switch {
	case c.old == nil:
		action = ActionCreate
	case c.new == nil:
		action = ActionRemove
	}
	return FileChange{Path: c.path, Action: action, Diff: containerd.UnifiedDiff(c.path, c.old, c.new)}
}

// readConfig finds and reads config.toml: the configured path, else a k3s/RKE2 one. The
// files in also and the directories in dirs (what the caller needs next, most likely) are
// read in the same round trip.
func readConfig(o MirrorOptions, files *fileSet, also, dirs []string) (string, []byte, error) {
	paths := []string{o.ContainerdConfig}
	if o.ContainerdConfig == DefaultContainerdConfig {
		paths = append(paths, generatedConfigs...)
	}
	files.prefetch(append(slices.Clone(paths), also...), dirs)
	for _, p := range paths {
		if r := files.read(p); r.err != nil || r.ok {
			return p, r.data, r.err
		}
	}
	return o.ContainerdConfig, nil, nil
}

func dirsOf(paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = path.Dir(p)
	}
	return out
}

// hostsPaths are the files planContainerd reads under a certs root: the CA and each hosts.toml.
func hostsPaths(o MirrorOptions, root string) []string {
	var out []string
	if len(o.CA) > 0 {
		out = append(out, path.Join(root, o.Registry, caFileName))
	}
	for _, u := range o.Upstreams {
		if u != o.Registry {
			out = append(out, path.Join(root, containerd.HostsDir(u), "hosts.toml"))
		}
	}
	return append(out, path.Join(root, containerd.HostsDir(o.Registry), "hosts.toml"))
}

// fileSet is the plan's view of the node's files: what each file holds before the run and
// what it will hold after, in the order first set; and which directories are missing (what
// the run's writes will have to create).
type fileSet struct {
	ctx     context.Context
	n       Node
	fetched map[string]fetched  // read from the node (prefetch: maybe never needed)
	missing map[string][]string // directory -> it and its parents that do not exist
	old     map[string][]byte
	new     map[string][]byte
	order   []string
}

func newFileSet(ctx context.Context, n Node) *fileSet {
	return &fileSet{ctx: ctx, n: n, fetched: map[string]fetched{}, missing: map[string][]string{}, old: map[string][]byte{}, new: map[string][]byte{}}
}

type fetched struct {
	data []byte
	ok   bool
	err  error
}

// prefetch reads the files of paths not read yet, and which of dirs are missing, in one
// round trip. A read that fails keeps its error for when the plan needs that file; the ones
// after it are read when needed (a directory that could not be looked at is just not known).
func (f *fileSet) prefetch(paths, dirs []string) {
	var ops []Op
	for _, p := range paths {
		if _, ok := f.fetched[p]; !ok && !slices.ContainsFunc(ops, func(o Op) bool { return o.Path == p }) {
			ops = append(ops, Op{Kind: OpRead, Path: p})
		}
	}
	for _, d := range dirs {
		if _, ok := f.missing[d]; !ok && !slices.ContainsFunc(ops, func(o Op) bool { return o.Path == d }) {
			ops = append(ops, Op{Kind: OpMissing, Path: d})
		}
	}
	if len(ops) == 0 {
		return
	}
	res, err := runOps(f.ctx, f.n, ops)
	for i, r := range res {
		failed := i == len(res)-1 && err != nil
		if ops[i].Kind == OpMissing {
			if !failed {
				f.missing[ops[i].Path] = r.Created
			}
			continue
		}
		v := fetched{data: r.Data, ok: r.Exists}
		if failed {
			var be *BatchError
			if errors.As(err, &be) && be.InDoubt {
				break // the link broke: read it again when needed
			}
			v = fetched{err: batchCause(err)}
		}
		f.fetched[ops[i].Path] = v
	}
}

// missingDirs is what an OpMissing of dir found, when it was looked at.
func (f *fileSet) missingDirs(dir string) ([]string, bool) {
	if f == nil {
		return nil, false
	}
	m, ok := f.missing[dir]
	return m, ok
}

// read is p as read from the node (now, unless prefetched).
func (f *fileSet) read(p string) fetched {
	if v, ok := f.fetched[p]; ok {
		return v
	}
	data, ok, err := f.n.ReadFile(f.ctx, p)
	v := fetched{data: data, ok: ok, err: err}
	f.fetched[p] = v
	return v
}

// current is what p will hold so far in the plan (a later spec merges onto an earlier one).
func (f *fileSet) current(p string) ([]byte, error) {
	if b, ok := f.new[p]; ok {
		return b, nil
	}
	if b, ok := f.old[p]; ok {
		return b, nil
	}
	r := f.read(p)
	if r.err != nil {
		return nil, r.err
	}
	f.old[p] = r.data
	return r.data, nil
}

func (f *fileSet) set(p string, b []byte) error {
	if _, err := f.current(p); err != nil {
		return err
	}
	if !slices.Contains(f.order, p) {
		f.order = append(f.order, p)
	}
	f.new[p] = b
	return nil
}

func (f *fileSet) changes() []change {
	var out []change
	for _, p := range f.order {
		if string(f.old[p]) != string(f.new[p]) || (f.old[p] == nil) != (f.new[p] == nil) {
			out = append(out, change{path: p, old: f.old[p], new: f.new[p]})
		}
	}
	return out
}

// planContainerd reads what is on the node and works out every file change: hosts.toml files
// (and a CA) first, config.toml last. Nothing is written.
func planContainerd(ctx context.Context, o MirrorOptions, n Node, r *NodeReport, files *fileSet) ([]change, error) {
	// The files the plan reads when config_path is the default root, and the directories a
	// run writes into then.
	var dirs []string
	if !o.DryRun {
		dirs = append(dirsOf(append([]string{o.ContainerdConfig}, generatedConfigs...)), path.Join(o.BackupDir, o.Access.RunID))
		dirs = append(dirs, dirsOf(hostsPaths(o, o.CertsRoot))...)
	}
	cfgPath, cfg, err := readConfig(o, files, hostsPaths(o, o.CertsRoot), dirs)
	if err != nil {
		return nil, err
	}
	r.ConfigFile = cfgPath
	info, err := containerd.InspectConfig(cfg, cfgPath, containerd.RuntimeMajor(r.Runtime))
	if err != nil {
		return nil, fmt.Errorf("%w; fix the file, or point --containerd-config at the right one", err)
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
		return nil, fmt.Errorf("config_path root: %w", err)
	}
	r.CertsRoot = root
	patch, err := containerd.EnsureConfigPath(cfg, info, root, o.MigrateLegacy)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	dirs = nil
	if !o.DryRun {
		dirs = dirsOf(hostsPaths(o, root))
	}
	files.prefetch(hostsPaths(o, root), dirs) // read already when root is the default
	for _, name := range slices.Sorted(maps.Keys(patch.Migrated)) {
		p := path.Join(root, containerd.LegacyHostsDir(name), "hosts.toml")
		cur, err := files.current(p)
		if err != nil {
			return nil, err
		}
		if cur != nil {
			return nil, fmt.Errorf("legacy mirror %q: %s already exists; merge by hand, remove the mirrors section, and run again", name, p)
		}
		b, err := containerd.RenderLegacyHosts(name, patch.Migrated[name])
		if err != nil {
			return nil, err
		}
		if err := files.set(p, b); err != nil {
			return nil, err
		}
	}
	cache := containerd.Cache{Host: o.Registry, TLS: o.TLS}
	if len(o.CA) > 0 {
		cache.CAPath = path.Join(root, o.Registry, caFileName)
		if err := files.set(cache.CAPath, o.CA); err != nil {
			return nil, err
		}
	}
	var specs []containerd.HostsSpec
	var dial time.Duration
	switch {
	case containerd.DialTimeoutSupported(r.Runtime):
		dial = containerd.DialTimeout
	case !o.NoFallback:
		r.Warnings = append(r.Warnings, fmt.Sprintf("containerd %s ignores dial_timeout (2.1+): if the cache host goes silent, each registry request waits 30 s before the upstream",
			strings.TrimPrefix(r.Runtime, "containerd://")))
	}
	for _, u := range o.Upstreams {
		if u != o.Registry {
			specs = append(specs, containerd.HostsSpec{Upstream: u, Cache: cache, NoFallback: o.NoFallback, DialTimeout: dial})
		}
	}
	specs = append(specs, containerd.CacheSpec(cache))
	for _, spec := range specs {
		p := path.Join(root, containerd.HostsDir(spec.Upstream), "hosts.toml")
		cur, err := files.current(p)
		if err != nil {
			return nil, err
		}
		b, err := containerd.MergeHosts(cur, spec)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if err := files.set(p, b); err != nil {
			return nil, err
		}
	}
	changes := files.changes()
	if patch.Changed {
		// config.toml last: hosts files are in place before containerd starts reading them.
		changes = append(changes, change{path: cfgPath, old: cfg, new: patch.Data})
		r.ConfigChanged, r.RestartNeeded = true, true
	}
	return changes, nil
}
