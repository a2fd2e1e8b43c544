package kubectl

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	"github.com/bkcache/bkcache/pkg/dockerd"
	"github.com/bkcache/bkcache/pkg/nodes"

	"github.com/bkcache/bkcache/pkg/printer"
)

// DefaultNodeImage is the node-access pod's image: it needs sh, base64, sha256sum, chroot.
const DefaultNodeImage = "docker.io/library/busybox:1.36"

type mirrorFlags struct {
	opts      nodes.MirrorOptions
	caFile    string
	output    string
	namespace string
}

func newMirrorCommand(streams genericiooptions.IOStreams, kube *genericclioptions.ConfigFlags) *cobra.Command {
	f := &mirrorFlags{}
	cmd := &cobra.Command{
		Use:   "mirror --registry HOST:PORT [--upstream REGISTRY ...] [NODE ...]",
		Short: "Point containerd on every node at the cache (hosts.toml), report per node, undo with --revert",
		Long: `Point containerd on each node at a bkcache pull-through cache, through the Kubernetes API only.

For each --upstream (default hub.bktencent.com) it writes certs.d/<upstream>/hosts.toml
with the cache as the first host (plain http:// unless --tls/--ca-file; capabilities pull and
resolve) and the upstream as server, and certs.d/<HOST:PORT>/hosts.toml so the cache is
pullable by its own name. Existing hosts and keys in those files are kept. When config.toml has
no config_path, one line is added (nothing else changes) and containerd is restarted
(--restart auto). Legacy registry.mirrors are refused, or converted with --migrate-legacy.

On Docker-runtime nodes (docker://…) it adds the cache to /etc/docker/daemon.json instead:
HOST:PORT to insecure-registries (unless --tls/--ca-file; a CA goes to
/etc/docker/certs.d/HOST:PORT/) and, when docker.io is an --upstream, the cache first in
registry-mirrors (dockerd mirrors docker.io only). Every other key is kept. dockerd re-reads
these keys on a reload (--docker-reload-command, default systemctl reload docker: SIGHUP, no
container is touched), and the run waits until docker info shows them. Other runtimes are
reported as skipped.

Every file is backed up first on the node (--backup-dir/<run id>/); writes are atomic and
verified by sha256. --revert restores the newest backup's exact bytes and removes what was added.
A second run with the same flags changes nothing.

Nodes are reached by a short-lived privileged pod per node (hostPID, hostNetwork, the node's /
at /host, all taints tolerated), labelled app.kubernetes.io/managed-by=bkcache, in the
namespace given with -n (default kube-system), deleted at the end. Its image (--image) must
have a POSIX shell, base64, sha256sum and chroot; the default is ` + DefaultNodeImage + `.
The RBAC a user needs is manifests/mirror-rbac.yaml (ClusterRole bkcache-mirror).`,
		Example: `  kubectl bkcache mirror --registry 10.0.0.5:5500 --dry-run
  kubectl bkcache mirror --registry 10.0.0.5:5500
  kubectl bkcache mirror --registry 10.0.0.5:5501 --upstream docker.io --upstream registry.k8s.io
  kubectl bkcache mirror --registry 10.0.0.5:5500 --verify hub.bktencent.com/library/registry:2
  kubectl bkcache mirror --registry 10.0.0.5:5500 -l node-role.kubernetes.io/worker= -o json
  kubectl bkcache mirror status
  kubectl bkcache mirror --revert`,
		RunE: func(cmd *cobra.Command, args []string) error {
			f.opts.Nodes = append(f.opts.Nodes, args...)
			if f.opts.Registry == "" && !f.opts.Revert {
				return errors.New("--registry HOST:PORT is required (the cache as nodes reach it), or --revert")
			}
			if f.caFile != "" {
				ca, err := os.ReadFile(f.caFile)
				if err != nil {
					return fmt.Errorf("--ca-file: %w", err)
				}
				f.opts.CA = ca
			}
			if err := f.connect(cmd, kube); err != nil {
				return err
			}
			reports, err := nodes.Mirror(cmd.Context(), f.opts)
			if err != nil {
				return err
			}
			if err := printReports(streams.Out, f.output, reports, f.opts.DryRun); err != nil {
				return err
			}
			if nodes.Failed(reports) {
				return errors.New("some nodes failed: see the ERROR column")
			}
			return nil
		},
	}
	fl := cmd.Flags()
	o := &f.opts
	fl.StringVar(&o.Registry, "registry", "", "the cache as nodes reach it, HOST:PORT")
	fl.StringArrayVar(&o.Upstreams, "upstream", nil, "registry to send through the cache (repeatable; default hub.bktencent.com)")
	fl.BoolVar(&o.DryRun, "dry-run", false, "print each node's plan (files, diffs, restart needed) and change nothing")
	fl.BoolVar(&o.NoFallback, "no-fallback", false, "make the cache the only host: no fallback to the upstream (air-gapped sites)")
	fl.BoolVar(&o.TLS, "tls", false, "reach the cache over https")
	fl.StringVar(&f.caFile, "ca-file", "", "CA certificate of the cache (implies --tls); copied to each node")
	fl.StringVar(&o.Restart, "restart", "auto", "restart containerd when config.toml changed: auto|never")
	fl.StringVar(&o.RestartCmd, "restart-command", nodes.DefaultRestartCommand, "command run on the node (chroot) to restart containerd")
	fl.StringVar(&o.DockerReloadCmd, "docker-reload-command", nodes.DefaultDockerReloadCommand, "command run on Docker-runtime nodes (chroot) to make dockerd re-read daemon.json")
	fl.BoolVar(&o.Revert, "revert", false, "put each node back as the newest backup recorded it")
	fl.BoolVar(&o.MigrateLegacy, "migrate-legacy", false, "convert legacy registry.mirrors in config.toml into hosts.toml files")
	fl.StringVar(&o.Verify, "verify", "", "after configuring, pull this image on each node (kubelet/CRI) by the cache's name and by its own")
	addNodeFlags(cmd, f)
	cmd.AddCommand(newMirrorStatusCommand(streams, kube))
	return cmd
}

func addNodeFlags(cmd *cobra.Command, f *mirrorFlags) {
	fl := cmd.Flags()
	o := &f.opts
	fl.StringVar(&o.Access.Image, "image", DefaultNodeImage, "image of the node-access pod (needs sh, base64, sha256sum, chroot: busybox has them)")
	fl.StringVarP(&o.Selector, "selector", "l", "", "label selector of the nodes")
	fl.StringSliceVar(&o.Nodes, "nodes", nil, "node names (default: every node matching --selector)")
	fl.IntVar(&o.Parallel, "parallel", 10, "nodes handled at once")
	fl.DurationVar(&o.NodeTimeout, "node-timeout", 0, "time allowed per node (default 5m)")
	fl.StringVar(&o.ContainerdConfig, "containerd-config", nodes.DefaultContainerdConfig, "containerd config.toml on the nodes (k3s/RKE2 paths are probed when the default is missing)")
	fl.StringVar(&o.DaemonJSON, "daemon-json", dockerd.DefaultPath, "dockerd's daemon.json on Docker-runtime nodes")
	fl.StringVar(&o.CertsRoot, "certs-dir", "/etc/containerd/certs.d", "config_path to set when config.toml has none")
	fl.StringVar(&o.BackupDir, "backup-dir", nodes.DefaultBackupDir, "backup directory on the nodes")
	fl.StringVarP(&f.output, "output", "o", "", "output format: json|yaml (default a table)")
}

func (f *mirrorFlags) connect(cmd *cobra.Command, kube *genericclioptions.ConfigFlags) error {
	switch f.output {
	case "", "json", "yaml":
	default:
		return fmt.Errorf("unknown output format %q: use -o json or -o yaml", f.output)
	}
	cfg, err := kube.ToRESTConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	// Each node polls its pod; client-go's default 5 QPS would serialise a 10-node run.
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	f.opts.Access.Client, f.opts.Access.Config = cs, cfg
	f.opts.Access.Namespace = "kube-system"
	if cmd.Flags().Changed("namespace") && kube.Namespace != nil && *kube.Namespace != "" {
		f.opts.Access.Namespace = *kube.Namespace
	}
	return nil
}

func newMirrorStatusCommand(streams genericiooptions.IOStreams, kube *genericclioptions.ConfigFlags) *cobra.Command {
	f := &mirrorFlags{}
	cmd := &cobra.Command{
		Use:     "status [NODE ...]",
		Short:   "Show what containerd on each node has now: config_path, hosts.toml mirrors, backups",
		Example: "  kubectl bkcache mirror status\n  kubectl bkcache mirror status -o json",
		RunE: func(cmd *cobra.Command, args []string) error {
			f.opts.Nodes = append(f.opts.Nodes, args...)
			if err := f.connect(cmd, kube); err != nil {
				return err
			}
			st, err := nodes.Status(cmd.Context(), f.opts)
			if err != nil {
				return err
			}
			if err := printStatus(streams.Out, f.output, st); err != nil {
				return err
			}
			for _, s := range st {
				if s.Error != "" {
					return errors.New("some nodes could not be read: see the ERROR column")
				}
			}
			return nil
		},
	}
	addNodeFlags(cmd, f)
	return cmd
}

func printReports(w io.Writer, format string, reports []nodes.NodeReport, dryRun bool) error {
	if done, err := printer.Structured(w, format, reports); done {
		return err
	}
	if dryRun {
		for _, r := range reports {
			need := fmt.Sprintf("restart needed: %v", r.RestartNeeded)
			if r.ReloadNeeded {
				need = "dockerd reload needed: true"
			}
			fmt.Fprintf(w, "# node %s (%s): %d file(s), %s\n", r.Node, r.Runtime, len(r.Files), need)
			for _, fc := range r.Files {
				fmt.Fprint(w, fc.Diff)
			}
		}
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tRUNTIME\tSTATUS\tFILES\tCONFIG.TOML\tRESTARTED\tVERIFIED\tTIME\tWARNINGS\tERROR")
	for _, r := range reports {
		var files []string
		for _, fc := range r.Files {
			p := fc.Path
			if r.CertsRoot != "" {
				p = strings.TrimPrefix(p, r.CertsRoot+"/")
			}
			files = append(files, fc.Action+" "+p)
		}
		cfg := "unchanged"
		if r.ConfigChanged {
			cfg = "changed"
		}
		if isDockerReport(r) {
			cfg = "daemon.json " + cfg
		}
		restarted := "no"
		switch {
		case r.Restarted:
			restarted = fmt.Sprintf("yes (%.1fs)", r.RestartSeconds)
		case r.Reloaded:
			restarted = fmt.Sprintf("reloaded (%.1fs)", r.RestartSeconds)
		case (r.RestartNeeded || r.ReloadNeeded) && dryRun:
			restarted = "would"
		}
		verified := "-"
		if len(r.Verified) > 0 {
			n := 0
			for _, v := range r.Verified {
				if v.Pulled {
					n++
				}
			}
			verified = fmt.Sprintf("%d/%d pulls", n, len(r.Verified))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1fs\t%s\t%s\n", r.Node, strings.TrimPrefix(r.Runtime, "containerd://"), r.Status,
			orDash(strings.Join(files, ", ")), cfg, restarted, verified, r.Seconds, orDash(strings.Join(r.Warnings, "; ")), orDash(r.Error))
	}
	return tw.Flush()
}

func isDockerReport(r nodes.NodeReport) bool { return strings.HasPrefix(r.Runtime, "docker://") }

func printStatus(w io.Writer, format string, st []nodes.NodeStatus) error {
	if done, err := printer.Structured(w, format, st); done {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tRUNTIME\tCONFIG_PATH\tMIRRORS\tBACKUPS\tERROR")
	for _, s := range st {
		cp := "-"
		if s.Config != nil {
			cp = s.Config.ConfigPath
			if cp == "" && s.Config.CertsRoot != "" {
				cp = s.Config.CertsRoot + " (default)"
			} else if cp == "" {
				cp = "(empty: hosts.toml ignored)"
			}
		}
		var mirrors []string
		if d := s.Docker; d != nil {
			cp = "-"
			if len(d.InsecureRegistries) > 0 {
				mirrors = append(mirrors, "insecure:"+strings.Join(d.InsecureRegistries, ","))
			}
			if len(d.RegistryMirrors) > 0 {
				mirrors = append(mirrors, "docker.io->"+strings.Join(d.RegistryMirrors, ","))
			}
		}
		for _, reg := range sortedNames(s.Hosts) {
			first := s.Hosts[reg].Server
			if len(s.Hosts[reg].Hosts) > 0 {
				first = s.Hosts[reg].Hosts[0]
			}
			mirrors = append(mirrors, reg+"->"+first)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", s.Node, strings.TrimPrefix(s.Runtime, "containerd://"), cp,
			orDash(strings.Join(mirrors, ", ")), len(s.Backups), orDash(s.Error))
	}
	return tw.Flush()
}

func sortedNames[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
