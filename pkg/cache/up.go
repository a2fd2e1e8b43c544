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

	"github.com/moby/moby/api/types/container"
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
// changes nothing. A spec without DataDir keeps an existing container's data
// directory (also one adopted from the guide's script).
func Up(ctx context.Context, eng Engine, spec Spec, opts UpOptions) (UpResult, error) {
	u := &upRun{eng: eng, dataDirSet: spec.DataDir != "", spec: spec.WithDefaults(), opts: opts}
	u.opts.complete()
	if err := u.validate(); err != nil {
		return UpResult{}, err
	}
	if err := Ping(ctx, eng); err != nil {
		return UpResult{}, err
	}
	if err := u.readFront(); err != nil {
		return UpResult{}, err
	}
	// One command at a time per cache: two ups, or an up during a down --purge,
	// would leave labels, config and data disagreeing.
	if !opts.DryRun { // a dry run reads only, and may not even create the config dir
		unlock, err := lockCache(ctx, u.spec.ConfigDir, u.spec.Name, u.opts.Progress)
		if err != nil {
			return UpResult{}, err
		}
		defer unlock()
	}
	if err := u.inspect(ctx); err != nil {
		return UpResult{}, err
	}
	spec = u.spec
	result := UpResult{
		Name: spec.Name, Container: spec.ContainerName(), Layout: spec.Layout, Address: spec.LocalAddress(), Upstream: spec.Upstream,
		ConfigPath: spec.ConfigPath(), DataDir: spec.DataDir,
	}
	wouldFetchImage, err := u.image(ctx)
	if err != nil {
		return result, err
	}
	plan, err := u.decide()
	if err != nil {
		return result, err
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
		if result.Backup, err = u.prepareCreate(ctx, plan); err != nil {
			return result, err
		}
	}
	if spec.Layout == LayoutFront {
		// Also for an unchanged cache: the container needs the file to restart.
		if err := installFront(u.front, spec.FrontPath()); err != nil {
			return result, fmt.Errorf("%w; run as root (sudo) or pass --config-dir", err)
		}
	}
	started := time.Now() // crashes are looked for in the logs from here on
	if err := u.start(ctx, plan); err != nil {
		return result, err
	}
	if err := waitReady(ctx, eng, spec, started, u.opts.Wait, u.opts.Progress); err != nil {
		return result, err
	}
	if spec.Layout == LayoutFront {
		result.Mode, result.Warning = frontMode(ctx, eng, spec)
		if u.startedOffline && result.Warning == "" && result.Mode != ModeOnline {
			// The front may not have finished its first probe yet.
			result.Mode, result.Warning = ModeOffline, UnreachableWarning
		}
	}
	return result, nil
}

// complete fills the defaults: a 60 s wait, no progress output.
func (o *UpOptions) complete() {
	if o.Wait == 0 {
		o.Wait = 60 * time.Second
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// upRun is one Up: what it learns step by step.
type upRun struct {
	eng        Engine
	spec       Spec
	opts       UpOptions
	dataDirSet bool // the caller chose the data directory
	front      frontBinary
	existing   container.InspectResponse
	exists     bool
	old        []byte // the config file as found
	config     []byte // the config file as wanted
	labels     map[string]string
	// startedOffline: the upstream did not answer before a new container
	// was made; the front starts in outage mode.
	startedOffline bool
}

// validate checks what needs no engine: the name, the config directory, the
// files the cache will mount.
func (u *upRun) validate() error {
	if err := ValidateName(u.spec.Name); err != nil {
		return fmt.Errorf("%w (--name)", err)
	}
	if !filepath.IsAbs(u.spec.ConfigDir) {
		return fmt.Errorf("config directory %q of cache %s must be an absolute path (--config-dir)", u.spec.ConfigDir, u.spec.Name)
	}
	for _, f := range []struct{ path, flag string }{{u.spec.TLSCert, "--tls-cert"}, {u.spec.TLSKey, "--tls-key"}, {u.spec.Htpasswd, "--htpasswd"}} {
		if f.path != "" {
			if err := readable(f.path, f.flag); err != nil {
				return err
			}
		}
	}
	return nil
}

// readFront reads the static binary the front layout runs in the container.
func (u *upRun) readFront() error {
	if u.spec.Layout != LayoutFront {
		return nil
	}
	path := u.opts.FrontBinary
	if path == "" {
		var err error
		if path, err = os.Executable(); err != nil {
			return fmt.Errorf("find the plugin's own binary for the cache's front: %w; pass --plain for registry:2 alone", err)
		}
	}
	var err error
	u.front, err = readFront(path)
	return err
}

// inspect finds the existing container, keeps its data directory unless the
// caller chose one, and checks the spec and the data directory.
func (u *upRun) inspect(ctx context.Context) error {
	var err error
	if u.existing, u.exists, err = inspect(ctx, u.eng, u.spec.ContainerName()); err != nil {
		return err
	}
	if u.exists && !u.dataDirSet {
		// The data stays where it is: in the mount of the existing container,
		// ours or the one the guide's script made.
		if src := mountSource(u.existing, containerDataDir); src != "" {
			u.spec.DataDir = src
		}
	}
	if err := u.spec.Validate(); err != nil {
		return err
	}
	return CheckDataDir(u.spec.DataDir, u.opts.Force)
}

// image makes the cache image present (loaded from the archive or pulled);
// a dry run only says whether it would be fetched.
func (u *upRun) image(ctx context.Context) (wouldFetch string, err error) {
	if u.opts.DryRun {
		return imageWouldBeFetched(ctx, u.eng, u.spec.Image, u.opts)
	}
	if err := LoadImageArchive(ctx, u.eng, u.opts.ImageArchive, u.spec.Image, u.opts.Pull, u.opts.Progress); err != nil {
		return "", err
	}
	return "", ensureImage(ctx, u.eng, u.spec.Image, u.opts.Pull, u.opts.Progress)
}

// decide renders the config (keeping a secret written before, else a fresh
// random one) and the labels, and decides what to do with the container.
func (u *upRun) decide() (Plan, error) {
	var err error
	u.old, err = os.ReadFile(u.spec.ConfigPath())
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		return Plan{}, fmt.Errorf("read config %s: %w; run as root (sudo) or pass --config-dir", u.spec.ConfigPath(), err)
	}
	secret := KeptSecret(u.old)
	if secret == "" {
		if secret, err = NewSecret(); err != nil {
			return Plan{}, err
		}
	}
	if u.config, err = RenderConfig(u.spec, secret); err != nil {
		return Plan{}, err
	}
	if u.labels, err = specLabels(u.spec, u.config, u.front.sum); err != nil {
		return Plan{}, err
	}
	cur := Current{Config: u.old}
	if u.exists {
		cur.Container = &u.existing
	}
	plan := Decide(cur, Desired{Spec: u.spec, Config: u.config, Labels: u.labels, ReplaceForeign: u.opts.Replace})
	if plan.Refuse != nil {
		return Plan{}, plan.Refuse
	}
	return plan, nil
}

// prepareCreate readies a new container: the port free, the upstream
// answering (the front starts without it), the directories and the config
// file. It returns the config's backup path when it replaced one.
func (u *upRun) prepareCreate(ctx context.Context, plan Plan) (backup string, err error) {
	spec, progress := u.spec, u.opts.Progress
	holdsPort := u.exists && u.existing.State != nil && u.existing.State.Running && portOf(u.existing) == spec.Port
	if err := checkPortFree(ctx, u.eng, spec, u.existing.ID, holdsPort); err != nil {
		return "", err
	}
	if !u.opts.SkipUpstreamCheck {
		fmt.Fprintf(progress, "cache %s: checking upstream %s\n", spec.Name, spec.Upstream)
		if err := CheckUpstream(ctx, spec); err != nil {
			var unreachable *unreachableError
			if spec.Layout == LayoutPlain || !errors.As(err, &unreachable) {
				return "", err
			}
			// The front starts without its upstream and serves what the cache holds.
			u.startedOffline = true
			fmt.Fprintf(progress, "cache %s: %s; starting anyway: the front serves cached content until the upstream answers\n", spec.Name, unreachable.short())
		}
	}
	if err := ensureDir(spec.ConfigDir, "--config-dir"); err != nil {
		return "", err
	}
	if err := ensureDir(spec.DataDir, "--data-dir"); err != nil {
		return "", err
	}
	if err := recordDataDir(spec, spec.DataDir); err != nil {
		return "", err
	}
	if !plan.WriteConfig {
		return "", nil
	}
	if backup, err = writeConfig(spec, u.old, u.config); err != nil {
		return "", err
	}
	fmt.Fprintf(progress, "cache %s: wrote %s\n", spec.Name, spec.ConfigPath())
	return backup, nil
}

// start starts a stopped container, or (re)creates and starts it, as planned.
func (u *upRun) start(ctx context.Context, plan Plan) error {
	spec, progress, cname := u.spec, u.opts.Progress, u.spec.ContainerName()
	switch {
	case plan.Start:
		fmt.Fprintf(progress, "cache %s: starting stopped container %s\n", spec.Name, cname)
		if _, err := u.eng.ContainerStart(ctx, cname, client.ContainerStartOptions{}); err != nil {
			return startError(ctx, u.eng, spec, err)
		}
	case plan.Create:
		if plan.Replace {
			fmt.Fprintf(progress, "cache %s: replacing container %s (data in %s is kept)\n", spec.Name, cname, spec.DataDir)
			if _, err := u.eng.ContainerRemove(ctx, cname, client.ContainerRemoveOptions{Force: true}); err != nil {
				return fmt.Errorf("remove old container %s: %w", cname, engineError(u.eng, err))
			}
		}
		create, err := containerOptions(spec, u.labels)
		if err != nil {
			return err
		}
		fmt.Fprintf(progress, "cache %s: creating container %s from %s (%s layout)\n", spec.Name, cname, spec.Image, spec.Layout)
		if _, err := u.eng.ContainerCreate(ctx, create); err != nil {
			return fmt.Errorf("create container %s: %w", cname, engineError(u.eng, err))
		}
		if _, err := u.eng.ContainerStart(ctx, cname, client.ContainerStartOptions{}); err != nil {
			return startError(ctx, u.eng, spec, err)
		}
	default:
		fmt.Fprintf(progress, "cache %s: unchanged, container %s is running\n", spec.Name, cname)
	}
	return nil
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
	api, err := newFrontAPI(ctx, eng, c, spec, false)
	if err != nil {
		return "", ""
	}
	fs, err := api.status(ctx)
	if err != nil {
		return "", ""
	}
	if fs.Mode == ModeOffline {
		return fs.Mode, UnreachableWarning
	}
	return fs.Mode, ""
}
