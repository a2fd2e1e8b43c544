package nodes

import (
	"context"
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/bkcache/bkcache/pkg/containerd"
	"github.com/bkcache/bkcache/pkg/dockerd"
)

// NodeStatus is what a node has now.
type NodeStatus struct {
	Node        string                          `json:"node"`
	Runtime     string                          `json:"runtime"`
	Status      State                           `json:"status"` // ok | skipped | unreachable | failed
	AccessImage *AccessImage                    `json:"accessImage,omitempty"`
	ConfigFile  string                          `json:"configFile,omitempty"`
	Config      *containerd.ConfigInfo          `json:"config,omitempty"`
	Hosts       map[string]containerd.HostsFile `json:"hosts,omitempty"`  // registry dir -> parsed hosts.toml
	Docker      *dockerd.Config                 `json:"docker,omitempty"` // Docker runtime: daemon.json's registry keys
	Backups     []string                        `json:"backups,omitempty"`
	Warnings    []string                        `json:"warnings,omitempty"`
	Error       string                          `json:"error,omitempty"`
}

// Status reads every selected node's registry configuration: containerd's config.toml and
// hosts.toml files, or dockerd's daemon.json, and the backups. It changes nothing.
func Status(ctx context.Context, o MirrorOptions) ([]NodeStatus, error) {
	if err := o.complete(); err != nil {
		return nil, err
	}
	nodes, err := prepare(ctx, o)
	if err != nil {
		return nil, err
	}
	return status(ctx, o, nodes, &o.Access), nil
}

func status(ctx context.Context, o MirrorOptions, nodes []corev1.Node, access NodeAccess) []NodeStatus {
	out := make([]NodeStatus, len(nodes))
	reports := forEachNode(ctx, o, nodes, access, func(ctx context.Context, i int, n Node, r *NodeReport) error {
		st := &out[i] // each node writes only its own entry
		if err := readStatus(ctx, o, n, r.Runtime, st); err != nil {
			return err
		}
		r.Status = StateOK
		return nil
	})
	for i, r := range reports {
		st := &out[i]
		st.Node, st.Runtime, st.Status, st.AccessImage, st.Error = r.Node, r.Runtime, r.Status, r.AccessImage, r.Error
		st.Warnings = append(st.Warnings, r.Warnings...)
		if r.Status != StateOK {
			// Whatever was read before a failure is not shown as the node's state.
			*st = NodeStatus{Node: st.Node, Runtime: st.Runtime, Status: st.Status, AccessImage: st.AccessImage, Warnings: st.Warnings, Error: st.Error}
		}
	}
	return out
}

func readStatus(ctx context.Context, o MirrorOptions, n Node, runtime string, st *NodeStatus) error {
	var certsRoot string
	if isDocker(runtime) {
		data, _, err := n.ReadFile(ctx, o.DaemonJSON)
		if err != nil {
			return err
		}
		dc, err := dockerd.Parse(data)
		if err != nil {
			return fmt.Errorf("%s: %w", o.DaemonJSON, err)
		}
		st.ConfigFile, st.Docker = o.DaemonJSON, &dc
	} else {
		cfgPath, cfg, err := readConfig(o, newFileSet(ctx, n), nil, nil)
		if err != nil {
			return err
		}
		st.ConfigFile = cfgPath
		info, err := containerd.InspectConfig(cfg, cfgPath, containerd.RuntimeMajor(runtime))
		if err != nil {
			return err
		}
		st.Config, certsRoot = &info, info.CertsRoot
	}
	if certsRoot != "" {
		dirs, err := n.List(ctx, certsRoot)
		if err != nil {
			return err
		}
		st.Hosts = map[string]containerd.HostsFile{}
		var names []string
		var reads []Op
		for _, d := range dirs {
			if strings.HasPrefix(d, ".") || CheckPath(path.Join(certsRoot, d)) != nil {
				continue
			}
			names, reads = append(names, d), append(reads, Op{Kind: OpRead, Path: path.Join(certsRoot, d, "hosts.toml")})
		}
		res, errs := runEach(ctx, n, reads)
		for i, d := range names {
			if errs[i] != nil {
				st.Warnings = append(st.Warnings, errs[i].Error()) // one odd entry does not hide the rest
				continue
			}
			if !res[i].Exists {
				continue
			}
			hf, err := containerd.ParseHosts(res[i].Data)
			if err != nil {
				hf = containerd.HostsFile{Server: "(does not parse: containerd ignores it)"}
			}
			st.Hosts[d] = hf
		}
	}
	var err error
	st.Backups, err = n.List(ctx, o.BackupDir)
	return err
}
