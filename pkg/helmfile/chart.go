package helmfile

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
	"sigs.k8s.io/yaml"

	"github.com/bkcache/bkcache/pkg/images"
)

// RenderOptions are the capabilities charts test and what to include.
type RenderOptions struct {
	// KubeVersion (e.g. "v1.30.0") and APIVersions set .Capabilities; helm's
	// defaults otherwise.
	KubeVersion string
	APIVersions []string
	// IncludeTests adds the `helm.sh/hook: test` pods, left out by default:
	// `helm test` runs them, a deployment does not.
	IncludeTests bool
}

// Rendered is what one release of a chart would install.
type Rendered struct {
	Chart   string
	Version string
	// Manifests holds the objects: templates, CRDs, hooks (tests only if asked).
	Manifests string
	// Values are the merged values the templates saw (chart defaults included).
	Values map[string]any
	// Annotations and ImagesLocks of the chart and its enabled subcharts.
	Annotations map[string]string
	ImagesLocks map[string][]byte // by chart name
	// Charts are the chart and its enabled subcharts, for completing split
	// maps of the values as their templates would.
	Charts []chartNode
}

// chartNode is one chart of a rendered release.
type chartNode struct {
	name, appVersion string
	valuesPath       string // where its values sit in the release's: "" for the chart, "redis" for a subchart
	templatePrefix   string // its templates' names in helm's "# Source:" lines
	templates        [][]byte
}

// renderChart renders a loaded chart client-side, as `helm template
// --include-crds` does: no cluster, `lookup` yields nothing.
func renderChart(ctx context.Context, chrt *chart.Chart, releaseName, namespace string, vals map[string]any, opts RenderOptions) (*Rendered, error) {
	if err := action.CheckDependencies(chrt, chrt.Metadata.Dependencies); err != nil {
		return nil, fmt.Errorf("chart %s: %w (vendor them into charts/ or give their repository in Chart.yaml)", chrt.Name(), err)
	}
	cfg := &action.Configuration{Log: func(string, ...any) {}}
	inst := action.NewInstall(cfg)
	inst.DryRun, inst.DryRunOption = true, "client"
	inst.ClientOnly, inst.Replace, inst.IncludeCRDs = true, true, true
	inst.ReleaseName, inst.Namespace = releaseName, namespace
	inst.DisableOpenAPIValidation = true
	if opts.KubeVersion != "" {
		kv, err := chartutil.ParseKubeVersion(opts.KubeVersion)
		if err != nil {
			return nil, fmt.Errorf("--kube-version %q: %w", opts.KubeVersion, err)
		}
		inst.KubeVersion = kv
	}
	inst.APIVersions = opts.APIVersions
	if vals == nil {
		vals = map[string]any{}
	}
	rel, err := inst.RunWithContext(ctx, chrt, vals)
	if err != nil {
		return nil, fmt.Errorf("render chart %s %s: %w", chrt.Name(), chrt.Metadata.Version, err)
	}
	var b strings.Builder
	b.WriteString(rel.Manifest)
	for _, h := range rel.Hooks {
		if !opts.IncludeTests && isTestHook(h) {
			continue
		}
		fmt.Fprintf(&b, "\n---\n# Source: %s\n%s\n", h.Path, h.Manifest)
	}
	merged, err := chartutil.CoalesceValues(chrt, vals)
	if err != nil {
		return nil, fmt.Errorf("chart %s values: %w", chrt.Name(), err)
	}
	out := &Rendered{
		Chart: chrt.Name(), Version: chrt.Metadata.Version, Manifests: b.String(), Values: merged,
		Annotations: map[string]string{}, ImagesLocks: map[string][]byte{},
	}
	// rel.Chart has the disabled subcharts removed by helm: collect from it.
	collectChartFiles(rel.Chart, out)
	collectCharts(rel.Chart, "", out)
	return out, nil
}

func collectCharts(c *chart.Chart, valuesPath string, out *Rendered) {
	if c == nil {
		return
	}
	n := chartNode{name: c.Name(), appVersion: c.Metadata.AppVersion, valuesPath: valuesPath, templatePrefix: c.ChartFullPath() + "/templates/"}
	for _, t := range c.Templates {
		n.templates = append(n.templates, t.Data)
	}
	out.Charts = append(out.Charts, n)
	for _, d := range c.Dependencies() {
		collectCharts(d, join(valuesPath, d.Name()), out)
	}
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func isTestHook(h *release.Hook) bool {
	for _, e := range h.Events {
		if e == release.HookTest {
			return true
		}
	}
	return false
}

func collectChartFiles(c *chart.Chart, out *Rendered) {
	if c == nil {
		return
	}
	for _, k := range []string{"helm.sh/images", "artifacthub.io/images"} {
		if v, ok := c.Metadata.Annotations[k]; ok {
			out.Annotations[c.Name()+" "+k] = v
		}
	}
	for _, f := range c.Files {
		if f.Name == "images.lock" {
			out.ImagesLocks[c.Name()] = f.Data
		}
	}
	for _, d := range c.Dependencies() {
		collectChartFiles(d, out)
	}
}

// findImages extracts the images of a rendered release. src.ImageRegistry,
// when empty, becomes the registry override of the release's values.
func findImages(r *Rendered, src images.Source) (*images.List, error) {
	src.Chart, src.ChartVersion = r.Chart, r.Version
	list := images.NewList()
	vals, err := yaml.Marshal(r.Values)
	if err != nil {
		return list, fmt.Errorf("values: %w", err)
	}
	override, _ := images.ValuesRegistry(vals)
	if src.ImageRegistry == "" {
		src.ImageRegistry = override
	}
	found, err := images.FromManifests([]byte(r.Manifests), images.ManifestOptions{Source: src, Registry: override})
	list.Add(found...)
	if err != nil {
		return list, fmt.Errorf("rendered manifests: %w", err)
	}
	vsrc := src
	vsrc.File = "values"
	vfound, err := images.FromValues(vals, images.ValuesOptions{Source: vsrc, DefaultTag: defaultTag(r.Charts, found)})
	if err != nil {
		return list, err
	}
	list.Add(vfound...)
	for k, v := range r.Annotations {
		chartName, key, _ := strings.Cut(k, " ")
		s := src
		s.File = chartName + "/Chart.yaml"
		found, err := images.FromChartAnnotation(key, v, s)
		if err != nil {
			return list, fmt.Errorf("chart %s: %w", chartName, err)
		}
		list.Add(found...)
	}
	for chartName, data := range r.ImagesLocks {
		s := src
		s.File = chartName + "/images.lock"
		found, err := images.FromImagesLock(data, s)
		if err != nil {
			return list, fmt.Errorf("chart %s: %w", chartName, err)
		}
		list.Add(found...)
	}
	return list, nil
}

// defaultTag completes a split map of the values whose tag is empty as the
// map's chart completes it: with its appVersion, "v"-prefixed when that is
// what the chart renders. The evidence is the images the chart rendered
// (a tag equal to appVersion or "v" + appVersion), else its templates
// (an action defaulting a tag to .Chart.AppVersion). No evidence, no tag:
// the map is dropped rather than given one.
func defaultTag(charts []chartNode, rendered []images.Found) func(string) (string, string) {
	return func(path string) (string, string) {
		var n *chartNode
		for i := range charts {
			c := &charts[i]
			if c.valuesPath == "" || path == c.valuesPath || strings.HasPrefix(path, c.valuesPath+".") {
				if n == nil || len(c.valuesPath) > len(n.valuesPath) {
					n = c
				}
			}
		}
		if n == nil || n.appVersion == "" {
			return "", ""
		}
		a := n.appVersion
		plain, v := false, false
		for _, f := range rendered {
			if f.Source.Certainty == images.Maybe || !strings.HasPrefix(f.Source.File, n.templatePrefix) {
				continue
			}
			ref, err := images.Normalize(f.Raw)
			if err != nil {
				continue
			}
			switch tagOf(ref) {
			case a:
				plain = true
			case "v" + a:
				v = true
			}
		}
		if !plain && !v {
			plain, v = templateIdiom(n.templates)
		}
		switch {
		case v && !plain:
			return "v" + a, fmt.Sprintf("%q + appVersion %s of chart %s, as its templates render it", "v", a, n.name)
		case plain && !v:
			return a, fmt.Sprintf("appVersion %s of chart %s, as its templates render it", a, n.name)
		}
		return "", ""
	}
}

func tagOf(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	last := ref[strings.LastIndex(ref, "/")+1:]
	_, tag, _ := strings.Cut(last, ":")
	return tag
}

var (
	actionRe = regexp.MustCompile(`(?s)(.?)\{\{-?(.*?)-?\}\}`)
	vQuoted  = regexp.MustCompile(`"v"|"v%s"|printf\s+"v`)
)

// templateIdiom finds a template action that defaults an image tag to the
// chart's appVersion, and whether it prefixes a "v".
func templateIdiom(templates [][]byte) (plain, v bool) {
	for _, t := range templates {
		for _, m := range actionRe.FindAllSubmatch(t, -1) {
			action := m[2]
			if !bytes.Contains(action, []byte("AppVersion")) || !bytes.Contains(bytes.ToLower(action), []byte("tag")) {
				continue
			}
			if string(m[1]) == "v" || vQuoted.Match(action) {
				v = true
			} else {
				plain = true
			}
		}
	}
	return plain, v
}

// loadLocalChart loads a chart directory or .tgz. A chart whose Chart.yaml
// names dependencies missing from charts/ is copied to a scratch directory and
// its dependencies fetched there, so the user's tree is never written to.
func (f *fetcher) loadLocalChart(ctx context.Context, path string) (*chart.Chart, error) {
	chrt, err := loader.Load(path)
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %w", path, err)
	}
	if action.CheckDependencies(chrt, chrt.Metadata.Dependencies) == nil {
		return chrt, nil
	}
	st, err := os.Stat(path)
	if err != nil || !st.IsDir() {
		return chrt, nil // a packaged chart is what it is; the render reports what is missing
	}
	dir, err := f.buildDependencies(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("chart %s: fetch dependencies: %w", path, err)
	}
	chrt, err = loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("load chart %s with its dependencies: %w", path, err)
	}
	return chrt, nil
}

// copyDir copies a chart directory (small text files) to dst.
func copyDir(src, dst string) error {
	return filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if info.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}
