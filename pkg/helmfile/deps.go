package helmfile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
)

// This file completes a chart's dependencies in memory, as `helm dependency
// build` would vendor them into charts/, without writing anywhere: file://
// repositories are read relative to the chart's own directory (helm's
// internal/resolver GetLocalPath), http(s) and oci:// ones fetched through
// the run's fetcher (Chart.lock's versions first). Alias, condition and tags
// are left to helm's ProcessDependencies at render time, which reads them
// from Chart.yaml as helm does.

// maxDependencyDepth bounds file:// chains (a library that names its user).
const maxDependencyDepth = 10

// loadLocalChart loads a chart directory or .tgz and completes the
// dependencies its charts/ lacks. A packaged chart is what it is: its
// archive must hold them, as helm requires.
func (f *fetcher) loadLocalChart(ctx context.Context, path string) (*chart.Chart, error) {
	chrt, err := loader.Load(path)
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %w", path, err)
	}
	st, err := os.Stat(path)
	if err != nil || !st.IsDir() {
		return chrt, nil // the render reports what the archive lacks
	}
	if err := f.completeDependencies(ctx, chrt, path, 0); err != nil {
		return nil, err
	}
	return chrt, nil
}

// completeDependencies adds to chrt, loaded from the directory dir, each
// dependency its Chart.yaml names and its charts/ does not hold; a file://
// dependency that is itself a directory gets its own completed the same way.
func (f *fetcher) completeDependencies(ctx context.Context, chrt *chart.Chart, dir string, depth int) error {
	chartYAML := filepath.Join(dir, "Chart.yaml")
	if depth > maxDependencyDepth {
		return fmt.Errorf("%s: file:// dependencies nested deeper than %d: a cycle?", chartYAML, maxDependencyDepth)
	}
	for _, d := range chrt.Metadata.Dependencies {
		if err := ctx.Err(); err != nil {
			return err
		}
		if hasDependency(chrt, d.Name) {
			continue // vendored in charts/ (helm matches by name; an alias copies it later)
		}
		dep, err := f.fetchDependency(ctx, chrt, d, dir, depth)
		if err != nil {
			return fmt.Errorf("chart %s: dependency %q (repository %q in %s): %w", chrt.Name(), d.Name, d.Repository, chartYAML, err)
		}
		chrt.AddDependency(dep)
	}
	return nil
}

func hasDependency(chrt *chart.Chart, name string) bool {
	return slices.ContainsFunc(chrt.Dependencies(), func(c *chart.Chart) bool { return c.Name() == name })
}

// fetchDependency loads one missing dependency of chrt (whose directory is dir).
func (f *fetcher) fetchDependency(ctx context.Context, chrt *chart.Chart, d *chart.Dependency, dir string, depth int) (*chart.Chart, error) {
	repo := d.Repository
	switch {
	case repo == "":
		return nil, fmt.Errorf("not in %s and no repository given: vendor it there or name its repository", filepath.Join(dir, "charts", d.Name))
	case strings.HasPrefix(repo, "file://"):
		p := strings.TrimPrefix(repo, "file://")
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("%s not found (file:// paths are relative to the directory of the Chart.yaml that names them)", p)
		}
		dep, err := loader.Load(p)
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", p, err)
		}
		if err := checkConstraint(d.Version, dep.Metadata.Version); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if st.IsDir() {
			if err := f.completeDependencies(ctx, dep, p, depth+1); err != nil {
				return nil, err
			}
		}
		return dep, nil
	case strings.HasPrefix(repo, "@"), strings.HasPrefix(repo, "alias:"):
		return nil, fmt.Errorf("names a repository of helm's repositories.yaml, which is not read here: write its URL in Chart.yaml, or vendor the chart into charts/")
	}
	if _, err := semver.NewConstraint(d.Version); err != nil {
		return nil, fmt.Errorf("version constraint %q: %w (helm's dependency build needs one)", d.Version, err)
	}
	version := lockedVersion(chrt.Lock, d)
	if strings.HasPrefix(repo, "oci://") {
		ref := strings.TrimSuffix(repo, "/") + "/" + d.Name
		data, err := f.blob(ref+"@"+version, func() ([]byte, error) { return f.pullOCI(ctx, ref, version) })
		if err != nil {
			return nil, err
		}
		return loadArchive(ref, data)
	}
	u, err := f.chartURL(ctx, repo, d.Name, version)
	if err != nil {
		return nil, err
	}
	data, err := f.blob(u, func() ([]byte, error) { return f.get(ctx, u) })
	if err != nil {
		return nil, err
	}
	return loadArchive(u, data)
}

// lockedVersion is Chart.lock's version of d, else Chart.yaml's constraint,
// as helm's dependency build prefers the lock.
func lockedVersion(lock *chart.Lock, d *chart.Dependency) string {
	if lock != nil {
		for _, l := range lock.Dependencies {
			if l.Name == d.Name && l.Repository == d.Repository && l.Version != "" {
				return l.Version
			}
		}
	}
	return d.Version
}

// checkConstraint is helm's resolver check of a file:// dependency: its
// version must satisfy Chart.yaml's constraint.
func checkConstraint(constraint, version string) error {
	c, err := semver.NewConstraint(constraint)
	if err != nil {
		return fmt.Errorf("version constraint %q: %w (helm's dependency build needs one)", constraint, err)
	}
	v, err := semver.NewVersion(version)
	if err != nil {
		return nil // helm skips the check for a version it cannot read
	}
	if !c.Check(v) {
		return fmt.Errorf("chart version %s does not satisfy %q", version, constraint)
	}
	return nil
}
