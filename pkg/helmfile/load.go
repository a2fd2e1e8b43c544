package helmfile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/strvals"
)

// This file holds the loader's walk: files and directories, nested
// helmfiles, one state per (file, environment, values). Parts and bases are
// read in parts.go.

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
	// undefined remembers helmfiles that cannot have the environment.
	undefined map[string]error
	// valuesFiles are the values templates rendered, by file and data;
	// valuesRenders counts them (tests check the memoisation).
	valuesFiles   map[string]valuesResult
	valuesRenders int
	// parts are the helmfile parts rendered, by file, part and data.
	parts       map[string]partResult
	partRenders int
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
		walking: map[string]bool{}, listed: map[releaseKey]bool{}, undefined: map[string]error{},
		valuesFiles: map[string]valuesResult{}, parts: map[string]partResult{},
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
	return l.walkPath(ctx, path, stateInput{overrides: overrides}, l.opts.Selectors, 0)
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

// stateInput is what a helmfile is loaded with besides its text: the state
// values given from above (--state-values-*, a parent's helmfiles[].values,
// which reach every level) and what a parent passes through `inherits:`.
type stateInput struct {
	overrides map[string]any
	inherited *inheritance
}

// passed says whether an environment was passed down: helmfile's hasEnv
// (desired_state_file_loader.go), which lets a helmfile without
// environments: load under any environment.
func (in stateInput) passed() bool {
	return len(in.overrides) > 0 || (in.inherited != nil && in.inherited.Env != nil)
}

// undefinedEnvError is helmfile's UndefinedEnvError: the environment is
// neither defined in the helmfile nor passed down to it.
type undefinedEnvError struct {
	file, env string
	defined   []string
}

func (e *undefinedEnvError) Error() string {
	if len(e.defined) == 0 {
		return fmt.Sprintf("helmfile %s: environment %q is not defined in %s (it defines no environments: and none was passed down to it)", e.file, e.env, filepath.Base(e.file))
	}
	return fmt.Sprintf("helmfile %s: environment %q is not defined in %s (defined: %s)", e.file, e.env, filepath.Base(e.file), strings.Join(e.defined, ", "))
}

func (l *stateLoader) walkPath(ctx context.Context, path string, in stateInput, selectors []string, depth int) ([]Release, error) {
	files, err := helmfileFiles(path)
	if err != nil {
		return nil, err
	}
	var out []Release
	var undefined error
	loaded := 0
	for _, f := range files {
		rels, err := l.walkFile(ctx, f, in, selectors, depth)
		var ue *undefinedEnvError
		if errors.As(err, &ue) && (depth > 0 || len(files) > 1) {
			// helmfile (app.go) skips a helmfile that cannot have the
			// environment rather than failing the run.
			undefined = err
			l.notice(Notice{Level: handlerInfo, File: f, Message: err.Error() + ": skipped, as helmfile skips it"})
			continue
		}
		if err != nil {
			return nil, err
		}
		loaded++
		out = append(out, rels...)
	}
	if loaded == 0 && undefined != nil && depth == 0 {
		return nil, undefined
	}
	return out, nil
}

// stateKey names a loaded helmfile: its path, the environment and what it
// was given.
func (l *stateLoader) stateKey(file string, in stateInput) string {
	abs, err := filepath.Abs(file)
	if err != nil {
		abs = file
	}
	b, _ := json.Marshal(in.overrides) // map keys come out sorted
	key := abs + "\x00" + l.opts.Environment + "\x00" + string(b)
	if in.inherited != nil {
		ib, _ := json.Marshal(in.inherited)
		key += "\x00" + string(ib)
	}
	return key
}

// walkFile returns the releases of one helmfile and its nested helmfiles
// that this walk has not listed yet.
func (l *stateLoader) walkFile(ctx context.Context, file string, in stateInput, selectors []string, depth int) ([]Release, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if depth > 20 {
		return nil, fmt.Errorf("helmfile %s: nested helmfiles deeper than 20: a cycle?", file)
	}
	key := l.stateKey(file, in)
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
	st, err := l.state(file, in, key)
	if err != nil {
		return nil, err
	}
	l.visited[visit] = true
	l.walking[key] = true
	defer delete(l.walking, key)
	sel, err := parseSelectors(selectors)
	if err != nil {
		return nil, err
	}
	// Nested helmfiles first, as helmfile runs them.
	var out []Release
	for _, sub := range st.helmfiles {
		rels, err := l.walkNested(ctx, st, sub, in, selectors, depth)
		if err != nil {
			return nil, err
		}
		out = append(out, rels...)
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

// walkNested walks one entry of st's helmfiles: with its selectors (or the
// parent's), the state values from above plus its values:, and what it
// inherits.
func (l *stateLoader) walkNested(ctx context.Context, st *state, sub subHelmfile, in stateInput, selectors []string, depth int) ([]Release, error) {
	subSel := selectors
	if sub.hasSelectors && !sub.SelectorsInherited {
		subSel = sub.Selectors
	}
	inherited, err := st.inherit(sub.Inherits)
	if err != nil {
		return nil, fmt.Errorf("helmfile %s: helmfiles entry %s: %w", st.file, sub.Path, err)
	}
	subIn := stateInput{overrides: in.overrides, inherited: inherited}
	if len(sub.Values) > 0 {
		vals, _, err := l.mergeValues(valuesList(st.dir, sub.Values), templateData(st.envName, st.values, nil), fileOwner{helmfile: st.file, handler: ptr(handlerError)})
		if err != nil {
			return nil, fmt.Errorf("helmfile %s: helmfiles entry %s: %w", st.file, sub.Path, err)
		}
		subIn.overrides = mergeMaps(mergeMaps(map[string]any{}, in.overrides), vals)
	}
	if strings.Contains(sub.Path, "::") || strings.Contains(sub.Path, "://") {
		return nil, fmt.Errorf("helmfile %s: nested helmfile %s is remote (go-getter), which is not fetched here: clone it and name the local copy in helmfiles:", st.file, sub.Path)
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
			return nil, fmt.Errorf("helmfile %s: nested helmfile %s: no such file (set missingFileHandler: Warn in %s to skip it)", st.file, sub.Path, st.file)
		}
		l.notice(Notice{Level: h, What: "nested helmfile", File: p, Helmfile: st.file})
		return nil, nil
	}
	slices.Sort(matches)
	var out []Release
	for _, m := range matches {
		rels, err := l.walkPath(ctx, m, subIn, subSel, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, rels...)
	}
	return out, nil
}

// state loads a helmfile, its bases and its parts, once per key. The
// environment is checked once all parts are merged, as helmfile checks it:
// a helmfile that defines environments must define this one; one that
// defines none takes any environment passed down to it.
func (l *stateLoader) state(file string, in stateInput, key string) (*state, error) {
	if st, ok := l.states[key]; ok {
		return st, nil
	}
	if err, ok := l.undefined[key]; ok {
		return nil, err
	}
	l.loads++
	st := &state{
		file: file, dir: filepath.Dir(file), envName: l.opts.Environment, envs: map[string]*envEntry{},
		repos: map[string]Repository{}, overrides: in.overrides, inherited: in.inherited,
	}
	if err := l.addFile(st, file, 0); err != nil {
		return nil, err
	}
	if _, ok := st.envs[st.envName]; !ok && st.envName != "default" && (len(st.envs) > 0 || !in.passed()) {
		err := &undefinedEnvError{file: file, env: st.envName, defined: st.envNames()}
		l.undefined[key] = err
		return nil, err
	}
	st.applyInherited()
	if env := st.envs[st.envName]; env != nil && env.secrets > 0 {
		l.notice(Notice{Level: handlerWarn, File: file + "\x00secrets", Helmfile: file, Environment: st.envName,
			Message: fmt.Sprintf("helmfile %s: environment %q: secrets: are sops files, not decrypted here: values only they set are missing (give them decrypted as values: or --state-values-file)", file, st.envName)})
	}
	vals, err := l.stateValues(st)
	if err != nil {
		return nil, err
	}
	st.values = vals
	l.states[key] = st
	return st, nil
}
