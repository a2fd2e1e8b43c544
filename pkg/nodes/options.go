package nodes

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/bkcache/bkcache/pkg/containerd"
	"github.com/bkcache/bkcache/pkg/dockerd"
	"github.com/bkcache/bkcache/pkg/imageref"
)

// Defaults for MirrorOptions.
const (
	DefaultContainerdConfig = "/etc/containerd/config.toml"
	DefaultCertsRoot        = containerd.DefaultCertsRoot // config_path set when config.toml has none
	DefaultDaemonJSON       = dockerd.DefaultPath         // dockerd's config on Docker-runtime nodes
	DefaultBackupDir        = "/var/lib/bkcache/backups"
	DefaultRestartCommand   = "systemctl restart containerd"
	DefaultParallel         = 10
	DefaultNodeTimeout      = 5 * time.Minute
	DefaultReloadTimeout    = 20 * time.Second
	caFileName              = "bkcache-ca.crt"
	manifestName            = "manifest.json"
	revertedSuffix          = ".reverted"
)

// Where k3s and RKE2 keep their generated containerd config; probed when the default is missing.
var generatedConfigs = []string{
	"/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
	"/var/lib/rancher/rke2/agent/etc/containerd/config.toml",
}

// RestartPolicy says whether a run restarts (containerd) or reloads (dockerd) the runtime
// after its config file changed.
type RestartPolicy string

const (
	RestartAuto  RestartPolicy = "auto"  // when the config file changed
	RestartNever RestartPolicy = "never" // leave it to the operator; the report says so
)

// ParseRestartPolicy reads a --restart value.
func ParseRestartPolicy(s string) (RestartPolicy, error) {
	switch p := RestartPolicy(s); p {
	case RestartAuto, RestartNever:
		return p, nil
	case "":
		return RestartAuto, nil
	}
	return "", fmt.Errorf("--restart %q: want auto or never", s)
}

// MirrorOptions is everything `kubectl bkcache mirror` (and its status) asks for.
type MirrorOptions struct {
	Registry      string        // HOST:PORT of the cache
	Upstreams     []string      // registries to send through the cache (default hub.bktencent.com)
	NoFallback    bool          // the cache is the only host: no silent bypass to the upstream
	TLS           bool          // reach the cache over https
	CA            []byte        // CA certificate for the cache (implies TLS); copied to the node
	Restart       RestartPolicy // auto (when the config file changed) | never
	RestartCmd    string        // node command that restarts containerd (default systemctl restart containerd)
	DryRun        bool          // plan only: diffs, touch nothing
	Revert        bool          // undo the newest backup on each node
	MigrateLegacy bool          // turn legacy registry.mirrors into hosts.toml instead of refusing
	Verify        string        // after configuring, pull this image on each node by its name and by the cache's

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

	Access Access // client, config, namespace and image of the node-access pods; progress
}

// NewRunID names one run: sortable by time, so --revert finds the newest backup.
func NewRunID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return time.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// complete fills the defaults and checks what every mirror command (apply, revert, status)
// shares: paths, restart policy, limits.
func (o *MirrorOptions) complete() error {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.ContainerdConfig, DefaultContainerdConfig)
	def(&o.CertsRoot, DefaultCertsRoot)
	def(&o.BackupDir, DefaultBackupDir)
	def(&o.RestartCmd, DefaultRestartCommand)
	def(&o.DaemonJSON, DefaultDaemonJSON)
	def(&o.DockerReloadCmd, DefaultDockerReloadCommand)
	def(&o.Access.RunID, NewRunID())
	if o.ReloadTimeout <= 0 {
		o.ReloadTimeout = DefaultReloadTimeout
	}
	if o.Parallel <= 0 {
		o.Parallel = DefaultParallel
	}
	if o.NodeTimeout <= 0 {
		o.NodeTimeout = DefaultNodeTimeout
	}
	if len(o.Upstreams) == 0 {
		o.Upstreams = []string{containerd.DefaultUpstream}
	}
	var err error
	if o.Restart, err = ParseRestartPolicy(string(o.Restart)); err != nil {
		return err
	}
	for _, p := range []string{o.ContainerdConfig, o.DaemonJSON, o.CertsRoot, o.BackupDir} {
		if err := CheckPath(p); err != nil {
			return err
		}
	}
	return nil
}

// checkTarget checks the cache and upstream names an apply run writes into the nodes' files.
func (o *MirrorOptions) checkTarget() error {
	if err := imageref.ValidateRegistry(o.Registry); err != nil {
		return fmt.Errorf("--registry: %w", err)
	}
	for _, u := range o.Upstreams {
		if err := imageref.ValidateRegistry(u); err != nil {
			return fmt.Errorf("--upstream: %w", err)
		}
	}
	return nil
}
