package helmfile

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// This file holds the helmfile document model and the loader: files, parts,
// bases, nested helmfiles. Values are in values.go, release templating in
// release.go, selectors in selector.go.

// Release is one release of a loaded helmfile, values resolved.
type Release struct {
	Helmfile  string // the file that declares it
	Name      string
	Namespace string
	Chart     string
	Version   string
	Labels    map[string]string
	Values    map[string]any
	// StateValues are the helmfile's state values the release was loaded
	// with (its `imageRegistry` is the registry the deployment means to use).
	StateValues map[string]any
	chart       chartRef
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
	// Notify receives each missing optional file once, at the level its
	// missingFileHandler names (Warn, Info, Debug). Nil: not reported.
	Notify func(Notice)
}

// Notice is an optional file that is missing and was skipped, as helmfile's
// missingFileHandler Warn, Info and Debug skip it.
type Notice struct {
	Level       string // Warn, Info or Debug
	What        string // "values file", "nested helmfile"
	File        string
	Helmfile    string
	Environment string // for environment values
	Release     string // for release values
}

func (n Notice) String() string {
	of := ""
	if n.Release != "" {
		of = " of release " + n.Release
	}
	return fmt.Sprintf("optional %s %s%s not found (missingFileHandler: %s)", n.What, n.File, of, n.Level)
}

// missingFileHandler values, as helmfile spells them.
const (
	handlerError = "Error"
	handlerWarn  = "Warn"
	handlerInfo  = "Info"
	handlerDebug = "Debug"
)

func checkHandler(h *string, where string) error {
	if h == nil {
		return nil
	}
	switch *h {
	case handlerError, handlerWarn, handlerInfo, handlerDebug:
		return nil
	}
	return fmt.Errorf("%s: missingFileHandler %q: use Error, Warn, Info or Debug", where, *h)
}

// stateDoc is one part of a helmfile as written. Keys of helmfile 0.142
// (BlueKing's pinned version) and of today's helmfile are both read.
type stateDoc struct {
	Bases        []string           `json:"bases"`
	Environments map[string]envSpec `json:"environments"`
	Values       []any              `json:"values"`
	Repositories []Repository       `json:"repositories"`
	Helmfiles    []subHelmfile      `json:"helmfiles"`
	Releases     []releaseSpec      `json:"releases"`
	// Charts is helmfile 0.142's deprecated name for releases.
	Charts       []releaseSpec  `json:"charts"`
	HelmDefaults map[string]any `json:"helmDefaults"`
	Templates    map[string]any `json:"templates"`
	// MissingFileHandler of the helmfile: for nested helmfiles, and the
	// default of its releases and environments.
	MissingFileHandler *string `json:"missingFileHandler"`
}

type envSpec struct {
	Values             []any   `json:"values"`
	Secrets            []any   `json:"secrets"`
	MissingFileHandler *string `json:"missingFileHandler"`
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
	Name               string            `json:"name"`
	Namespace          string            `json:"namespace"`
	Chart              string            `json:"chart"`
	Version            string            `json:"version"`
	Labels             map[string]string `json:"labels"`
	Installed          *bool             `json:"installed"`
	InstalledTemplate  *string           `json:"installedTemplate"`
	Condition          string            `json:"condition"`
	Values             []any             `json:"values"`
	ValuesTemplate     []any             `json:"valuesTemplate"`
	Set                []setSpec         `json:"set"`
	SetTemplate        []setSpec         `json:"setTemplate"`
	Secrets            []any             `json:"secrets"`
	MissingFileHandler *string           `json:"missingFileHandler"`
}

type setSpec struct {
	Name   string   `json:"name"`
	Value  any      `json:"value"`
	Values []string `json:"values"`
	File   string   `json:"file"`
}

// state is one loaded helmfile with its bases merged in.
type state struct {
	file    string
	dir     string // relative paths resolve here, also those written in bases (as helmfile does)
	envName string
	envs    map[string]*envEntry
	// defaults are the top-level `values:`.
	defaults  []valuesEntry
	handler   *string // the helmfile's missingFileHandler
	repos     map[string]Repository
	helmfiles []subHelmfile
	releases  []releaseSpec
	overrides map[string]any
	// values are the state values, computed once the whole file is read.
	values map[string]any
	// skipped lists the optional values files that were missing, for
	// errors about keys they might have held.
	skipped []string
}

type envEntry struct {
	values  []valuesEntry
	handler *string
}

// stateLoader loads the helmfiles of one run. A nested helmfile is loaded once per
// (path, environment, state values), however often the tree names it, and
// its releases are listed once.
type stateLoader struct {
	opts     LoadOptions
	reported map[string]bool   // notices already given, by file
	states   map[string]*state // by stateKey
	releases map[releaseKey]*releaseResult
	visited  map[string]bool // stateKey + selectors already walked
	walking  map[string]bool // stateKeys on the current path, for cycles
	listed   map[releaseKey]bool
	// loads counts helmfiles read and loaded (tests check the memoisation).
	loads int
}

type releaseKey struct {
	state string
	index int
}

func newLoader(opts LoadOptions) *stateLoader {
	if opts.Environment == "" {
		opts.Environment = "default"
	}
	if opts.Namespace == "" {
		opts.Namespace = "default"
	}
	return &stateLoader{
		opts: opts, reported: map[string]bool{}, states: map[string]*state{},
		releases: map[releaseKey]*releaseResult{}, visited: map[string]bool{},
		walking: map[string]bool{}, listed: map[releaseKey]bool{},
	}
}

// LoadReleases loads a helmfile (file, directory, or helmfile.d) and returns
// its releases, nested helmfiles included, filtered by selectors, installed
// ones only, values resolved.
func LoadReleases(ctx context.Context, path string, opts LoadOptions) ([]Release, error) {
	return newLoader(opts).load(ctx, path)
}

func (l *stateLoader) load(ctx context.Context, path string) ([]Release, error) {
	overrides := map[string]any{}
	for _, f := range l.opts.StateValuesFiles {
		m, err := readValuesFile(f, nil)
		if err != nil {
			return nil, fmt.Errorf("--state-values-file %s: %w", f, err)
		}
		overrides = mergeMaps(overrides, m)
	}
	for _, s := range l.opts.StateValuesSet {
		if err := strvals.ParseInto(s, overrides); err != nil {
			return nil, fmt.Errorf("--state-values-set %q: %w", s, err)
		}
	}
	return l.walkPath(ctx, path, overrides, l.opts.Selectors, 0)
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
	slices.Sort(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("helmfile %s: no helmfiles in %s", path, d)
	}
	return files, nil
}

func (l *stateLoader) walkPath(ctx context.Context, path string, overrides map[string]any, selectors []string, depth int) ([]Release, error) {
	files, err := helmfileFiles(path)
	if err != nil {
		return nil, err
	}
	var out []Release
	for _, f := range files {
		rels, err := l.walkFile(ctx, f, overrides, selectors, depth)
		if err != nil {
			return nil, err
		}
		out = append(out, rels...)
	}
	return out, nil
}

// stateKey names a loaded helmfile: its path, the environment and the state
// values it was given.
func (l *stateLoader) stateKey(file string, overrides map[string]any) string {
	abs, err := filepath.Abs(file)
	if err != nil {
		abs = file
	}
	b, _ := json.Marshal(overrides) // map keys come out sorted
	return abs + "\x00" + l.opts.Environment + "\x00" + string(b)
}

// walkFile returns the releases of one helmfile and its nested helmfiles
// that this walk has not listed yet.
func (l *stateLoader) walkFile(ctx context.Context, file string, overrides map[string]any, selectors []string, depth int) ([]Release, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if depth > 20 {
		return nil, fmt.Errorf("helmfile %s: nested helmfiles deeper than 20: a cycle?", file)
	}
	key := l.stateKey(file, overrides)
	if l.walking[key] {
		return nil, fmt.Errorf("helmfile %s includes itself (through its helmfiles:): a cycle", file)
	}
	visit := key + "\x00" + strings.Join(selectors, "\x00")
	if selectors == nil {
		visit += "\x00*"
	}
	if l.visited[visit] {
		return nil, nil // listed already: same file, values and selectors
	}
	l.visited[visit] = true
	l.walking[key] = true
	defer delete(l.walking, key)

	st, err := l.state(file, overrides, key)
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
		if sub.hasSelectors && !sub.SelectorsInherited {
			subSel = sub.Selectors
		}
		subOver := overrides
		if len(sub.Values) > 0 {
			vals, _, err := l.mergeValues(valuesList(st.dir, sub.Values), templateData(st.envName, st.values, nil), fileOwner{helmfile: file, handler: ptr(handlerError)})
			if err != nil {
				return nil, fmt.Errorf("helmfile %s: helmfiles entry %s: %w", file, sub.Path, err)
			}
			subOver = mergeMaps(mergeMaps(map[string]any{}, overrides), vals)
		}
		p := sub.Path
		if !filepath.IsAbs(p) {
			p = filepath.Join(st.dir, p)
		}
		matches, _ := filepath.Glob(p)
		if len(matches) == 0 {
			h := handlerError
			if st.handler != nil {
				h = *st.handler
			}
			if h == handlerError {
				return nil, fmt.Errorf("helmfile %s: nested helmfile %s: no such file (set missingFileHandler: Warn in %s to skip it)", file, sub.Path, file)
			}
			l.notice(Notice{Level: h, What: "nested helmfile", File: p, Helmfile: file})
			continue
		}
		slices.Sort(matches)
		for _, m := range matches {
			rels, err := l.walkPath(ctx, m, subOver, subSel, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, rels...)
		}
	}
	for i := range st.releases {
		k := releaseKey{key, i}
		r, keep := l.release(st, k, sel)
		if keep && !l.listed[k] {
			l.listed[k] = true
			out = append(out, r)
		}
	}
	return out, nil
}

// state loads a helmfile, its bases and its parts, once per key.
func (l *stateLoader) state(file string, overrides map[string]any, key string) (*state, error) {
	if st, ok := l.states[key]; ok {
		return st, nil
	}
	l.loads++
	st := &state{
		file: file, dir: filepath.Dir(file), envName: l.opts.Environment, envs: map[string]*envEntry{},
		repos: map[string]Repository{}, overrides: overrides,
	}
	if err := l.addFile(st, file, 0); err != nil {
		return nil, err
	}
	if _, ok := st.envs[st.envName]; !ok && st.envName != "default" {
		return nil, fmt.Errorf("helmfile %s: environment %q is not defined in environments: (defined: %s)", file, st.envName, strings.Join(st.envNames(), ", "))
	}
	vals, err := l.stateValues(st)
	if err != nil {
		return nil, err
	}
	st.values = vals
	l.states[key] = st
	return st, nil
}

var partSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// addFile merges a file into st: bases first, then each part in order, each
// rendered with the state values known so far.
func (l *stateLoader) addFile(st *state, file string, depth int) error {
	if depth > 10 {
		return fmt.Errorf("helmfile %s: bases nested deeper than 10: a cycle?", file)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("helmfile %s: %w", file, err)
	}
	text := strings.ReplaceAll(string(raw), "\r\n", "\n")
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
		if err := l.addPart(st, file, part, line, depth); err != nil {
			return err
		}
	}
	return nil
}

func isTemplate(file string) bool {
	return strings.HasSuffix(file, ".gotmpl") || strings.HasSuffix(file, ".tpl")
}

// escapedAction is a release template escaped for helmfile 0.142's
// file-level rendering: {{`{{ .Release.Name }}`}}.
var escapedAction = regexp.MustCompile("\\{\\{-?\\s*`[^`]*`\\s*-?\\}\\}")

// renderedAsTemplate says whether a part is Go-templated as a whole before
// it is read. Today's helmfile renders only .gotmpl files; helmfile 0.142
// (BlueKing's) rendered every helmfile, so a plain .yaml with {{ }} is
// rendered too, unless it uses .Release outside escapes or does not render:
// then it was written for today's helmfile, where such fields are release
// templates, rendered per release (release.go), or text for a chart.
func renderedAsTemplate(file, part string) bool {
	if isTemplate(file) {
		return true
	}
	if !strings.Contains(part, "{{") {
		return false
	}
	return !strings.Contains(escapedAction.ReplaceAllString(part, ""), ".Release")
}

func (l *stateLoader) addPart(st *state, file, part string, line, depth int) error {
	// Padding keeps YAML error lines equal to the file's lines.
	data := []byte(strings.Repeat("\n", line-1) + part)
	templated := renderedAsTemplate(file, part)
	headAdded := false
	if templated {
		// First pass, forgiving: find bases and environments, which the
		// values of the second pass come from.
		known, err := l.stateValues(st)
		if err != nil {
			return err
		}
		if pre, err := renderTemplate(file, part, line, templateData(st.envName, known, nil), false); err == nil {
			var head stateDoc
			if yaml.Unmarshal(pre, &head) == nil {
				if err := l.addHead(st, head, depth); err != nil {
					return err
				}
				headAdded = true
			}
		}
		if known, err = l.stateValues(st); err != nil {
			return err
		}
		out, err := renderTemplate(file, part, line, templateData(st.envName, known, nil), true)
		switch {
		case err == nil:
			data = out
		case isTemplate(file):
			return fmt.Errorf("helmfile %s (environment %q): %w%s", file, st.envName, err, st.skippedHint())
		default:
			// A plain .yaml that does not render as a whole was written for
			// today's helmfile, which passes its {{ }} on (release
			// templates, or text for a chart's tpl): read it as written.
			templated = false
		}
	}
	var doc stateDoc
	if err := yaml.Unmarshal(data, &doc); err != nil {
		what := "helmfile"
		if templated {
			what = "rendered helmfile"
		}
		return fmt.Errorf("%s %s: %w", what, file, err)
	}
	if !headAdded {
		if err := l.addHead(st, doc, depth); err != nil {
			return err
		}
	} else {
		// Environments may be declared after the first pass used them.
		for name, e := range doc.Environments {
			if _, ok := st.envs[name]; !ok {
				if err := checkHandler(e.MissingFileHandler, fmt.Sprintf("helmfile %s: environment %q", file, name)); err != nil {
					return err
				}
				st.envs[name] = &envEntry{values: valuesList(st.dir, e.Values), handler: e.MissingFileHandler}
			}
		}
		if doc.MissingFileHandler != nil && st.handler == nil {
			st.handler = doc.MissingFileHandler
		}
	}
	if err := checkHandler(doc.MissingFileHandler, "helmfile "+file); err != nil {
		return err
	}
	for _, r := range doc.Repositories {
		st.repos[r.Name] = r
	}
	st.helmfiles = append(st.helmfiles, doc.Helmfiles...)
	if len(doc.Charts) > 0 && len(doc.Releases) > 0 {
		return fmt.Errorf("helmfile %s: both charts: and releases: (charts: is helmfile 0.142's old name for releases:): keep one", file)
	}
	for _, r := range append(doc.Releases, doc.Charts...) {
		if err := checkHandler(r.MissingFileHandler, fmt.Sprintf("helmfile %s: release %q", file, r.Name)); err != nil {
			return err
		}
		// Paths are made absolute after the release's own templating, which
		// may compute them (values/{{ .Release.Name }}.yaml).
		st.releases = append(st.releases, r)
	}
	return nil
}

// addHead merges bases, environments, top-level values and the helmfile's
// missingFileHandler of one part.
func (l *stateLoader) addHead(st *state, doc stateDoc, depth int) error {
	for _, b := range doc.Bases {
		p := b
		if !filepath.IsAbs(p) {
			p = filepath.Join(st.dir, b)
		}
		if err := l.addFile(st, p, depth+1); err != nil {
			return err
		}
	}
	for name, e := range doc.Environments {
		if err := checkHandler(e.MissingFileHandler, fmt.Sprintf("helmfile %s: environment %q", st.file, name)); err != nil {
			return err
		}
		// A later declaration of an environment adds to its values.
		env := st.envs[name]
		if env == nil {
			env = &envEntry{}
			st.envs[name] = env
		}
		env.values = append(env.values, valuesList(st.dir, e.Values)...)
		if e.MissingFileHandler != nil {
			env.handler = e.MissingFileHandler
		}
	}
	if len(doc.Values) > 0 {
		st.defaults = append(st.defaults, valuesList(st.dir, doc.Values)...)
	}
	if doc.MissingFileHandler != nil {
		st.handler = doc.MissingFileHandler
	}
	return nil
}

func (st *state) envNames() []string {
	return slices.Sorted(maps.Keys(st.envs))
}

func (st *state) skippedHint() string {
	if len(st.skipped) == 0 {
		return ""
	}
	return fmt.Sprintf(" (optional values files not found, which may have held the key: %s)", strings.Join(st.skipped, ", "))
}

// notice reports a skipped optional file once per run.
func (l *stateLoader) notice(n Notice) {
	if l.reported[n.File] {
		return
	}
	l.reported[n.File] = true
	if l.opts.Notify != nil {
		l.opts.Notify(n)
	}
}

func ptr[T any](v T) *T { return &v }
