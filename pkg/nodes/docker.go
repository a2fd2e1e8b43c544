package nodes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/bkcache/bkcache/pkg/dockerd"
)

// Docker-runtime nodes (containerRuntimeVersion docker://…, dockershim or cri-dockerd): the
// cache goes into daemon.json, which dockerd re-reads on SIGHUP, so no runtime restart.

const (
	DefaultDockerReloadCommand = "systemctl reload docker"
	dockerCertsDir             = "/etc/docker/certs.d"
	// dockerInfoCommand prints dockerd's running registry configuration: the proof a reload took.
	dockerInfoCommand = `docker info --format '{{json .RegistryConfig}}'`
	dockerRuntime     = "docker"
)

func isDocker(runtime string) bool { return strings.HasPrefix(runtime, "docker://") }

// planDocker works out the daemon.json change (last, like config.toml) and, with --ca-file,
// the CA in /etc/docker/certs.d/HOST:PORT/ (dockerd reads it per connection: no reload).
func planDocker(ctx context.Context, o MirrorOptions, n Node, r *NodeReport, _ *fileSet) ([]change, error) {
	r.ConfigFile = o.DaemonJSON
	var changes []change
	if len(o.CA) > 0 {
		p := path.Join(dockerCertsDir, o.Registry, caFileName) // *.crt there are CA roots for that registry
		old, _, err := n.ReadFile(ctx, p)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(old, o.CA) {
			changes = append(changes, change{path: p, old: old, new: o.CA})
		}
	}
	cur, _, err := n.ReadFile(ctx, o.DaemonJSON)
	if err != nil {
		return nil, err
	}
	spec := dockerd.Spec{Cache: o.Registry, TLS: o.TLS || len(o.CA) > 0, MirrorDockerIO: slices.Contains(o.Upstreams, "docker.io")}
	next, err := dockerd.Patch(cur, spec)
	if err != nil {
		return nil, fmt.Errorf("node %s: %s: %w", n.Name(), o.DaemonJSON, err)
	}
	if !bytes.Equal(cur, next) || (cur == nil) != (next == nil) {
		changes = append(changes, change{path: o.DaemonJSON, old: cur, new: next})
		r.ConfigChanged, r.ReloadNeeded = true, true
	}
	for _, u := range o.Upstreams {
		if u != "docker.io" && u != o.Registry {
			r.Warnings = append(r.Warnings, fmt.Sprintf("docker: registry-mirrors only apply to docker.io, so pulls of %s do not use the cache on this node; name images %s/… (BlueKing: imageRegistry) instead", u, o.Registry))
		}
	}
	if o.NoFallback && spec.MirrorDockerIO {
		r.Warnings = append(r.Warnings, "docker: --no-fallback cannot be kept: dockerd falls back from registry-mirrors to docker.io")
	}
	return changes, nil
}

// reloadDocker sends dockerd its reload, then waits until `docker info` shows what daemon
// (the file's new bytes, nil when removed) asks for: SIGHUP returns at once, and dockerd
// refuses a file it cannot use without failing the reload command (it only logs why).
// previous is the file before: what dockerd keeps of it after the reload is a warning.
func reloadDocker(ctx context.Context, o MirrorOptions, n Node, r *NodeReport, previous, daemon []byte) error {
	start := time.Now()
	o.progress(n.Name(), "reloading dockerd (%s)", o.DockerReloadCmd)
	if _, err := n.RunOnHost(ctx, o.DockerReloadCmd); err != nil {
		if nr := notRun(err, n.Name(), o.DockerReloadCmd, "--docker-reload-command"); nr != nil {
			return nr
		}
		return fmt.Errorf("node %s: reload dockerd (%q): %w; give the right command with --docker-reload-command", n.Name(), o.DockerReloadCmd, err)
	}
	want, err := dockerd.Parse(daemon)
	if err != nil {
		return fmt.Errorf("node %s: %s: %w", n.Name(), o.DaemonJSON, err)
	}
	var (
		info    []byte // the last `docker info` that answered
		missing []string
		infoErr error // why `docker info` never answered
	)
	err = wait.PollUntilContextTimeout(ctx, 300*time.Millisecond, o.ReloadTimeout, true, func(ctx context.Context) (bool, error) {
		out, err := n.RunOnHost(ctx, dockerInfoCommand)
		var ee *ExitError
		if errors.As(err, &ee) && ee.Code == 127 {
			return false, errNoDockerCLI
		}
		if err != nil {
			if ctx.Err() == nil { // not the deadline cutting the last try short
				infoErr = err
			}
			return false, nil
		}
		m, err := dockerd.Missing(out, want)
		if err != nil {
			infoErr = err
			return false, nil
		}
		info, missing = out, m
		return len(missing) == 0, nil
	})
	switch {
	case errors.Is(err, errNoDockerCLI):
		r.Warnings = append(r.Warnings, fmt.Sprintf("docker CLI not found on the node: could not confirm that dockerd took up %s", o.DaemonJSON))
	case err != nil && info == nil:
		return fmt.Errorf("node %s: after %q, `docker info` did not answer within %s (%v); check dockerd (journalctl -u docker)", n.Name(), o.DockerReloadCmd, o.ReloadTimeout, infoErr)
	case err != nil:
		return fmt.Errorf("node %s: dockerd did not take up %s within %s after %q (missing: %s); journalctl -u docker says why (e.g. a flag in docker's unit that sets the same key)",
			n.Name(), o.DaemonJSON, o.ReloadTimeout, o.DockerReloadCmd, strings.Join(missing, ", "))
	}
	r.Reloaded, r.RestartSeconds = true, time.Since(start).Seconds()
	if before, perr := dockerd.Parse(previous); perr == nil && info != nil {
		if kept, _ := dockerd.Kept(info, before, want); len(kept) > 0 {
			r.Warnings = append(r.Warnings, fmt.Sprintf("dockerd still runs with %s: a reload does not drop a key removed from %s (dockerd re-reads only the keys in the file); restart dockerd for it to go (systemctl restart docker)",
				strings.Join(kept, ", "), o.DaemonJSON))
		}
	}
	return nil
}

var errNoDockerCLI = errors.New("no docker CLI on the node")
