package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

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
		if err := recordDataDir(spec, spec.DataDir); err != nil {
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

	started := time.Now() // crashes are looked for in the logs from here on
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
	if err := waitReady(ctx, eng, spec, started, opts.Wait, progress); err != nil {
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
	ep := frontEndpoints(c, spec)
	if ep.status == "" {
		return "", ""
	}
	fs, err := readFrontStatus(ctx, ep.status)
	if err != nil {
		return "", ""
	}
	if fs.Mode == ModeOffline {
		return fs.Mode, UnreachableWarning
	}
	return fs.Mode, ""
}
