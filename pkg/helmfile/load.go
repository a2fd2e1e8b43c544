package helmfile

import (
	"context"
	"encoding/json"
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
