package helmfile

import (
	"bytes"
	"cmp"
	"context"
	"maps"
	"path"
	"regexp"
	"runtime"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
)

// renderTemplates renders a chart's templates as helm's engine.Render does,
// split over up to workers goroutines when workers > 1: most of a render is
// independent per template, and helm renders them one after another.
//
// helm's engine renders every template of a chart whose file name does not
// begin with "_" (partials). Each worker gets a copy of the chart tree in
// which the templates other workers render are partials: renamed to a "_"
// name, their text wrapped in a define of their own name so that
// `include (print $.Template.BasePath "/configmap.yaml") .` still finds it,
// and the defines they hold still parsed. A template that no template names
// (by its file name) is left out of the other workers' copies: parsing it in
// each would cost what the split saves. Every worker so renders its own
// templates with the same values, names and partials as the serial render.
// Any failure of a worker (an include of a name built at run time, say)
// renders again serially, so that errors are helm's own, word for word.
func renderTemplates(ctx context.Context, chrt *chart.Chart, top chartutil.Values, workers int) (map[string]string, error) {
	var names []string
	collectRenderable(chrt, &names)
	workers = min(workers, len(names))
	if workers <= 1 || changesValues(chrt) {
		return engine.Render(chrt, top)
	}
	files, err := renderSplit(ctx, chrt, top, names, workers)
	if err != nil {
		return engine.Render(chrt, top)
	}
	return files, nil
}

// minSplitBytes: below this much template text a chart renders in about a
// millisecond, less than what a split costs.
const minSplitBytes = 16 << 10

// renderWorkers is how many workers a chart's render is worth: GOMAXPROCS
// for a chart with enough template text to render, else one.
func renderWorkers(c *chart.Chart) int {
	var names []string
	collectRenderable(c, &names)
	sizes := templateSizes(c)
	n := 0
	for _, name := range names {
		n += sizes[name]
	}
	if n < minSplitBytes {
		return 1
	}
	return runtime.GOMAXPROCS(0)
}

// renderSplit renders names over workers chart copies; any error is a
// worker's, not necessarily helm's.
func renderSplit(ctx context.Context, chrt *chart.Chart, top chartutil.Values, names []string, workers int) (map[string]string, error) {
	// Spread by size, largest first, to the least loaded worker.
	owner := map[string]int{}
	load := make([]int, workers)
	sizes := templateSizes(chrt)
	sorted := append([]string(nil), names...)
	sortBySizeDesc(sorted, sizes)
	for _, n := range sorted {
		w := 0
		for i := range load {
			if load[i] < load[w] {
				w = i
			}
		}
		owner[n] = w
		load[w] += sizes[n] + 1
	}
	refs := referencedNames(chrt)
	parts := make([]map[string]string, workers)
	g, _ := errgroup.WithContext(ctx)
	for w := range workers {
		g.Go(func() error {
			out, err := engine.Render(chartFor(chrt, owner, refs, w), ownValues(top))
			parts[w] = out
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	files := map[string]string{}
	for _, part := range parts {
		maps.Copy(files, part)
	}
	return files, nil
}

// setBefore finds templates that change .Values (sprig's set, unset, merge
// on it): a later template sees the change in helm's serial render, so such
// a chart is rendered serially. It is matched only on the text just before
// each ".Values" (a regexp over whole templates cost a tenth of a render).
var setBefore = regexp.MustCompile(`\b(set|unset|merge|mergeOverwrite)\s+\(?\s*\$?[A-Za-z_]*$`)

func changesValues(c *chart.Chart) bool {
	for _, t := range c.Templates {
		if setsValues(t.Data) {
			return true
		}
	}
	for _, d := range c.Dependencies() {
		if changesValues(d) {
			return true
		}
	}
	return false
}

func setsValues(data []byte) bool {
	const key = ".Values"
	for i := 0; ; {
		j := bytes.Index(data[i:], []byte(key))
		if j < 0 {
			return false
		}
		at, end := i+j, i+j+len(key)
		if end == len(data) || !isWordByte(data[end]) {
			if setBefore.Match(data[max(0, at-64):at]) {
				return true
			}
		}
		i = end
	}
}

func isWordByte(b byte) bool {
	return b == '_' || '0' <= b && b <= '9' || 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z'
}

// ownValues gives a worker its own copy of the values, so that templates
// changing maps inside them (set on a dict taken from .Values) do not race.
func ownValues(top chartutil.Values) chartutil.Values {
	out := chartutil.Values{}
	maps.Copy(out, top)
	if v, ok := top["Values"].(chartutil.Values); ok {
		out["Values"] = chartutil.Values(deepCopyMap(v))
	}
	return out
}

func deepCopyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = deepCopyAny(v)
	}
	return out
}

func deepCopyAny(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return deepCopyMap(t)
	case chartutil.Values:
		return chartutil.Values(deepCopyMap(t))
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = deepCopyAny(e)
		}
		return out
	default:
		return v
	}
}

// collectRenderable lists the full names (as engine.Render keys its
// output) of the templates helm renders: all but partials.
func collectRenderable(c *chart.Chart, out *[]string) {
	for _, t := range c.Templates {
		if !strings.HasPrefix(path.Base(t.Name), "_") {
			*out = append(*out, path.Join(c.ChartFullPath(), t.Name))
		}
	}
	for _, d := range c.Dependencies() {
		collectRenderable(d, out)
	}
}

func templateSizes(c *chart.Chart) map[string]int {
	sizes := map[string]int{}
	var walk func(*chart.Chart)
	walk = func(c *chart.Chart) {
		for _, t := range c.Templates {
			sizes[path.Join(c.ChartFullPath(), t.Name)] = len(t.Data)
		}
		for _, d := range c.Dependencies() {
			walk(d)
		}
	}
	walk(c)
	return sizes
}

func sortBySizeDesc(names []string, sizes map[string]int) {
	// Stable: equal sizes stay in chart order, so the split is the same every run.
	slices.SortStableFunc(names, func(a, b string) int { return cmp.Compare(sizes[b], sizes[a]) })
}

// chartFor copies the chart tree for worker w: templates other workers
// render become partials of the same content (see renderTemplates).
func chartFor(c *chart.Chart, owner map[string]int, refs map[string]bool, w int) *chart.Chart {
	cp := &chart.Chart{Raw: c.Raw, Metadata: c.Metadata, Lock: c.Lock, Values: c.Values, Schema: c.Schema, Files: c.Files}
	full := c.ChartFullPath()
	cp.Templates = make([]*chart.File, 0, len(c.Templates))
	for _, t := range c.Templates {
		name := path.Join(full, t.Name)
		o, renderable := owner[name]
		if !renderable || o == w {
			cp.Templates = append(cp.Templates, t)
			continue
		}
		data := t.Data
		hasDefines := strings.Contains(string(data), "define")
		if !hasDefines && !refs[path.Base(t.Name)] {
			// Named by no template: parsing it again in every worker would
			// cost what the split saves. Were it included by a name built
			// at run time, the include fails and the render goes serial.
			continue
		}
		if !hasDefines {
			// A define cannot hold another: a template with defines is only
			// renamed (its defines stay; including it by name fails and the
			// render goes serial).
			data = []byte(`{{define "` + name + `"}}` + string(data) + `{{end}}`)
		}
		cp.Templates = append(cp.Templates, &chart.File{
			Name: path.Join(path.Dir(t.Name), "_bkcache-rendered-elsewhere-"+path.Base(t.Name)),
			Data: data,
		})
	}
	var deps []*chart.Chart
	for _, d := range c.Dependencies() {
		deps = append(deps, chartFor(d, owner, refs, w))
	}
	cp.SetDependencies(deps...)
	return cp
}

// referencedNames lists the file names any template of the tree mentions
// (`include (print $.Template.BasePath "/configmap.yaml") .` for checksums):
// every word ending in a template file's extension.
func referencedNames(c *chart.Chart) map[string]bool {
	refs := map[string]bool{}
	var walk func(*chart.Chart)
	walk = func(c *chart.Chart) {
		for _, t := range c.Templates {
			fileNames(t.Data, refs)
		}
		for _, d := range c.Dependencies() {
			walk(d)
		}
	}
	walk(c)
	return refs
}

// fileNames adds the words of data that end in .yaml, .yml, .tpl, .txt,
// .json or .toml to names. A word is made of letters, digits, '_', '-', '.'.
func fileNames(data []byte, names map[string]bool) {
	isName := func(b byte) bool { return isWordByte(b) || b == '-' || b == '.' }
	for i := 0; i < len(data); {
		j := bytes.IndexByte(data[i:], '.')
		if j < 0 {
			return
		}
		dot := i + j
		end := dot + 1
		for end < len(data) && isWordByte(data[end]) {
			end++
		}
		switch string(data[dot+1 : end]) {
		case "yaml", "yml", "tpl", "txt", "json", "toml":
			start := dot
			for start > 0 && isName(data[start-1]) {
				start--
			}
			if start < dot {
				names[string(data[start:end])] = true
			}
		}
		i = end
	}
}
