package helmfile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
	"helm.sh/helm/v3/pkg/strvals"

	"github.com/bkcache/bkcache/pkg/images"
	"github.com/bkcache/bkcache/pkg/userfile"
)

// Options for Images.
type Options struct {
	LoadOptions
	RenderOptions
	// KeepGoing renders every release it can and returns the images found
	// together with an error listing every failure.
	KeepGoing bool
	// Parallel bounds concurrent renders; the number of CPUs when zero.
	Parallel int
	// Strict fails a release that uses what is not applied here (a
	// post-renderer, kustomize transformers, a helm flag not known): its list
	// could be wrong. Without it each is a warning (Notify).
	Strict bool
}

// ReleaseError is one release that failed.
type ReleaseError struct {
	Helmfile, Release, Chart string
	Err                      error
}

func (e *ReleaseError) Error() string {
	return fmt.Sprintf("helmfile %s: release %q (chart %s): %v", e.Helmfile, e.Release, e.Chart, e.Err)
}

func (e *ReleaseError) Unwrap() error { return e.Err }

// Errors lists the releases that failed, with how many were tried.
type Errors struct {
	Failed []*ReleaseError
	Total  int
}

func (e *Errors) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d releases failed:", len(e.Failed), e.Total)
	for _, f := range e.Failed {
		b.WriteString("\n  " + f.Error())
	}
	return b.String()
}

// Images loads a helmfile, renders every selected release offline in
// parallel and returns the images they need.
func Images(ctx context.Context, path string, opts Options) (*images.List, error) {
	rels, err := LoadReleases(ctx, path, opts.LoadOptions)
	if err != nil {
		return nil, err
	}
	if len(rels) == 0 {
		return images.NewList(), fmt.Errorf("helmfile %s: no release selected (environment %q, selectors %v): check --selector, -e and installed:", path, opts.Environment, opts.Selectors)
	}
	f := newFetcher()

	g, gctx := errgroup.WithContext(ctx)
	if !opts.KeepGoing {
		ctx = gctx
	}
	n := opts.Parallel
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	g.SetLimit(n)
	var mu sync.Mutex
	all := images.NewList()
	errs := &Errors{Total: len(rels)}
	for _, r := range rels {
		if len(r.Unapplied) > 0 && r.err == nil {
			what := strings.Join(r.Unapplied, ", ")
			if opts.Strict {
				r.err = fmt.Errorf("not applied here, so its images may differ from helmfile's: %s (--strict)", what)
			} else if opts.Notify != nil {
				opts.Notify(Notice{Level: handlerWarn, Helmfile: r.Helmfile, Release: r.Name,
					Message: fmt.Sprintf("helmfile %s: release %q: not applied here, so its images may differ from helmfile's: %s (--strict makes this an error)", r.Helmfile, r.Name, what)})
			}
		}
		g.Go(func() error {
			list, err := renderRelease(ctx, f, r, opts.RenderOptions)
			mu.Lock()
			defer mu.Unlock()
			if list != nil {
				all.Merge(list)
			}
			if err != nil {
				re := &ReleaseError{Helmfile: r.Helmfile, Release: r.Name, Chart: r.Chart, Err: err}
				errs.Failed = append(errs.Failed, re)
				if !opts.KeepGoing {
					return re
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		var re *ReleaseError
		if errors.As(err, &re) {
			return all, re
		}
		return all, err
	}
	if len(errs.Failed) > 0 {
		return all, errs
	}
	return all, nil
}

func renderRelease(ctx context.Context, f *fetcher, r Release, opts RenderOptions) (*images.List, error) {
	if r.err != nil {
		return nil, r.err
	}
	chrt, err := f.load(ctx, r.chart)
	if err != nil {
		return nil, err
	}
	opts, vals, err := r.renderOptions(opts)
	if err != nil {
		return nil, err
	}
	out, err := renderChart(ctx, chrt, r.Name, r.Namespace, vals, opts)
	if err != nil {
		return nil, err
	}
	if !r.patches.empty() {
		if out.Files, err = applyPatches(out.Files, r.patches); err != nil {
			return nil, err
		}
	}
	// The deployment's imageRegistry state value, where it sets one, is the
	// registry its images are meant to come from (-o registries).
	reg, _ := r.StateValues["imageRegistry"].(string)
	return findImages(out, images.Source{Helmfile: r.Helmfile, Release: r.Name, Namespace: r.Namespace, ImageRegistry: reg})
}

// renderOptions lays the release's render settings under the command
// line's: --kube-version wins, --api-versions add; and applies --set and
// --set-string given in helmDefaults' args.
func (r Release) renderOptions(cli RenderOptions) (RenderOptions, map[string]any, error) {
	o := cli
	rr := r.Render
	if o.KubeVersion == "" {
		o.KubeVersion = rr.KubeVersion
	}
	o.APIVersions = append(slices.Clone(rr.APIVersions), cli.APIVersions...)
	o.IsUpgrade = o.IsUpgrade || rr.IsUpgrade
	o.NoHooks = o.NoHooks || rr.NoHooks
	o.SkipCRDs = o.SkipCRDs || rr.SkipCRDs
	o.SkipSchemaValidation = o.SkipSchemaValidation || rr.SkipSchemaValidation
	vals := r.Values
	if len(rr.Set)+len(rr.SetString) > 0 {
		vals = deepCopy(vals)
		for _, s := range rr.Set {
			if err := strvals.ParseInto(s, vals); err != nil {
				return o, nil, fmt.Errorf("helmDefaults --set %q: %w", s, err)
			}
		}
		for _, s := range rr.SetString {
			if err := strvals.ParseIntoString(s, vals); err != nil {
				return o, nil, fmt.Errorf("helmDefaults --set-string %q: %w", s, err)
			}
		}
	}
	return o, vals, nil
}

// ChartOptions are `--from-chart`'s: a chart, its values, a release name.
type ChartOptions struct {
	Chart       string // a directory, a .tgz, REPO-less NAME with RepoURL, or oci://
	RepoURL     string
	Version     string
	ReleaseName string // the chart's name when empty
	Namespace   string
	ValuesFiles []string
	Set         []string
	SetString   []string
	RenderOptions
}

// ChartImages renders one chart offline and returns the images it needs.
func ChartImages(ctx context.Context, opts ChartOptions) (*images.List, error) {
	ref := chartRef{Version: opts.Version}
	switch {
	case strings.HasPrefix(opts.Chart, "oci://"):
		ref.OCI = opts.Chart
	case opts.RepoURL != "":
		ref.RepoURL, ref.Name = opts.RepoURL, opts.Chart
	default:
		if _, err := os.Stat(opts.Chart); err != nil {
			return nil, fmt.Errorf("chart %s: %w (give a chart directory or .tgz, --repo URL with a chart name, or oci://)", opts.Chart, err)
		}
		ref.Local = opts.Chart
	}
	chrt, err := newFetcher().load(ctx, ref)
	if err != nil {
		return nil, err
	}
	// Local regular files only: helm would fetch http(s) values files (we stay
	// offline) and reads a named pipe or /dev/zero without end.
	for _, f := range opts.ValuesFiles {
		if err := userfile.Check(f); err != nil {
			return nil, fmt.Errorf("chart %s values: %w", opts.Chart, err)
		}
	}
	valOpts := values.Options{ValueFiles: opts.ValuesFiles, Values: opts.Set, StringValues: opts.SetString}
	vals, err := valOpts.MergeValues(getter.Providers{})
	if err != nil {
		return nil, fmt.Errorf("chart %s values: %w", opts.Chart, err)
	}
	name := opts.ReleaseName
	if name == "" {
		name = chrt.Name()
	}
	ns := opts.Namespace
	if ns == "" {
		ns = "default"
	}
	ropts := opts.RenderOptions
	if ropts.Workers == 0 {
		ropts.Workers = renderWorkers(chrt) // one chart: its templates in parallel
	}
	out, err := renderChart(ctx, chrt, name, ns, vals, ropts)
	if err != nil {
		return nil, err
	}
	return findImages(out, images.Source{Release: name, Namespace: ns})
}
