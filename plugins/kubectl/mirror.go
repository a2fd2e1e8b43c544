package kubectl

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	"github.com/bkcache/bkcache/pkg/nodes"
	"github.com/bkcache/bkcache/pkg/userfile"
)

type mirrorFlags struct {
	opts    nodes.MirrorOptions
	caFile  string
	output  string
	restart string
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

A node ends a failed run as it began: when any step after the first write fails (backup, a
file, the restart or reload, --verify), every file the run wrote is put back, what it created
is removed, the runtime is restarted or reloaded on the old files if it was on the new ones,
and the report names the failed step and what was rolled back. A node whose files could not
be read (NotReady, node-access pod not starting) is reported unreachable, with no plan.

Nodes are reached by a short-lived privileged pod per node (hostPID, hostNetwork, the node's /
at /host, all taints tolerated), labelled app.kubernetes.io/managed-by=bkcache, deleted at the
end. It runs in the namespace kubectl uses (-n, else the kubeconfig context's), as kubectl
debug node/… does; that namespace must allow privileged pods (kube-system usually does:
-n kube-system). Its image needs a POSIX shell, base64, sha256sum and chroot. --image is
used as given. Without it: ` + nodes.DefaultAccessImage + `
(what BlueKing's charts pull) when the node holds it; else a busybox or alpine the node holds
(library/busybox, blueking/busybox or library/alpine on any registry), and the run says which;
else the default, for the kubelet to pull. A pod that cannot pull its image fails that node at
once with the kubelet's reason. Offline sites: add the default to the push list of the
registry the nodes pull from, or give --image an image every node holds.
The RBAC a user needs is manifests/mirror-rbac.yaml (ClusterRole bkcache-mirror).`,
		Example: `  kubectl bkcache mirror --registry 10.0.0.5:5500 --dry-run
  kubectl bkcache mirror --registry 10.0.0.5:5500
  kubectl bkcache mirror --registry 10.0.0.5:5501 --upstream docker.io --upstream registry.k8s.io
  kubectl bkcache mirror --registry 10.0.0.5:5500 --verify hub.bktencent.com/library/registry:2
  kubectl bkcache mirror --registry 10.0.0.5:5500 -l node-role.kubernetes.io/worker= -o json
  kubectl bkcache mirror status
  kubectl bkcache mirror --revert`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.complete(args); err != nil {
				return err
			}
			if f.opts.Registry == "" && !f.opts.Revert {
				return errors.New("--registry HOST:PORT is required (the cache as nodes reach it), or --revert")
			}
			if err := f.connect(kube, streams); err != nil {
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
				return errors.New("some nodes failed or could not be reached: see the ERROR column (-o json: error, failedStep, rolledBack)")
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
	fl.StringVar(&f.restart, "restart", string(nodes.RestartAuto), "restart containerd (reload dockerd) when its config file changed: auto|never")
	fl.StringVar(&o.RestartCmd, "restart-command", nodes.DefaultRestartCommand, "command run on the node (chroot) to restart containerd")
	fl.StringVar(&o.DockerReloadCmd, "docker-reload-command", nodes.DefaultDockerReloadCommand, "command run on Docker-runtime nodes (chroot) to make dockerd re-read daemon.json")
	fl.BoolVar(&o.Revert, "revert", false, "put each node back as the newest backup recorded it")
	fl.BoolVar(&o.MigrateLegacy, "migrate-legacy", false, "convert legacy registry.mirrors in config.toml into hosts.toml files")
	fl.StringVar(&o.Verify, "verify", "", "after configuring, pull this image on each node (kubelet/CRI) by the cache's name and by its own; a failed pull rolls the node back")
	addNodeFlags(cmd, f)
	cmd.AddCommand(newMirrorStatusCommand(streams, kube))
	return cmd
}

func addNodeFlags(cmd *cobra.Command, f *mirrorFlags) {
	fl := cmd.Flags()
	o := &f.opts
	fl.StringVar(&o.Access.Image, "image", "", "image of the node-access pod, used as given (needs sh, base64, sha256sum, chroot; default "+nodes.DefaultAccessImage+", or a busybox/alpine the node holds)")
	fl.StringVarP(&o.Selector, "selector", "l", "", "label selector of the nodes")
	fl.StringSliceVar(&o.Nodes, "nodes", nil, "node names (default: every node matching --selector)")
	fl.IntVar(&o.Parallel, "parallel", 10, "nodes handled at once")
	fl.DurationVar(&o.NodeTimeout, "node-timeout", 0, "time allowed per node (default 5m)")
	fl.StringVar(&o.ContainerdConfig, "containerd-config", nodes.DefaultContainerdConfig, "containerd config.toml on the nodes (k3s/RKE2 paths are probed when the default is missing)")
	fl.StringVar(&o.DaemonJSON, "daemon-json", nodes.DefaultDaemonJSON, "dockerd's daemon.json on Docker-runtime nodes")
	fl.StringVar(&o.CertsRoot, "certs-dir", nodes.DefaultCertsRoot, "config_path to set when config.toml has none")
	fl.StringVar(&o.BackupDir, "backup-dir", nodes.DefaultBackupDir, "backup directory on the nodes")
	fl.StringVarP(&f.output, "output", "o", "", "output format: json|yaml (default a table)")
}

// complete takes the node arguments, checks the output format and the restart policy,
// and reads the CA file: everything that needs no cluster, before connect.
func (f *mirrorFlags) complete(args []string) error {
	f.opts.Nodes = append(f.opts.Nodes, args...)
	switch f.output {
	case "", "json", "yaml":
	default:
		return fmt.Errorf("unknown output format %q: use -o json or -o yaml", f.output)
	}
	var err error
	if f.opts.Restart, err = nodes.ParseRestartPolicy(f.restart); err != nil {
		return err
	}
	if f.caFile != "" {
		if f.opts.CA, err = userfile.Read(f.caFile); err != nil {
			return fmt.Errorf("--ca-file: %w", err)
		}
	}
	return nil
}

// connect builds the client. The node-access pods go where kubectl puts things: -n,
// else the kubeconfig context's namespace.
func (f *mirrorFlags) connect(kube *genericclioptions.ConfigFlags, streams genericiooptions.IOStreams) error {
	cfg, err := restConfig(kube)
	if err != nil {
		return err
	}
	// Each node polls its pod; client-go's default 5 QPS would serialise a 10-node run.
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	f.opts.Access.Client, f.opts.Access.Config = cs, cfg
	f.opts.Access.Namespace = namespace(kube)
	f.opts.Access.Progress = func(node, msg string) { fmt.Fprintf(streams.ErrOut, "node %s: %s\n", node, msg) }
	return nil
}

func newMirrorStatusCommand(streams genericiooptions.IOStreams, kube *genericclioptions.ConfigFlags) *cobra.Command {
	f := &mirrorFlags{}
	cmd := &cobra.Command{
		Use:     "status [NODE ...]",
		Short:   "Show what containerd (or dockerd) on each node has now: config_path, hosts.toml mirrors, backups",
		Example: "  kubectl bkcache mirror status\n  kubectl bkcache mirror status -o json",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := f.complete(args); err != nil {
				return err
			}
			if err := f.connect(kube, streams); err != nil {
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
				if s.Status.Failure() {
					return errors.New("some nodes could not be read: see the ERROR column")
				}
			}
			return nil
		},
	}
	addNodeFlags(cmd, f)
	return cmd
}
