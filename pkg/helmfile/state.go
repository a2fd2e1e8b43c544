package helmfile

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// Release is one release of a loaded helmfile, values resolved.
type Release struct {
	Helmfile  string // the file that declares it
	Name      string
	Namespace string
	Chart     string
	Version   string
	Labels    map[string]string
	Values    map[string]any
	chart     chartRef
	// err is a failure of this release alone (values, chart), reported when
	// it renders, so that --keep-going renders the others.
	err error
}

// LoadOptions select what of a helmfile is loaded.
type LoadOptions struct {
	Environment      string   // -e; "default" when empty
	Selectors        []string // --selector: key=value,key!=value; several are ORed
	StateValuesSet   []string // --state-values-set k=v
	StateValuesFiles []string // --state-values-file
	Namespace        string   // for releases that name none
}

type stateDoc struct {
	Bases        []string           `json:"bases"`
	Environments map[string]envSpec `json:"environments"`
	Values       []any              `json:"values"`
	Repositories []Repository       `json:"repositories"`
	Helmfiles    []subHelmfile      `json:"helmfiles"`
	Releases     []releaseSpec      `json:"releases"`
	HelmDefaults map[string]any     `json:"helmDefaults"`
	Templates    map[string]any     `json:"templates"`
}

type envSpec struct {
	Values  []any `json:"values"`
	Secrets []any `json:"secrets"`
}

type subHelmfile struct {
	Path               string   `json:"path"`
	Selectors          []string `json:"selectors"`
	SelectorsInherited bool     `json:"selectorsInherited"`
	Values             []any    `json:"values"`
	hasSelectors       bool
}

// UnmarshalJSON takes both `- path.yaml` and `- path: path.yaml`.
func (s *subHelmfile) UnmarshalJSON(b []byte) error {
	var p string
	if json.Unmarshal(b, &p) == nil {
		s.Path = p
		return nil
	}
	type plain subHelmfile
	var v plain
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(b, &raw)
	_, v.hasSelectors = raw["selectors"]
	*s = subHelmfile(v)
	return nil
}

type releaseSpec struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace"`
	Chart             string            `json:"chart"`
	Version           string            `json:"version"`
	Labels            map[string]string `json:"labels"`
	Installed         *bool             `json:"installed"`
	InstalledTemplate *string           `json:"installedTemplate"`
	Condition         string            `json:"condition"`
	Values            []any             `json:"values"`
	ValuesTemplate    []any             `json:"valuesTemplate"`
	Set               []setSpec         `json:"set"`
	SetTemplate       []setSpec         `json:"setTemplate"`
	Secrets           []any             `json:"secrets"`
}

type setSpec struct {
	Name   string   `json:"name"`
	Value  any      `json:"value"`
	Values []string `json:"values"`
	File   string   `json:"file"`
}

// state is one loaded helmfile with its bases merged in.
type state struct {
	file         string
	envName      string
	environments map[string][]valuesEntry
	defaults     []valuesEntry
	repos        map[string]Repository
	helmfiles    []subEntry
	releases     []releaseEntry
	overrides    map[string]any
	envValues    map[string]any // computed
}

// valuesEntry is a values file (relative paths made absolute) or an inline map.
type valuesEntry struct {
	file   string
	inline map[string]any
}

type subEntry struct {
	dir  string
	spec subHelmfile
}

type releaseEntry struct {
	file string
	spec releaseSpec
}

// loader loads helmfiles; one per run.
type stateLoader struct {
	opts  LoadOptions
	depth int
}

// LoadReleases loads a helmfile (file, directory, or helmfile.d) and returns
// its releases, nested helmfiles included, filtered by selectors, installed
// ones only, values resolved.
func LoadReleases(ctx context.Context, path string, opts LoadOptions) ([]Release, error) {
	if opts.Environment == "" {
		opts.Environment = "default"
	}
	if opts.Namespace == "" {
		opts.Namespace = "default"
	}
	overrides := map[string]any{}
	for _, f := range opts.StateValuesFiles {
		m, err := readValuesFile(f, nil)
		if err != nil {
			return nil, fmt.Errorf("--state-values-file %s: %w", f, err)
		}
		overrides = mergeMaps(overrides, m)
	}
	for _, s := range opts.StateValuesSet {
		if err := strvals.ParseInto(s, overrides); err != nil {
			return nil, fmt.Errorf("--state-values-set %q: %w", s, err)
		}
	}
	l := &stateLoader{opts: opts}
	return l.loadPath(ctx, path, overrides, opts.Selectors)
}

// helmfileFiles resolves FILE|DIR into the helmfiles to load, in order.
func helmfileFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("helmfile %s: %w", path, err)
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	for _, n := range []string{"helmfile.yaml", "helmfile.yaml.gotmpl"} {
		if _, err := os.Stat(filepath.Join(path, n)); err == nil {
			return []string{filepath.Join(path, n)}, nil
		}
	}
	d := path
	if _, err := os.Stat(filepath.Join(path, "helmfile.d")); err == nil {
		d = filepath.Join(path, "helmfile.d")
	} else if filepath.Base(path) != "helmfile.d" {
		cands, _ := filepath.Glob(filepath.Join(path, "*.gotmpl"))
		if _, err := os.Stat(filepath.Join(path, "base.yaml.gotmpl")); err == nil {
			cands = []string{filepath.Join(path, "base.yaml.gotmpl")} // BlueKing's entry point
		}
		hint := ""
		if len(cands) > 0 {
			hint = fmt.Sprintf("; name the file instead, e.g. --from-helmfile %s", cands[0])
		}
		return nil, fmt.Errorf("helmfile %s: no helmfile.yaml, helmfile.yaml.gotmpl or helmfile.d/ in this directory%s", path, hint)
	}
	var files []string
	for _, pat := range []string{"*.yaml", "*.yml", "*.yaml.gotmpl", "*.yml.gotmpl"} {
		m, _ := filepath.Glob(filepath.Join(d, pat))
		files = append(files, m...)
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("helmfile %s: no helmfiles in %s", path, d)
	}
	return files, nil
}

func (l *stateLoader) loadPath(ctx context.Context, path string, overrides map[string]any, selectors []string) ([]Release, error) {
	files, err := helmfileFiles(path)
	if err != nil {
		return nil, err
	}
	var out []Release
	for _, f := range files {
		rels, err := l.loadFile(ctx, f, overrides, selectors)
		if err != nil {
			return nil, err
		}
		out = append(out, rels...)
	}
	return out, nil
}

func (l *stateLoader) loadFile(ctx context.Context, file string, overrides map[string]any, selectors []string) ([]Release, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if l.depth > 20 {
		return nil, fmt.Errorf("helmfile %s: nested helmfiles deeper than 20: a cycle?", file)
	}
	st, err := l.loadState(file, overrides)
	if err != nil {
		return nil, err
	}
	sel, err := parseSelectors(selectors)
	if err != nil {
		return nil, err
	}
	var out []Release
	// Nested helmfiles first, as helmfile runs them.
	for _, sub := range st.helmfiles {
		subSel := selectors
		if sub.spec.hasSelectors && !sub.spec.SelectorsInherited {
			subSel = sub.spec.Selectors
		}
		subOver := overrides
		if len(sub.spec.Values) > 0 {
			vals, err := st.resolveValues(valuesList(sub.dir, sub.spec.Values), st.templateData(nil))
			if err != nil {
				return nil, fmt.Errorf("helmfile %s: helmfiles entry %s: %w", file, sub.spec.Path, err)
			}
			subOver = mergeMaps(mergeMaps(map[string]any{}, overrides), vals)
		}
		p := sub.spec.Path
		if !filepath.IsAbs(p) {
			p = filepath.Join(sub.dir, p)
		}
		matches, _ := filepath.Glob(p)
		if len(matches) == 0 {
			return nil, fmt.Errorf("helmfile %s: nested helmfile %s: no such file", file, sub.spec.Path)
		}
		sort.Strings(matches)
		l.depth++
		for _, m := range matches {
			rels, err := l.loadPath(ctx, m, subOver, subSel)
			if err != nil {
				l.depth--
				return nil, err
			}
			out = append(out, rels...)
		}
		l.depth--
	}
	for _, re := range st.releases {
		r, keep, err := st.release(re, l.opts.Namespace, sel)
		if keep {
			r.err = err
			out = append(out, r)
		}
	}
	return out, nil
}

// loadState reads a helmfile, its bases and its parts (documents split by ---).
func (l *stateLoader) loadState(file string, overrides map[string]any) (*state, error) {
	st := &state{
		file: file, envName: l.opts.Environment, environments: map[string][]valuesEntry{},
		repos: map[string]Repository{}, overrides: overrides,
	}
	if err := l.addFile(st, file, 0); err != nil {
		return nil, err
	}
	if _, ok := st.environments[st.envName]; !ok && st.envName != "default" {
		return nil, fmt.Errorf("helmfile %s: environment %q is not defined in environments: (defined: %s)", file, st.envName, strings.Join(st.envNames(), ", "))
	}
	if _, err := st.values(); err != nil {
		return nil, err
	}
	return st, nil
}

var partSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// addFile merges a file into st: bases first, then each part in order, each
// rendered (for .gotmpl) with the environment values known so far.
func (l *stateLoader) addFile(st *state, file string, depth int) error {
	if depth > 10 {
		return fmt.Errorf("helmfile %s: bases nested deeper than 10: a cycle?", file)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("helmfile %s: %w", file, err)
	}
	dir := filepath.Dir(file)
	text := string(raw)
	locs := partSep.FindAllStringIndex(text, -1)
	starts := []int{0}
	for _, loc := range locs {
		starts = append(starts, loc[1])
	}
	for i, start := range starts {
		end := len(text)
		if i+1 < len(starts) {
			end = locs[i][0]
		}
		part := text[start:end]
		line := strings.Count(text[:start], "\n") + 1
		if err := l.addPart(st, file, dir, part, line, depth); err != nil {
			return err
		}
	}
	return nil
}

func isTemplate(file string) bool {
	return strings.HasSuffix(file, ".gotmpl") || strings.HasSuffix(file, ".tpl")
}

func (l *stateLoader) addPart(st *state, file, dir, part string, line, depth int) error {
	// Padding keeps YAML error lines equal to the file's lines.
	data := []byte(strings.Repeat("\n", line-1) + part)
	if isTemplate(file) {
		// First pass, forgiving: find bases and environments, which the
		// values of the second pass come from.
		if pre, err := renderTemplate(file, part, line, st.templateData(nil), false); err == nil {
			var head stateDoc
			if yaml.Unmarshal(pre, &head) == nil {
				if err := l.addHead(st, dir, head, depth); err != nil {
					return err
				}
			}
		}
		out, err := renderTemplate(file, part, line, st.templateData(nil), true)
		if err != nil {
			return fmt.Errorf("helmfile %s: %w", file, err)
		}
		data = out
	}
	var doc stateDoc
	if err := yaml.Unmarshal(data, &doc); err != nil {
		what := "helmfile"
		if isTemplate(file) {
			what = "rendered helmfile"
		}
		return fmt.Errorf("%s %s: %w", what, file, err)
	}
	if !isTemplate(file) {
		if err := l.addHead(st, dir, doc, depth); err != nil {
			return err
		}
	} else {
		// Environments may be declared after the first pass used them.
		for name, e := range doc.Environments {
			if _, ok := st.environments[name]; !ok {
				st.environments[name] = valuesList(dir, e.Values)
				st.envValues = nil
			}
		}
	}
	for _, r := range doc.Repositories {
		st.repos[r.Name] = r
	}
	for _, h := range doc.Helmfiles {
		st.helmfiles = append(st.helmfiles, subEntry{dir: dir, spec: h})
	}
	for _, r := range doc.Releases {
		// Paths are made absolute after the release's own templating, which
		// may compute them (values/{{ .Release.Name }}.yaml).
		st.releases = append(st.releases, releaseEntry{file: file, spec: r})
	}
	return nil
}

// addHead merges bases and environments (and top-level values) of one part.
func (l *stateLoader) addHead(st *state, dir string, doc stateDoc, depth int) error {
	for _, b := range doc.Bases {
		p := b
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, b)
		}
		if err := l.addFile(st, p, depth+1); err != nil {
			return err
		}
	}
	doc.Bases = nil
	for name, e := range doc.Environments {
		// A later declaration of an environment adds to its values.
		st.environments[name] = append(st.environments[name], valuesList(dir, e.Values)...)
		st.envValues = nil
	}
	if len(doc.Values) > 0 {
		st.defaults = append(st.defaults, valuesList(dir, doc.Values)...)
		st.envValues = nil
	}
	return nil
}

func (st *state) envNames() []string {
	var n []string
	for k := range st.environments {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// values are the state values: top-level values, then the environment's
// values files in order (each .gotmpl seeing what came before), then
// --state-values-file/--state-values-set and a parent's `helmfiles: values`.
func (st *state) values() (map[string]any, error) {
	if st.envValues != nil {
		return st.envValues, nil
	}
	acc := map[string]any{}
	st.envValues = acc // seen by templates while loading (partial)
	entries := append(append([]valuesEntry(nil), st.defaults...), st.environments[st.envName]...)
	for _, e := range entries {
		m := e.inline
		if e.file != "" {
			var err error
			m, err = readValuesFile(e.file, st.templateData(nil))
			if err != nil {
				st.envValues = nil
				return nil, fmt.Errorf("helmfile %s: environment %q: %w", st.file, st.envName, err)
			}
		}
		acc = mergeMaps(acc, m)
		st.envValues = acc
	}
	acc = mergeMaps(acc, deepCopy(st.overrides))
	st.envValues = acc
	return acc, nil
}

type envData struct {
	Name   string
	Values map[string]any
}

type releaseData struct {
	Name      string
	Namespace string
	Chart     string
	Labels    map[string]string
}

// templateData is what templates see: .Values, .StateValues, .Environment,
// .Namespace and, in release values, .Release.
func (st *state) templateData(rel *releaseData) map[string]any {
	vals := st.envValues
	if vals == nil {
		vals, _ = st.values()
		if vals == nil {
			vals = map[string]any{}
		}
	}
	d := map[string]any{
		"Values":      vals,
		"StateValues": vals,
		"Environment": envData{Name: st.envName, Values: vals},
		"Namespace":   "",
	}
	if rel != nil {
		d["Release"] = *rel
		d["Namespace"] = rel.Namespace
	}
	return d
}

func valuesList(dir string, vs []any) []valuesEntry {
	var out []valuesEntry
	for _, v := range absValues(dir, vs) {
		switch x := v.(type) {
		case string:
			out = append(out, valuesEntry{file: x})
		case map[string]any:
			out = append(out, valuesEntry{inline: x})
		}
	}
	return out
}

func absValues(dir string, vs []any) []any {
	out := make([]any, 0, len(vs))
	for _, v := range vs {
		if s, ok := v.(string); ok && !filepath.IsAbs(s) {
			v = filepath.Join(dir, s)
		}
		out = append(out, v)
	}
	return out
}

// readValuesFile reads YAML values; .gotmpl files are rendered first.
func readValuesFile(file string, data any) (map[string]any, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("values file %s: %w", file, err)
	}
	if isTemplate(file) {
		if data == nil {
			data = map[string]any{}
		}
		if b, err = renderTemplate(file, string(b), 1, data, true); err != nil {
			return nil, fmt.Errorf("values file %s: %w", file, err)
		}
	}
	m := map[string]any{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("values file %s: %w", file, err)
	}
	return m, nil
}

// resolveValues merges values entries (files rendered with data, inline maps).
func (st *state) resolveValues(entries []valuesEntry, data any) (map[string]any, error) {
	acc := map[string]any{}
	for _, e := range entries {
		m := e.inline
		if e.file != "" {
			var err error
			if m, err = readValuesFile(e.file, data); err != nil {
				return nil, err
			}
		}
		acc = mergeMaps(acc, deepCopy(m))
	}
	return acc, nil
}

// release resolves one release: its own templating, selection,
// installed/condition, values, set.
func (st *state) release(re releaseEntry, defaultNS string, sel selectorSet) (Release, bool, error) {
	dir := filepath.Dir(re.file)
	s, err := st.executeReleaseTemplates(re.file, re.spec, defaultNS)
	if err != nil {
		// Unselectable without its labels: report it under its raw name.
		return Release{Helmfile: re.file, Name: re.spec.Name, Namespace: re.spec.Namespace, Chart: re.spec.Chart}, true, err
	}
	ns := s.Namespace
	if ns == "" {
		ns = defaultNS
	}
	labels := map[string]string{}
	for k, v := range s.Labels {
		labels[k] = v
	}
	implicit := map[string]string{"name": s.Name, "namespace": ns, "chart": s.Chart}
	for k, v := range implicit {
		if _, ok := labels[k]; !ok {
			labels[k] = v
		}
	}
	if !sel.match(labels) {
		return Release{}, false, nil
	}
	if s.Installed != nil && !*s.Installed {
		return Release{}, false, nil
	}
	base := Release{Helmfile: re.file, Name: s.Name, Namespace: ns, Chart: s.Chart, Version: s.Version, Labels: s.Labels}
	vals, err := st.values()
	if err != nil {
		return base, true, err
	}
	if s.Condition != "" {
		v, _ := getPath(s.Condition, false, nil, vals)
		if b, ok := v.(bool); !ok || !b {
			return Release{}, false, nil
		}
	}
	if s.Name == "" || s.Chart == "" {
		return base, true, fmt.Errorf("a release needs name: and chart:")
	}
	if len(s.Secrets) > 0 {
		return base, true, fmt.Errorf("secrets: need sops, which kubectl bkcache does not run: render with decrypted values files instead (values:)")
	}
	rd := &releaseData{Name: s.Name, Namespace: ns, Chart: s.Chart, Labels: s.Labels}
	relVals, err := st.resolveValues(valuesList(dir, s.Values), st.templateData(rd))
	if err != nil {
		return base, true, err
	}
	for _, set := range s.Set {
		if set.File != "" && !filepath.IsAbs(set.File) {
			set.File = filepath.Join(dir, set.File)
		}
		if err := applySet(relVals, set); err != nil {
			return base, true, err
		}
	}
	base.Values = relVals
	if base.chart, err = resolveChart(dir, s.Chart, s.Version, st.repos); err != nil {
		return base, true, err
	}
	return base, true, nil
}

// executeReleaseTemplates renders a release's own template expressions, as
// helmfile does for release templates (`templates:` merged with YAML
// anchors, or any release field holding {{ }} after the file's rendering):
// name, namespace, chart, version and labels first, repeated until they stop
// changing, since one may name another (.Release.Name in the namespace);
// then installedTemplate, values paths, valuesTemplate maps and setTemplate
// entries, which helmfile puts before values: and set:. Inline values maps
// and set: entries are left as written, as helmfile leaves them.
func (st *state) executeReleaseTemplates(file string, s releaseSpec, defaultNS string) (releaseSpec, error) {
	if !hasTemplate(s) {
		return s, nil
	}
	render := func(field, text string, rd *releaseData) (string, error) {
		if !strings.Contains(text, "{{") {
			return text, nil
		}
		out, err := renderTemplate(file, text, 1, st.templateData(rd), true)
		if err != nil {
			return "", fmt.Errorf("release %q: %s %q: %w", s.Name, field, text, err)
		}
		return string(out), nil
	}
	data := func() *releaseData {
		ns := s.Namespace
		if ns == "" {
			ns = defaultNS
		}
		return &releaseData{Name: s.Name, Namespace: ns, Chart: s.Chart, Labels: s.Labels}
	}
	labels := make(map[string]string, len(s.Labels))
	for k, v := range s.Labels {
		labels[k] = v
	}
	s.Labels = labels
	for range 5 {
		prev, rd := s, data()
		var err error
		if s.Name, err = render("name", s.Name, rd); err != nil {
			return s, err
		}
		if s.Namespace, err = render("namespace", s.Namespace, rd); err != nil {
			return s, err
		}
		if s.Chart, err = render("chart", s.Chart, rd); err != nil {
			return s, err
		}
		if s.Version, err = render("version", s.Version, rd); err != nil {
			return s, err
		}
		changed := false
		for k, v := range s.Labels {
			if s.Labels[k], err = render("labels."+k, v, rd); err != nil {
				return s, err
			}
			changed = changed || s.Labels[k] != v
		}
		if !changed && s.Name == prev.Name && s.Namespace == prev.Namespace && s.Chart == prev.Chart && s.Version == prev.Version {
			break
		}
	}
	rd := data()
	if s.InstalledTemplate != nil {
		v, err := render("installedTemplate", *s.InstalledTemplate, rd)
		if err != nil {
			return s, err
		}
		b := strings.TrimSpace(v) == "true"
		s.Installed = &b
	}
	var vals []any
	for i, v := range s.ValuesTemplate {
		m, ok := v.(map[string]any)
		if !ok {
			vals = append(vals, v)
			continue
		}
		y, err := yaml.Marshal(m)
		if err != nil {
			return s, fmt.Errorf("release %q: valuesTemplate[%d]: %w", s.Name, i, err)
		}
		out, err := render(fmt.Sprintf("valuesTemplate[%d]", i), string(y), rd)
		if err != nil {
			return s, err
		}
		rendered := map[string]any{}
		if err := yaml.Unmarshal([]byte(out), &rendered); err != nil {
			return s, fmt.Errorf("release %q: valuesTemplate[%d] rendered to invalid YAML: %w\n%s", s.Name, i, err, out)
		}
		vals = append(vals, rendered)
	}
	for i, v := range s.Values {
		if p, ok := v.(string); ok {
			var err error
			if v, err = render(fmt.Sprintf("values[%d]", i), p, rd); err != nil {
				return s, err
			}
		}
		vals = append(vals, v)
	}
	s.Values = vals
	var sets []setSpec
	for i, set := range s.SetTemplate {
		var err error
		field := fmt.Sprintf("setTemplate[%d]", i)
		if set.Name, err = render(field+".name", set.Name, rd); err != nil {
			return s, err
		}
		if v, ok := set.Value.(string); ok {
			if set.Value, err = render(field+".value", v, rd); err != nil {
				return s, err
			}
		}
		if set.File, err = render(field+".file", set.File, rd); err != nil {
			return s, err
		}
		vs := make([]string, len(set.Values))
		for j, v := range set.Values {
			if vs[j], err = render(fmt.Sprintf("%s.values[%d]", field, j), v, rd); err != nil {
				return s, err
			}
		}
		set.Values = vs
		sets = append(sets, set)
	}
	s.Set = append(sets, s.Set...)
	return s, nil
}

// hasTemplate says whether a release has anything to render: most have not,
// and skip the work.
func hasTemplate(s releaseSpec) bool {
	if len(s.ValuesTemplate) > 0 || len(s.SetTemplate) > 0 || s.InstalledTemplate != nil {
		return true
	}
	for _, f := range []string{s.Name, s.Namespace, s.Chart, s.Version} {
		if strings.Contains(f, "{{") {
			return true
		}
	}
	for _, v := range s.Labels {
		if strings.Contains(v, "{{") {
			return true
		}
	}
	for _, v := range s.Values {
		if p, ok := v.(string); ok && strings.Contains(p, "{{") {
			return true
		}
	}
	return false
}

// applySet applies a `set:` entry as helm's --set, --set-file and list forms do.
func applySet(vals map[string]any, s setSpec) error {
	switch {
	case s.File != "":
		b, err := os.ReadFile(s.File)
		if err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		return strvals.ParseIntoString(s.Name+"="+string(b), vals)
	case len(s.Values) > 0:
		esc := make([]string, len(s.Values))
		for i, v := range s.Values {
			esc[i] = strings.ReplaceAll(v, ",", `\,`)
		}
		return strvals.ParseInto(s.Name+"={"+strings.Join(esc, ",")+"}", vals)
	default:
		v := fmt.Sprint(s.Value)
		if s.Value == nil {
			v = "null"
		}
		if err := strvals.ParseInto(s.Name+"="+strings.ReplaceAll(v, ",", `\,`), vals); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		return nil
	}
}

// mergeMaps merges b into a, deeply; b wins. As helm merges -f files.
func mergeMaps(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bv, ok := v.(map[string]any); ok {
			if av, ok := out[k].(map[string]any); ok {
				out[k] = mergeMaps(av, bv)
				continue
			}
		}
		out[k] = v
	}
	return out
}

func deepCopy(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return m
	}
	out := map[string]any{}
	if json.Unmarshal(b, &out) != nil {
		return m
	}
	return out
}

// selectorSet: ORed selectors of ANDed key=value / key!=value terms.
type selectorSet [][]selectorTerm

type selectorTerm struct {
	key, value string
	negate     bool
}

func parseSelectors(ss []string) (selectorSet, error) {
	var out selectorSet
	for _, s := range ss {
		var terms []selectorTerm
		for _, t := range strings.Split(s, ",") {
			t = strings.TrimSpace(t)
			if k, v, ok := strings.Cut(t, "!="); ok {
				terms = append(terms, selectorTerm{strings.TrimSpace(k), strings.TrimSpace(v), true})
			} else if k, v, ok := strings.Cut(t, "="); ok {
				terms = append(terms, selectorTerm{strings.TrimSpace(k), strings.TrimSpace(v), false})
			} else {
				return nil, fmt.Errorf("selector %q: want key=value or key!=value, comma-separated", s)
			}
		}
		out = append(out, terms)
	}
	return out, nil
}

func (s selectorSet) match(labels map[string]string) bool {
	if len(s) == 0 {
		return true
	}
	for _, terms := range s {
		ok := true
		for _, t := range terms {
			if (labels[t.key] == t.value) == t.negate {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
