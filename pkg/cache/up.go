package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/bkcache/bkcache/pkg/atomicfile"
)

// Pull policies for the cache image, as `docker run --pull` names them.
const (
	PullMissing = "missing"
	PullNever   = "never"
	PullAlways  = "always"
)

// UpOptions tune Up; the zero value waits 60 s and pulls a missing image.
type UpOptions struct {
	// Pull is missing (default), never or always.
	Pull string
	// Wait bounds how long Up waits for the cache to answer GET /v2/.
	Wait time.Duration
	// SkipUpstreamCheck starts the cache without asking the upstream first.
	SkipUpstreamCheck bool
	// DataDirSet says the user chose the data dir; otherwise an existing
	// container's data dir is kept (also one adopted from the guide's script).
	DataDirSet bool
	// FrontBinary is the static executable the front layout runs; default
	// this process's own (os.Executable).
	FrontBinary string
	// Force accepts a non-empty data directory that holds more than a
	// registry's storage (--force).
	Force bool
	// Replace lets Up replace a container under the cache's name that is
	// neither bkcache's nor the guide's registry:2 (--replace).
	Replace bool
	// DryRun decides and reports what Up would do, changing nothing: no image
	// pulled or loaded, no file written, no container touched.
	DryRun bool
	// Progress receives one line per step; nil discards.
	Progress io.Writer
	// ImageArchive is a `docker save` archive to load the image from when the engine lacks it.
	ImageArchive string
}

// UpResult says what Up did.
type UpResult struct {
	Name       string   `json:"name"`
	Container  string   `json:"container"`
	Action     string   `json:"action"`
	Changes    []string `json:"changes,omitempty"`
	Layout     string   `json:"layout"`
	Address    string   `json:"address"`
	Upstream   string   `json:"upstream"`
	ConfigPath string   `json:"configPath"`
	Backup     string   `json:"backup,omitempty"` // the previous config, when Up replaced it
	DataDir    string   `json:"dataDir"`
	// Mode is the front's: online, or offline while the upstream is unreachable.
	Mode string `json:"mode,omitempty"`
	// Warning says what works less than fully, e.g. an unreachable upstream.
	Warning string `json:"warning,omitempty"`
	// DryRun: Action and Changes say what Up would do; nothing was changed.
	DryRun bool `json:"dryRun,omitempty"`
}

// UnreachableWarning is what Up reports for a front cache started while its
// upstream cannot be reached.
const UnreachableWarning = "upstream unreachable: serving cached content only"

// Up makes the cache described by spec run and serve: it writes the registry
// config, creates the container or reconciles an existing one (keeping its
// data; see Decide), and waits until GET /v2/ answers. Running it twice
// changes nothing.
func Up(ctx context.Context, eng Engine, spec Spec, opts UpOptions) (UpResult, error) {
	spec = spec.WithDefaults()
	if opts.Wait == 0 {
		opts.Wait = 60 * time.Second
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	if err := ValidateName(spec.Name); err != nil {
		return UpResult{}, fmt.Errorf("%w (--name)", err)
	}
	if !filepath.IsAbs(spec.ConfigDir) {
		return UpResult{}, fmt.Errorf("config directory %q of cache %s must be an absolute path (--config-dir)", spec.ConfigDir, spec.Name)
	}
	if err := Ping(ctx, eng); err != nil {
		return UpResult{}, err
	}
	for _, f := range []struct{ path, flag string }{{spec.TLSCert, "--tls-cert"}, {spec.TLSKey, "--tls-key"}, {spec.Htpasswd, "--htpasswd"}} {
		if f.path != "" {
			if err := readable(f.path, f.flag); err != nil {
				return UpResult{}, err
			}
		}
	}
	var front frontBinary
	if spec.Layout == LayoutFront {
		path := opts.FrontBinary
		var err error
		if path == "" {
			if path, err = os.Executable(); err != nil {
				return UpResult{}, fmt.Errorf("find the plugin's own binary for the cache's front: %w; pass --plain for registry:2 alone", err)
			}
		}
		if front, err = readFront(path); err != nil {
			return UpResult{}, err
		}
	}
	// One command at a time per cache: two ups, or an up during a down --purge,
	// would leave labels, config and data disagreeing.
	if !opts.DryRun { // a dry run reads only, and may not even create the config dir
		unlock, err := lockCache(ctx, spec.ConfigDir, spec.Name, progress)
		if err != nil {
			return UpResult{}, err
		}
		defer unlock()
	}
	cname := spec.ContainerName()
	existing, exists, err := inspect(ctx, eng, cname)
	if err != nil {
		return UpResult{}, err
	}
	if exists && !opts.DataDirSet {
		// Without --data-dir the data stays where it is: in the mount of the
		// existing container, ours or the one the guide's script made.
		if src := mountSource(existing, containerDataDir); src != "" {
			spec.DataDir = src
		}
	}
	if err := spec.Validate(); err != nil {
		return UpResult{}, err
	}
	if err := CheckDataDir(spec.DataDir, opts.Force); err != nil {
		return UpResult{}, err
	}
	result := UpResult{
		Name: spec.Name, Container: cname, Layout: spec.Layout, Address: spec.LocalAddress(), Upstream: spec.Upstream,
		ConfigPath: spec.ConfigPath(), DataDir: spec.DataDir,
	}

	var wouldFetchImage string
	if opts.DryRun {
		if wouldFetchImage, err = imageWouldBeFetched(ctx, eng, spec.Image, opts); err != nil {
			return result, err
		}
	} else {
		if err := LoadImageArchive(ctx, eng, opts.ImageArchive, spec.Image, opts.Pull, progress); err != nil {
			return result, err
		}
		if err := ensureImage(ctx, eng, spec.Image, opts.Pull, progress); err != nil {
			return result, err
		}
	}

	// The config file: keep a secret we wrote before, else a fresh random one.
	old, err := os.ReadFile(spec.ConfigPath())
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		return result, fmt.Errorf("read config %s: %w; run as root (sudo) or pass --config-dir", spec.ConfigPath(), err)
	}
	secret := KeptSecret(old)
	if secret == "" {
		if secret, err = NewSecret(); err != nil {
			return result, err
		}
	}
	config, err := RenderConfig(spec, secret)
	if err != nil {
		return result, err
	}
	labels, err := specLabels(spec, config, front.sum)
	if err != nil {
		return result, err
	}
	cur := Current{Config: old}
	if exists {
		cur.Container = &existing
	}
	plan := Decide(cur, Desired{Spec: spec, Config: config, Labels: labels, ReplaceForeign: opts.Replace})
	if plan.Refuse != nil {
		return result, plan.Refuse
	}
	result.Action, result.Changes = plan.Action, plan.Changes
	if opts.DryRun {
		result.DryRun = true
		if wouldFetchImage != "" {
			result.Changes = append(result.Changes, wouldFetchImage)
		}
		if plan.WriteConfig && plan.Action != ActionCreated {
			result.Changes = append(result.Changes, "config "+spec.ConfigPath()+" rewritten (the previous one kept as .bak)")
		}
		return result, nil
	}

	if plan.Create {
		holdsPort := exists && existing.State != nil && existing.State.Running && portOf(existing) == spec.Port
		if err := checkPortFree(ctx, eng, spec, existing.ID, holdsPort); err != nil {
			return result, err
		}
		if !opts.SkipUpstreamCheck {
			fmt.Fprintf(progress, "cache %s: checking upstream %s\n", spec.Name, spec.Upstream)
			if err := CheckUpstream(ctx, spec); err != nil {
				var unreachable *unreachableError
				if spec.Layout == LayoutPlain || !errors.As(err, &unreachable) {
					return result, err
				}
				// The front starts without its upstream and serves what the cache holds.
				fmt.Fprintf(progress, "cache %s: %s; starting anyway: the front serves cached content until the upstream answers\n", spec.Name, unreachable.short())
			}
		}
		if err := ensureDir(spec.ConfigDir, "--config-dir"); err != nil {
			return result, err
		}
		if err := ensureDir(spec.DataDir, "--data-dir"); err != nil {
			return result, err
		}
		if plan.WriteConfig {
			if result.Backup, err = writeConfig(spec, old, config); err != nil {
				return result, err
			}
			fmt.Fprintf(progress, "cache %s: wrote %s\n", spec.Name, spec.ConfigPath())
		}
	}
	if spec.Layout == LayoutFront {
		// Also for an unchanged cache: the container needs the file to restart.
		if err := installFront(front, spec.FrontPath()); err != nil {
			return result, fmt.Errorf("%w; run as root (sudo) or pass --config-dir", err)
		}
	}

	switch {
	case plan.Start:
		fmt.Fprintf(progress, "cache %s: starting stopped container %s\n", spec.Name, cname)
		if _, err := eng.ContainerStart(ctx, cname, client.ContainerStartOptions{}); err != nil {
			return result, startError(ctx, eng, spec, err)
		}
	case plan.Create:
		if plan.Replace {
			fmt.Fprintf(progress, "cache %s: replacing container %s (data in %s is kept)\n", spec.Name, cname, spec.DataDir)
			if _, err := eng.ContainerRemove(ctx, cname, client.ContainerRemoveOptions{Force: true}); err != nil {
				return result, fmt.Errorf("remove old container %s: %w", cname, engineError(eng, err))
			}
		}
		create, err := containerOptions(spec, labels)
		if err != nil {
			return result, err
		}
		fmt.Fprintf(progress, "cache %s: creating container %s from %s (%s layout)\n", spec.Name, cname, spec.Image, spec.Layout)
		if _, err := eng.ContainerCreate(ctx, create); err != nil {
			return result, fmt.Errorf("create container %s: %w", cname, engineError(eng, err))
		}
		if _, err := eng.ContainerStart(ctx, cname, client.ContainerStartOptions{}); err != nil {
			return result, startError(ctx, eng, spec, err)
		}
	default:
		fmt.Fprintf(progress, "cache %s: unchanged, container %s is running\n", spec.Name, cname)
	}
	if err := waitReady(ctx, eng, spec, opts.Wait, progress); err != nil {
		return result, err
	}
	if spec.Layout == LayoutFront {
		result.Mode, result.Warning = frontMode(ctx, eng, spec)
	}
	return result, nil
}

// writeConfig replaces the config file, keeping the previous one (maybe the
// guide's) beside it, 0600: it may hold a password. It returns the backup path.
func writeConfig(spec Spec, old, config []byte) (string, error) {
	backup := ""
	if len(old) > 0 {
		backup = spec.ConfigPath() + ".bak"
		if err := atomicfile.WriteFile(backup, old, 0o600); err != nil {
			return "", fmt.Errorf("back up %s: %w; run as root (sudo) or pass --config-dir", spec.ConfigPath(), err)
		}
	}
	if err := atomicfile.WriteFile(spec.ConfigPath(), config, 0o600); err != nil {
		return backup, fmt.Errorf("%w; run as root (sudo) or pass --config-dir", err)
	}
	return backup, nil
}

// frontMode asks a front cache whether it reaches its upstream.
func frontMode(ctx context.Context, eng Engine, spec Spec) (mode, warning string) {
	c, ok, err := inspect(ctx, eng, spec.ContainerName())
	if err != nil || !ok {
		return "", ""
	}
	addr := metricsAddress(c, spec)
	if addr == "" {
		return "", ""
	}
	fs, err := readFrontStatus(ctx, addr)
	if err != nil {
		return "", ""
	}
	if fs.Mode == ModeOffline {
		return fs.Mode, UnreachableWarning
	}
	return fs.Mode, ""
}

func containerOptions(spec Spec, labels map[string]string) (client.ContainerCreateOptions, error) {
	binds := []string{
		spec.ConfigPath() + ":" + containerConfigPath + ":ro",
		spec.DataDir + ":" + containerDataDir,
	}
	if spec.TLSCert != "" {
		binds = append(binds, spec.TLSCert+":"+containerTLSCertPath+":ro", spec.TLSKey+":"+containerTLSKeyPath+":ro")
	}
	if spec.Htpasswd != "" {
		binds = append(binds, spec.Htpasswd+":"+containerHtpasswdPath+":ro")
	}
	host := &container.HostConfig{
		Binds:         binds,
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyMode(spec.Restart)},
		NetworkMode:   container.NetworkMode(spec.Network),
	}
	cfg := &container.Config{Image: spec.Image, Labels: labels}
	if spec.Layout == LayoutFront {
		// The plugin's own binary is PID 1 and runs the image's /bin/registry as its children.
		host.Binds = append(host.Binds, spec.FrontPath()+":"+containerFrontPath+":ro")
		host.Tmpfs = map[string]string{containerRunDir: "rw,mode=0700,size=16m"}
		cfg.Entrypoint = frontCommand(spec)
	}
	if spec.Network == NetworkBridge {
		bind := netip.IPv4Unspecified()
		if spec.Bind != "" {
			addr, err := netip.ParseAddr(spec.Bind)
			if err != nil {
				return client.ContainerCreateOptions{}, fmt.Errorf("invalid --bind %q: %w", spec.Bind, err)
			}
			bind = addr
		}
		cachePort := network.MustParsePort(strconv.Itoa(containerPort) + "/tcp")
		debugPort := network.MustParsePort(strconv.Itoa(containerDebugPort) + "/tcp")
		host.PortBindings = network.PortMap{
			cachePort: {{HostIP: bind, HostPort: strconv.Itoa(spec.Port)}},
			// Metrics on loopback only, on a port the engine picks; `status` reads it back.
			debugPort: {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: ""}},
		}
		cfg.ExposedPorts = network.PortSet{cachePort: {}, debugPort: {}}
	}
	return client.ContainerCreateOptions{Name: spec.ContainerName(), Config: cfg, HostConfig: host}, nil
}

// frontCommand is the front's command line in the container: where clients
// and metrics readers connect, and the upstream rate. Nothing secret: the
// credentials stay in the registry config file.
func frontCommand(spec Spec) []string {
	listen, metrics := ":"+strconv.Itoa(containerPort), ":"+strconv.Itoa(containerDebugPort)
	if spec.Network == NetworkHost {
		listen = net.JoinHostPort(spec.Bind, strconv.Itoa(spec.Port))
		metrics = ""
		if spec.MetricsPort != 0 {
			metrics = net.JoinHostPort("127.0.0.1", strconv.Itoa(spec.MetricsPort))
		}
	}
	return []string{containerFrontPath, "front",
		"--registry-config", containerConfigPath,
		"--listen", listen,
		"--metrics-listen", metrics,
		"--upstream-rate", strconv.FormatInt(spec.UpstreamRate, 10),
	}
}

// imageWouldBeFetched says how Up would get an image the engine lacks, for a dry run.
func imageWouldBeFetched(ctx context.Context, eng Engine, image string, opts UpOptions) (string, error) {
	_, err := eng.ImageInspect(ctx, image)
	switch {
	case err == nil && opts.Pull != PullAlways:
		return "", nil
	case err != nil && !isNotFound(err):
		return "", engineError(eng, err)
	case opts.ImageArchive != "":
		return "image " + image + " loaded from " + opts.ImageArchive, nil
	case opts.Pull == PullNever:
		return "", missingImage(image, "--pull never was given")
	}
	return "image " + image + " pulled", nil
}

func ensureImage(ctx context.Context, eng Engine, image, pull string, progress io.Writer) error {
	if pull == "" {
		pull = PullMissing
	}
	if pull != PullAlways {
		_, err := eng.ImageInspect(ctx, image)
		if err == nil {
			return nil
		}
		if !isNotFound(err) {
			return engineError(eng, err)
		}
		if pull == PullNever {
			return missingImage(image, "--pull never was given")
		}
	}
	fmt.Fprintf(progress, "pulling %s\n", image)
	resp, err := eng.ImagePull(ctx, image, client.ImagePullOptions{})
	if err == nil {
		err = resp.Wait(ctx)
	}
	if err != nil {
		return missingImage(image, "pull failed: "+err.Error())
	}
	return nil
}

func missingImage(image, why string) error {
	return fmt.Errorf("image %s is not on this Docker engine (%s); pull it (docker pull %s), load a saved copy (--image-archive registry.tar, or docker load -i registry.tar), build the local one with scripts/registry-image.sh, or pass --image", image, why, image)
}

func mountSource(c container.InspectResponse, dest string) string {
	for _, m := range c.Mounts {
		if m.Destination == dest {
			return m.Source
		}
	}
	return ""
}

// portOf is the host port a cache container serves on.
func portOf(c container.InspectResponse) int {
	if c.Config != nil {
		if s, ok := specFromLabels(c.Config.Labels); ok {
			return s.Port
		}
	}
	if c.HostConfig != nil && c.HostConfig.NetworkMode.IsHost() {
		// A host-network registry listens where its config's http.addr says.
		return listenPort(mountSource(c, containerConfigPath))
	}
	if c.HostConfig != nil {
		for p, bindings := range c.HostConfig.PortBindings {
			if p.Num() == containerPort {
				for _, b := range bindings {
					if n, err := strconv.Atoi(b.HostPort); err == nil {
						return n
					}
				}
			}
		}
	}
	return 0
}

// checkPortFree names what holds the cache's port: another container (published
// or a host-network cache), or, on a local engine, any other process.
func checkPortFree(ctx context.Context, eng Engine, spec Spec, selfID string, selfHolds bool) error {
	list, err := eng.ContainerList(ctx, client.ContainerListOptions{})
	if err != nil {
		return engineError(eng, err)
	}
	// The ports this cache will hold: its own and, with host networking, its metrics port.
	mine := map[int]string{spec.Port: "--port"}
	if spec.Network == NetworkHost && spec.MetricsPort != 0 {
		mine[spec.MetricsPort] = "--metrics-port"
	}
	for _, c := range list.Items {
		if c.ID == selfID {
			continue
		}
		holder := strings.TrimPrefix(firstName(c.Names), "/")
		var theirs []int
		for _, p := range c.Ports {
			theirs = append(theirs, int(p.PublicPort))
		}
		if s, ok := specFromLabels(c.Labels); ok && s.Network == NetworkHost {
			theirs = append(theirs, s.Port, s.MetricsPort)
		}
		for _, port := range theirs {
			flag, clash := mine[port]
			if !clash || port == 0 {
				continue
			}
			advice := fmt.Sprintf("docker rm -f %s", holder)
			if other := c.Labels[LabelName]; other != "" {
				advice = fmt.Sprintf("docker bkcache down %s", other)
			}
			return fmt.Errorf("port %d is in use by container %s; pass %s or run %q", port, holder, flag, advice)
		}
	}
	if selfHolds || !strings.HasPrefix(eng.DaemonHost(), "unix://") {
		return nil
	}
	host := spec.Bind
	if spec.Network == NetworkBridge && (host == "0.0.0.0" || host == "::") {
		host = ""
	}
	ports := []int{spec.Port}
	if spec.Network == NetworkHost && spec.MetricsPort != 0 {
		ports = append(ports, spec.MetricsPort)
	}
	for _, port := range ports {
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			flag := "--port"
			if port != spec.Port {
				flag = "--metrics-port"
			}
			return fmt.Errorf("port %d is in use by another process on this host (%v); pass %s or stop that process (ss -ltnp 'sport = :%d' names it)", port, err, flag, port)
		}
		l.Close()
	}
	return nil
}

func firstName(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return names[0]
}

func isNotFound(err error) bool {
	return err != nil && (strings.Contains(strings.ToLower(err.Error()), "no such image") || strings.Contains(strings.ToLower(err.Error()), "not found"))
}

func startError(ctx context.Context, eng Engine, spec Spec, err error) error {
	msg := err.Error()
	if strings.Contains(msg, "address already in use") || strings.Contains(msg, "port is already allocated") {
		return fmt.Errorf("start container %s: port %d is in use on this host (%v); pass --port or free it", spec.ContainerName(), spec.Port, err)
	}
	return fmt.Errorf("start container %s: %w; last log lines:\n%s", spec.ContainerName(), engineError(eng, err), tailLogs(ctx, eng, spec.ContainerName(), 20))
}

// waitReady polls GET /v2/ until the cache answers, watching for the crash loop
// registry:2 enters when its upstream cannot be reached at start.
func waitReady(ctx context.Context, eng Engine, spec Spec, wait time.Duration, progress io.Writer) error {
	deadline := time.Now().Add(wait)
	url := spec.Scheme() + "://" + spec.LocalAddress() + "/v2/"
	httpc := insecureClient()
	httpc.Timeout = 2 * time.Second
	fmt.Fprintf(progress, "cache %s: waiting for %s\n", spec.Name, url)
	var lastErr error
	restarts := -1 // restarts seen at the first look: older ones are history, not this start
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := httpc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
			err = fmt.Errorf("GET %s answered %s", url, resp.Status)
		}
		lastErr = err
		c, ok, err := inspect(ctx, eng, spec.ContainerName())
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("container %s disappeared while starting; run \"docker bkcache up\" again", spec.ContainerName())
		}
		if restarts < 0 {
			restarts = c.RestartCount
		}
		if c.State != nil && (c.State.Restarting || c.RestartCount > restarts || c.State.Status == container.StateExited || c.State.Status == container.StateDead) {
			return crashError(ctx, eng, spec, c)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cache %s did not answer %s within %s (last error: %v); last log lines of %s:\n%s",
				spec.Name, url, wait, lastErr, spec.ContainerName(), tailLogs(ctx, eng, spec.ContainerName(), 20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func crashError(ctx context.Context, eng Engine, spec Spec, c container.InspectResponse) error {
	logs := tailLogs(ctx, eng, spec.ContainerName(), 20)
	exit := 0
	if c.State != nil {
		exit = c.State.ExitCode
	}
	if spec.Layout == LayoutPlain && strings.Contains(logs, "panic:") && (strings.Contains(logs, "/v2/") || strings.Contains(logs, spec.UpstreamHost())) {
		return fmt.Errorf("cache %s crashed on start (restarts: %d): registry:2 panics when it cannot reach its upstream %s; fix the link (DNS, proxy, firewall) and run \"docker bkcache up\" again, or \"docker bkcache down %s\" to stop the restart loop; last log lines:\n%s",
			spec.Name, c.RestartCount, spec.Upstream, spec.Name, logs)
	}
	advice := ""
	if spec.Layout == LayoutFront {
		advice = "; \"docker bkcache up --plain\" runs registry:2 alone"
	}
	return fmt.Errorf("cache %s exited on start (exit code %d, restarts: %d)%s; last log lines of %s:\n%s", spec.Name, exit, c.RestartCount, advice, spec.ContainerName(), logs)
}
