package helmfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"runtime"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"sigs.k8s.io/yaml"

	"github.com/bkcache/bkcache/pkg/imageref"
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
	// IsUpgrade, NoHooks, SkipCRDs and SkipSchemaValidation are helm
	// template's --is-upgrade, --no-hooks, --skip-crds and
	// --skip-schema-validation (a helmfile's templateArgs give them).
	IsUpgrade, NoHooks, SkipCRDs, SkipSchemaValidation bool
	// Workers renders a chart's templates on this many goroutines at once
	// (parallel.go); 0 or 1 renders them one after another, as helm does.
	Workers int
}

// Rendered is what one release of a chart would install.
type Rendered struct {
	Chart   string
	Version string
	// Files are the rendered templates and CRDs, each a YAML stream headed
	// by helm's "# Source:" line.
	Files []string
	// SkipTestHooks leaves out `helm.sh/hook: test` objects: `helm test`
	// runs them, a deployment does not.
	SkipTestHooks bool
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
// --include-crds` does (no cluster, `lookup` yields nothing), with helm's
// engine directly: helm's install action would also sort and re-parse every
// manifest and build a release, which a list of images does not need
// (a quarter of the time on a 130-template chart).
func renderChart(ctx context.Context, chrt *chart.Chart, releaseName, namespace string, vals map[string]any, opts RenderOptions) (*Rendered, error) {
	if err := checkDependencies(chrt); err != nil {
		return nil, err
	}
	if err := chartutil.ValidateReleaseName(releaseName); err != nil {
		return nil, fmt.Errorf("release name %q: %w", releaseName, err)
	}
	if vals == nil {
		vals = map[string]any{}
	}
	fail := func(err error) (*Rendered, error) {
		return nil, fmt.Errorf("render chart %s %s: %w", chrt.Name(), chrt.Metadata.Version, err)
	}
	if err := chartutil.ProcessDependenciesWithMerge(chrt, vals); err != nil {
		return fail(err)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	if opts.KubeVersion != "" {
		kv, err := chartutil.ParseKubeVersion(opts.KubeVersion)
		if err != nil {
			return nil, fmt.Errorf("--kube-version %q: %w", opts.KubeVersion, err)
		}
		caps.KubeVersion = *kv
	}
	caps.APIVersions = append(caps.APIVersions, opts.APIVersions...)
	if kv := chrt.Metadata.KubeVersion; kv != "" && !chartutil.IsCompatibleRange(kv, caps.KubeVersion.String()) {
		return fail(fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s (give --kube-version)", kv, caps.KubeVersion.String()))
	}
	relOpts := chartutil.ReleaseOptions{Name: releaseName, Namespace: namespace, Revision: 1, IsInstall: !opts.IsUpgrade, IsUpgrade: opts.IsUpgrade}
	top, err := chartutil.ToRenderValuesWithSchemaValidation(chrt, vals, relOpts, caps, opts.SkipSchemaValidation)
	if err != nil {
		return fail(err)
	}
	files, err := renderTemplates(ctx, chrt, top, opts.Workers)
	if err != nil {
		return fail(err)
	}
	var docs []string
	if !opts.SkipCRDs {
		for _, crd := range chrt.CRDObjects() {
			docs = append(docs, "# Source: "+crd.Filename+"\n"+string(crd.File.Data))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		text := helmDocuments(files[name])
		if opts.NoHooks {
			text = dropHooks(text)
		}
		if strings.HasSuffix(name, "NOTES.txt") || strings.TrimSpace(text) == "" {
			continue
		}
		docs = append(docs, "# Source: "+name+"\n"+text)
	}
	merged, _ := top["Values"].(chartutil.Values)
	out := &Rendered{
		Chart: chrt.Name(), Version: chrt.Metadata.Version, Files: docs, Values: merged.AsMap(),
		SkipTestHooks: !opts.IncludeTests, Annotations: map[string]string{}, ImagesLocks: map[string][]byte{},
	}
	// Disabled subcharts were removed from chrt by ProcessDependencies.
	collectChartFiles(chrt, out)
	collectCharts(chrt, "", out)
	return out, nil
}

// checkDependencies is helm's: every dependency of Chart.yaml is in charts/.
func checkDependencies(chrt *chart.Chart) error {
	var missing []string
	for _, r := range chrt.Metadata.Dependencies {
		if !slices.ContainsFunc(chrt.Dependencies(), func(d *chart.Chart) bool { return d.Name() == r.Name }) {
			missing = append(missing, r.Name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("chart %s: found in Chart.yaml, but missing in charts/ directory: %s (vendor them into charts/ or give their repository in Chart.yaml)", chrt.Name(), strings.Join(missing, ", "))
	}
	return nil
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
	override, _ := images.ValuesRegistry(r.Values)
	if src.ImageRegistry == "" {
		src.ImageRegistry = override
	}
	found, err := manifestImages(r.Files, images.ManifestOptions{Source: src, Registry: override, SkipTestHooks: r.SkipTestHooks})
	list.Add(found...)
	if err != nil {
		return list, fmt.Errorf("rendered manifests: %w", err)
	}
	vsrc := src
	vsrc.File = "values"
	vfound, err := images.FromValuesTree(r.Values, images.ValuesOptions{Source: vsrc, DefaultTag: defaultTag(r.Charts, found)})
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

// manifestImages reads the rendered files on every CPU: on a large chart
// parsing the output is a third of the work.
func manifestImages(files []string, opts images.ManifestOptions) ([]images.Found, error) {
	n := min(runtime.GOMAXPROCS(0), len(files))
	if n <= 1 {
		return images.FromManifests([]byte(strings.Join(files, "\n---\n")), opts)
	}
	found := make([][]images.Found, n)
	errs := make([]error, n)
	var g errgroup.Group
	for i := range n {
		g.Go(func() error {
			var b strings.Builder
			for j := i; j < len(files); j += n {
				b.WriteString(files[j])
				b.WriteString("\n---\n")
			}
			found[i], errs[i] = images.FromManifests([]byte(b.String()), opts)
			return nil
		})
	}
	g.Wait() //nolint:errcheck // each part's error is in errs
	return slices.Concat(found...), errors.Join(errs...)
}

// defaultTag completes a split map of the values whose tag is empty as the
// map's chart completes it: with its appVersion, "v"-prefixed when that is
// what the chart renders. The evidence is the images the chart rendered
// (a tag equal to appVersion or "v" + appVersion), else its templates
// (an action defaulting a tag to .Chart.AppVersion). No evidence, no tag:
// the map is dropped rather than given one.
func defaultTag(charts []chartNode, rendered []images.Found) func(string) (string, string) {
	type idiom struct{ tag, why string }
	memo := map[*chartNode]idiom{}
	judge := func(n *chartNode) idiom {
		a := n.appVersion
		if a == "" {
			return idiom{}
		}
		plain, v := false, false
		for _, f := range rendered {
			if f.Source.Certainty == images.Maybe || !strings.HasPrefix(f.Source.File, n.templatePrefix) {
				continue
			}
			if ref, err := imageref.Normalize(f.Raw); err == nil {
				switch tagOf(ref) {
				case a:
					plain = true
				case "v" + a:
					v = true
				}
			}
		}
		if !plain && !v {
			plain, v = templateIdiom(n.templates)
		}
		switch {
		case v && !plain:
			return idiom{"v" + a, fmt.Sprintf("%q + appVersion %s of chart %s, as its templates render it", "v", a, n.name)}
		case plain && !v:
			return idiom{a, fmt.Sprintf("appVersion %s of chart %s, as its templates render it", a, n.name)}
		}
		return idiom{}
	}
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
		if n == nil {
			return "", ""
		}
		id, ok := memo[n]
		if !ok {
			id = judge(n)
			memo[n] = id
		}
		return id.tag, id.why
	}
}

func tagOf(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	last := ref[strings.LastIndex(ref, "/")+1:]
	_, tag, _ := strings.Cut(last, ":")
	return tag
}

var vQuoted = regexp.MustCompile(`"v"|"v%s"|printf\s+"v`)

// templateIdiom finds a template action that defaults an image tag to the
// chart's appVersion, and whether it prefixes a "v" (`:v{{ … }}`,
// `printf "v%s"`).
func templateIdiom(templates [][]byte) (plain, v bool) {
	for _, t := range templates {
		for rest, off := t, 0; ; {
			i := bytes.Index(rest, []byte("{{"))
			if i < 0 {
				break
			}
			j := bytes.Index(rest[i:], []byte("}}"))
			if j < 0 {
				break
			}
			action := rest[i+2 : i+j]
			if bytes.Contains(action, []byte("AppVersion")) && bytes.Contains(bytes.ToLower(action), []byte("tag")) {
				if off+i > 0 && t[off+i-1] == 'v' || vQuoted.Match(action) {
					v = true
				} else {
					plain = true
				}
			}
			rest, off = rest[i+j+2:], off+i+j+2
		}
	}
	return plain, v
}

// dropHooks leaves out the hooks of a rendered file, as --no-hooks does.
func dropHooks(text string) string {
	var keep []string
	for _, d := range partSep.Split(text, -1) {
		var obj struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		if yaml.Unmarshal([]byte(d), &obj) == nil && obj.Metadata.Annotations["helm.sh/hook"] != "" {
			continue
		}
		keep = append(keep, d)
	}
	return strings.Join(keep, "---\n")
}

// helmDocuments rewrites a rendered file's document separators as helm
// reads them (helm template prints each document after its own "---"): a
// "---" that a template's {{- glued to the next line ("---apiVersion: v1")
// still starts a document.
func helmDocuments(text string) string {
	if !strings.Contains(text, "---") {
		return text
	}
	return strings.Join(helmSeparator.Split(text, -1), "\n---\n")
}
