package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/bkcache/bkcache/pkg/cache"
	"github.com/bkcache/bkcache/pkg/front"
	"github.com/bkcache/bkcache/pkg/userfile"

	"github.com/bkcache/bkcache/pkg/printer"
)

type upOptions struct {
	spec          cache.Spec
	file          string
	passwordStdin bool
	pull          string
	imageArchive  string
	wait          time.Duration
	skipCheck     bool
	plain         bool
	force         bool
	dryRun        bool
	replace       bool
	upstreamRate  string
	maxSize       string
	output        string
}

func newUpCommand(dockerCli command.Cli) *cobra.Command {
	var o upOptions
	cmd := &cobra.Command{
		Use:   "up [flags]",
		Short: "Create or reconcile a registry:2 pull-through cache and wait until it serves",
		Long: `Writes the registry:2 proxy config (mode 0600, atomically) and runs the cache
container, or reconciles an existing one: the same spec changes nothing, a changed
spec rewrites the config and recreates the container keeping its data, and a
container made by the BlueKing guide's script (same name, no bkcache labels) is
adopted with its data directory. Waits until GET /v2/ answers.

The container runs bkcache's front in front of the unmodified registry:2 (the
front layout): this plugin's own static binary, copied to CONFIG-DIR/NAME.front
and mounted read-only, is the entrypoint and starts the image's /bin/registry.
The front fetches each blob from the upstream once for any number of nodes and
repositories, streams it to every waiting node at once, checks its digest
before storing it, resumes a broken download with Range, caps the upstream
rate (--upstream-rate) and keeps serving what the cache holds while the
upstream is unreachable, also after a restart. A cache made by an earlier "up"
or by the guide's script is converted in place, its data kept; --plain keeps
the guide's layout, registry:2 alone. A new plugin version recreates the
container.

registry:2 proxies one upstream per process: several upstreams in one call come
from -f caches.yaml, each cache with its own container, port, config and data dir.`,
		Example: `  # The guide's cache: bkhub -> https://hub.bktencent.com on :5500
  docker bkcache up

  # A second upstream, with credentials read from stdin (never a flag value)
  echo "$DOCKERHUB_TOKEN" | docker bkcache up --name dockerio \
      --upstream https://registry-1.docker.io --port 5501 --username me --password-stdin

  # Several upstreams from a file
  docker bkcache up -f caches.yaml

  # Leave the site's link some room: at most 20 MiB/s from the upstream
  docker bkcache up --upstream-rate 20M

  # The guide's layout exactly: registry:2 alone
  docker bkcache up --plain

  # Hosts that can pull nothing: the cache image from the release's image archive
  docker bkcache up --image bkcache.local/registry:2 \
      --image-archive bkcache-VERSION-registry-image-linux-amd64.tar.gz

  # Or build that image here from Debian's docker-registry package
  # (registry-image.sh is in the release archive and in the source's scripts/)
  apt-get install -y docker-registry && ./registry-image.sh
  docker bkcache up --image bkcache.local/registry:2`,
		Args: upArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runUp(cmd, dockerCli, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.spec.Name, "name", cache.DefaultName, "cache name: container proxy-NAME, config NAME.yaml (the guide's upstream_name)")
	f.StringVar(&o.spec.Upstream, "upstream", cache.DefaultUpstream, "registry the cache proxies (proxy.remoteurl)")
	f.IntVar(&o.spec.Port, "port", cache.DefaultPort, "port the cache serves on")
	f.StringVar(&o.spec.Bind, "bind", "", "address to publish the port on (default all addresses)")
	f.StringVar(&o.spec.Network, "network", cache.DefaultNetwork, "bridge (publish PORT -> 5000 like the guide's -p) or host (registry listens on PORT itself)")
	f.StringVar(&o.spec.ConfigDir, "config-dir", cache.DefaultConfigDir, "directory of the registry config file NAME.yaml")
	f.StringVar(&o.spec.DataDir, "data-dir", "", "cache data directory (default /var/lib/registry-NAME, or the adopted container's)")
	f.StringVar(&o.spec.Image, "image", cache.DefaultImage, "registry:2 image to run")
	f.StringVar(&o.spec.Restart, "restart", cache.DefaultRestart, "container restart policy: no, always, unless-stopped, on-failure")
	f.IntVar(&o.spec.MetricsPort, "metrics-port", 0, "serve Prometheus metrics on 127.0.0.1:PORT (default none: status reads the cache's own port; --plain with --network host: PORT+10000)")
	f.StringVar(&o.spec.TLSCert, "tls-cert", "", "serve HTTPS with this certificate (PEM)")
	f.StringVar(&o.spec.TLSKey, "tls-key", "", "key of --tls-cert (PEM)")
	f.StringVar(&o.spec.Htpasswd, "htpasswd", "", "require basic auth from clients, from this htpasswd (bcrypt) file")
	f.StringVar(&o.spec.Username, "username", "", "upstream user name")
	f.BoolVar(&o.passwordStdin, "password-stdin", false, "read the upstream password from stdin")
	f.StringVarP(&o.file, "file", "f", "", "YAML file listing several caches (name, upstream, port, credentials)")
	f.StringVar(&o.pull, "pull", cache.PullMissing, "pull the image: missing, never, always")
	f.StringVar(&o.imageArchive, "image-archive", "", "load --image from this docker save archive `FILE` (.tar, .tar.gz) when the engine lacks it: for hosts that can pull nothing")
	f.DurationVar(&o.wait, "wait", 60*time.Second, "how long to wait for the cache to answer")
	f.BoolVar(&o.skipCheck, "skip-upstream-check", false, "start without asking the upstream first (with --plain, registry:2 crashes on start when it is unreachable)")
	f.BoolVar(&o.plain, "plain", false, "run registry:2 alone, the guide's layout, without bkcache's front")
	f.BoolVar(&o.dryRun, "dry-run", false, "say what up would do (create, recreate, convert, adopt, pull…) and change nothing")
	f.BoolVar(&o.force, "force", false, "use a --data-dir that holds files besides a registry's storage (down --purge still deletes only the cache's own)")
	f.BoolVar(&o.replace, "replace", false, "replace a container named proxy-NAME that is neither bkcache's nor the guide's registry:2")
	f.StringVar(&o.upstreamRate, "upstream-rate", "0", "cap the cache's upstream traffic, bytes per second: 500000, 512K, 20M, 1G (1024-based); 0 is unlimited")
	f.StringVar(&o.maxSize, "max-size", "0", "the cache's disk budget `SIZE`: 40MiB, 500G, 2T (1024-based); the least recently served content that no prune --keep list names and nothing uses is evicted to stay under it; 0 is none")
	f.StringVarP(&o.output, "output", "o", "", "output format: json|yaml")
	return cmd
}

// upArgs refuses arguments; one that looks like a cache name (as "logs NAME"
// takes it) gets the flag that names a cache.
func upArgs(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) == 0:
		return nil
	case len(args) == 1 && cache.ValidateName(args[0]) == nil:
		return fmt.Errorf("%s takes no arguments; did you mean --name %s?", cmd.CommandPath(), args[0])
	default:
		return fmt.Errorf("%s takes no arguments, got %q; every setting is a flag (see --help)", cmd.CommandPath(), strings.Join(args, " "))
	}
}

func runUp(cmd *cobra.Command, dockerCli command.Cli, o upOptions) error {
	ctx := cmd.Context()
	flags := cmd.Flags()
	if o.file != "" {
		for _, n := range []string{"name", "upstream", "port", "username", "password-stdin", "data-dir", "bind", "metrics-port"} {
			if flags.Changed(n) {
				return fmt.Errorf("--%s applies to one cache: with -f give it per cache in %s", n, o.file)
			}
		}
	}
	if o.passwordStdin {
		if o.spec.Username == "" {
			return errors.New("--password-stdin needs --username")
		}
		pw, err := readPassword(dockerCli.In())
		if err != nil {
			return err
		}
		o.spec.Password = pw
	}
	if o.plain {
		o.spec.Layout = cache.LayoutPlain
	}
	rate, err := front.ParseRate(o.upstreamRate)
	if err != nil {
		return fmt.Errorf("--upstream-rate: %w", err)
	}
	o.spec.UpstreamRate = rate
	if o.spec.MaxSize, err = front.ParseSize(o.maxSize); err != nil {
		return fmt.Errorf("--max-size: %w", err)
	}
	specs, err := upSpecs(ctx, o)
	if err != nil {
		return err
	}
	// Flag errors before touching Docker, and before any cache of a file is made.
	for _, spec := range specs {
		if err := spec.WithDefaults().Validate(); err != nil {
			return err
		}
		if spec.DataDir != "" {
			if err := cache.CheckDataDir(spec.DataDir, o.force); err != nil {
				return fmt.Errorf("cache %s: %w", spec.Name, err)
			}
		}
	}
	var results []cache.UpResult
	var failed []string
	for _, spec := range specs {
		res, err := cache.Up(ctx, dockerCli.Client(), spec, cache.UpOptions{
			Pull: o.pull, Wait: o.wait, SkipUpstreamCheck: o.skipCheck, ImageArchive: o.imageArchive,
			Progress: dockerCli.Err(), Force: o.force, Replace: o.replace, DryRun: o.dryRun,
		})
		if err != nil {
			if len(specs) == 1 {
				return err
			}
			fmt.Fprintf(dockerCli.Err(), "cache %s: %v\n", spec.Name, err)
			failed = append(failed, spec.Name)
			continue
		}
		results = append(results, res)
	}
	if ok, err := printer.Structured(dockerCli.Out(), o.output, results); ok {
		if err != nil {
			return err
		}
	} else {
		printUp(dockerCli.Out(), results)
	}
	for _, r := range results {
		if r.Warning == cache.UnreachableWarning {
			printOutageWarning(dockerCli.Err(), r)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d caches failed: %s", len(failed), len(specs), strings.Join(failed, ", "))
	}
	return nil
}

// printOutageWarning makes a cache that started without its upstream
// impossible to miss: a typo in --upstream otherwise looks like success.
func printOutageWarning(w io.Writer, r cache.UpResult) {
	holds := "what it already holds"
	if r.Action == cache.ActionCreated {
		holds = "what it already holds (nothing: it is new)"
	}
	fmt.Fprintf(w, "\nWARNING: cache %s: upstream %s did not answer.\n", r.Name, r.Upstream)
	fmt.Fprintf(w, "WARNING: the cache starts in OUTAGE MODE: it serves only %s and every other pull fails until %s answers.\n", holds, r.Upstream)
	fmt.Fprintf(w, "WARNING: check --upstream (scheme, host, port) and that this host reaches it: curl -sI %s/v2/; \"docker bkcache status\" shows when it is back online.\n", r.Upstream)
}

func upSpecs(ctx context.Context, o upOptions) ([]cache.Spec, error) {
	if o.file == "" {
		return []cache.Spec{o.spec}, nil
	}
	data, err := userfile.Read(o.file)
	if err != nil {
		return nil, fmt.Errorf("read caches file: %w", err)
	}
	entries, err := cache.ParseCachesFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.file, err)
	}
	var specs []cache.Spec
	for _, e := range entries {
		s := o.spec
		s.Name, s.Upstream, s.Port, s.DataDir, s.Bind, s.MetricsPort = e.Name, e.Upstream, e.Port, e.DataDir, e.Bind, e.MetricsPort
		s.Username, s.Password = "", ""
		if e.MaxSize != "" {
			if s.MaxSize, err = front.ParseSize(e.MaxSize); err != nil {
				return nil, fmt.Errorf("cache %s: maxSize: %w", e.Name, err)
			}
		}
		if e.Credentials != "" {
			if s.Username, s.Password, err = cache.ReadCredentials(ctx, e.Credentials); err != nil {
				return nil, fmt.Errorf("cache %s: %w", e.Name, err)
			}
		}
		specs = append(specs, s)
	}
	return specs, nil
}

func readPassword(in io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(in, 64*1024))
	if err != nil {
		return "", fmt.Errorf("read password from stdin: %w", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", errors.New("--password-stdin: stdin was empty; pipe the password in, e.g. cat pw.txt | docker bkcache up --username USER --password-stdin")
	}
	return pw, nil
}

func printUp(w io.Writer, results []cache.UpResult) {
	for _, r := range results {
		verb, change := "", "changed"
		if r.DryRun {
			verb, change = "would be ", "would be"
			if r.Action == cache.ActionUnchanged {
				verb = ""
			}
		}
		fmt.Fprintf(w, "cache %s: %s%s (container %s)\n", r.Name, verb, r.Action, r.Container)
		for _, c := range r.Changes {
			fmt.Fprintf(w, "  %-9s %s\n", change, c)
		}
		layout := r.Layout
		if r.Layout == cache.LayoutFront {
			layout = "front + registry:2"
		} else if r.Layout == cache.LayoutPlain {
			layout = "plain (registry:2 alone)"
		}
		fmt.Fprintf(w, "  layout    %s\n", layout)
		if r.Warning != "" {
			fmt.Fprintf(w, "  mode      %s\n", r.Warning)
		}
		fmt.Fprintf(w, "  upstream  %s\n", r.Upstream)
		fmt.Fprintf(w, "  serving   %s  (config %s, data %s)\n", r.Address, r.ConfigPath, r.DataDir)
		if r.Backup != "" {
			fmt.Fprintf(w, "  backup    %s  (the previous config)\n", r.Backup)
		}
	}
	if len(results) == 0 {
		return
	}
	fmt.Fprintln(w, "Next:")
	for _, r := range results {
		_, port, _ := net.SplitHostPort(r.Address)
		fmt.Fprintf(w, "  docker pull %s/<repository>:<tag>        # pull %s images through the cache\n", r.Address, strings.TrimPrefix(strings.TrimPrefix(r.Upstream, "https://"), "http://"))
		fmt.Fprintf(w, "  kubectl bkcache mirror --registry %s  # point every node's containerd at it\n", net.JoinHostPort(nodeFacingHost(r.Address), port))
	}
}

// nodeFacingHost guesses the address nodes reach this host on: the bind address
// when one was given, else the first IPv4 of an interface that is up and is not
// loopback or a container bridge.
func nodeFacingHost(addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() {
		return host
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return "HOST"
	}
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 || isContainerBridge(iface.Name) {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				return n.IP.String()
			}
		}
	}
	return "HOST"
}

func isContainerBridge(name string) bool {
	for _, prefix := range []string{"docker", "br-", "veth", "cni", "flannel", "cali", "vxlan", "kube", "tunl", "virbr"} {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}
