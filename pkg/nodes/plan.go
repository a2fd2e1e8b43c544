package nodes

import (
	"context"
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

// readConfig finds and reads config.toml: the configured path, else a k3s/RKE2 one.
func readConfig(ctx context.Context, o MirrorOptions, n Node) (string, []byte, error) {
	data, ok, err := n.ReadFile(ctx, o.ContainerdConfig)
	if err != nil || ok || o.ContainerdConfig != DefaultContainerdConfig {
		return o.ContainerdConfig, data, err
	}
	for _, p := range generatedConfigs {
		if d, ok, err := n.ReadFile(ctx, p); err != nil || ok {
			return p, d, err
		}
	}
	return o.ContainerdConfig, nil, nil
}

// fileSet is the plan's view of the node's files: what each file holds before the run and
// what it will hold after, in the order first set.
type fileSet struct {
	ctx   context.Context
	n     Node
	old   map[string][]byte
	new   map[string][]byte
	order []string
}

// current is what p will hold so far in the plan (a later spec merges onto an earlier one).
func (f *fileSet) current(p string) ([]byte, error) {
	if b, ok := f.new[p]; ok {
		return b, nil
	}
	if b, ok := f.old[p]; ok {
		return b, nil
	}
	b, _, err := f.n.ReadFile(f.ctx, p)
	if err != nil {
		return nil, err
	}
	f.old[p] = b
	return b, nil
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
func planContainerd(ctx context.Context, o MirrorOptions, n Node, r *NodeReport) ([]change, error) {
	cfgPath, cfg, err := readConfig(ctx, o, n)
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
	files := &fileSet{ctx: ctx, n: n, old: map[string][]byte{}, new: map[string][]byte{}}
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
