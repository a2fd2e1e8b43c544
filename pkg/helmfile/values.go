package helmfile

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/strvals"
	"sigs.k8s.io/yaml"

	"github.com/bkcache/bkcache/pkg/userfile"
)

// This file holds values: state values (top-level values, the environment's,
// --state-values-*), release values files, missing optional files, merging
// and helm's --set forms.

// valuesEntry is a values file (made absolute; it may be a glob) or an
// inline map; anything else in a values list is kept as bad, to be refused
// where the list is merged rather than dropped unseen.
type valuesEntry struct {
	file   string
	inline map[string]any
	bad    any
}

// check refuses a values entry that is neither a file name nor a map.
func (e valuesEntry) check() error {
	if e.file == "" && e.inline == nil {
		return fmt.Errorf("values entry %v (%T) is neither a file name nor a map of values", e.bad, e.bad)
	}
	return nil
}

func valuesList(dir string, vs []any) []valuesEntry {
	var out []valuesEntry
	for _, v := range absValues(dir, vs) {
		switch x := v.(type) {
		case string:
			out = append(out, valuesEntry{file: x})
		case map[string]any:
			out = append(out, valuesEntry{inline: x})
		default:
			out = append(out, valuesEntry{bad: x})
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

// fileOwner says whose values file it is: where missing files are reported
// and which missingFileHandler applies.
type fileOwner struct {
	helmfile    string
	environment string
	release     string
	handler     *string // nil: Error
	// handlerAt says where to set missingFileHandler to make the file optional.
	handlerAt string
	// what the file is: "values file" when empty.
	what string
}

// resolveFile expands a values file (a path or a glob) into the files to
// read. No match is an error under missingFileHandler Error (the default);
// under Warn, Info or Debug the file is reported once and skipped.
func (l *stateLoader) resolveFile(file string, owner fileOwner) (files []string, skipped bool, err error) {
	matches, err := filepath.Glob(file)
	if err != nil {
		return nil, false, fmt.Errorf("values file %s: %w", file, err)
	}
	if len(matches) > 0 {
		slices.Sort(matches)
		return matches, false, nil
	}
	h := handlerError
	if owner.handler != nil {
		h = *owner.handler
	}
	if h == handlerError {
		hint := ""
		if owner.handlerAt != "" {
			hint = "; set missingFileHandler: Warn on " + owner.handlerAt + " to make it optional"
		}
		what := owner.what
		if what == "" {
			what = "values file"
		}
		return nil, false, fmt.Errorf("%s %s not found (missingFileHandler: Error%s)", what, file, hint)
	}
	what := owner.what
	if what == "" {
		what = "values file"
	}
	l.notice(Notice{Level: h, What: what, File: file, Helmfile: owner.helmfile, Environment: owner.environment, Release: owner.release})
	return nil, true, nil
}

// stateValues computes the state values from what st holds so far: top-level
// values, then the environment's values in order, each .gotmpl file seeing
// the values before it (and --state-values-*), then --state-values-file,
// --state-values-set and a parent's `helmfiles: values` on top. What a
// parent passes through `inherits: [environments]` lies underneath.
func (l *stateLoader) stateValues(st *state) (map[string]any, error) {
	acc := map[string]any{}
	if st.inherited != nil && st.inherited.Env != nil {
		// inherits: [environments]: the parent's values under the child's own.
		acc = deepCopy(st.inherited.Env)
	}
	var skipped []string
	defaults := fileOwner{helmfile: st.file}
	env := st.envs[st.envName]
	envOwner := fileOwner{helmfile: st.file, environment: st.envName, handler: st.handler,
		handlerAt: fmt.Sprintf("environment %q", st.envName)}
	if env != nil && env.handler != nil {
		envOwner.handler = env.handler
	}
	type entry struct {
		valuesEntry
		owner fileOwner
	}
	var entries []entry
	for _, e := range st.defaults {
		entries = append(entries, entry{e, defaults})
	}
	if env != nil {
		for _, e := range env.values {
			entries = append(entries, entry{e, envOwner})
		}
	}
	for _, e := range entries {
		if err := e.check(); err != nil {
			return nil, fmt.Errorf("helmfile %s: environment %q: %w", st.file, st.envName, err)
		}
		if e.file == "" {
			acc = mergeMaps(acc, e.inline)
			continue
		}
		files, skip, err := l.resolveFile(e.file, e.owner)
		if err != nil {
			return nil, fmt.Errorf("helmfile %s: environment %q: %w", st.file, st.envName, err)
		}
		if skip {
			skipped = append(skipped, e.file)
			continue
		}
		for _, f := range files {
			known := mergeMaps(acc, st.overrides)
			m, err := l.readValues(f, templateData(st.envName, known, nil))
			if err != nil {
				st.skipped = skipped
				return nil, fmt.Errorf("helmfile %s: environment %q: %w%s", st.file, st.envName, err, st.skippedHint())
			}
			acc = mergeMaps(acc, m)
		}
	}
	st.skipped = skipped
	return mergeMaps(acc, deepCopy(st.overrides)), nil
}

// readValues is readValuesFile rendered once per run for each (file, data):
// environment values templates are read by every part and every nested
// helmfile that names them, and may call costly functions (derivePassword).
// Callers get their own copy, which they may change.
func (l *stateLoader) readValues(file string, data any) (map[string]any, error) {
	if !isTemplate(file) {
		return readValuesFile(file, data)
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		abs = file
	}
	b, err := json.Marshal(data)
	if err != nil {
		return readValuesFile(file, data)
	}
	key := abs + "\x00" + string(b)
	r, ok := l.valuesFiles[key]
	if !ok {
		r = valuesResult{}
		r.vals, r.err = readValuesFile(file, data)
		l.valuesFiles[key] = r
		l.valuesRenders++
	}
	if r.err != nil {
		return nil, r.err
	}
	return deepCopy(r.vals), nil
}

type valuesResult struct {
	vals map[string]any
	err  error
}

// readValuesFile reads YAML values; .gotmpl files are rendered first.
func readValuesFile(file string, data any) (map[string]any, error) {
	b, err := userfile.Read(file)
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
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("values file %s: %w", file, err)
	}
	switch m := v.(type) {
	case nil:
		return map[string]any{}, nil // empty, or only comments
	case map[string]any:
		return m, nil
	default:
		return nil, fmt.Errorf("values file %s holds a %T (%.40v), not a map of values (key: value lines)", file, v, v)
	}
}

// mergeValues merges values entries in order (files rendered with data,
// inline maps as written); missing files go to the owner's handler.
func (l *stateLoader) mergeValues(entries []valuesEntry, data any, owner fileOwner) (map[string]any, []string, error) {
	acc := map[string]any{}
	var skipped []string
	for k, e := range entries {
		if err := e.check(); err != nil {
			return nil, nil, err
		}
		if e.file == "" {
			acc = mergeMaps(acc, deepCopy(e.inline))
			continue
		}
		files, skip, err := l.resolveFile(e.file, owner)
		if err != nil {
			return nil, nil, err
		}
		if skip {
			skipped = append(skipped, e.file)
			continue
		}
		for _, f := range files {
			m, err := l.readValues(f, data)
			if err != nil {
				// Every absent optional file of the list, also those after
				// this one: one of them may be where the missing key lives.
				for _, rest := range entries[k+1:] {
					if _, skip, rerr := l.resolveFile(rest.file, owner); rest.file != "" && rerr == nil && skip {
						skipped = append(skipped, rest.file)
					}
				}
				return nil, skipped, err
			}
			acc = mergeMaps(acc, m)
		}
	}
	return acc, skipped, nil
}

// applySet applies a `set:` entry as helm's --set, --set-file and list forms do.
func applySet(vals map[string]any, s setSpec) error {
	switch {
	case s.File != "":
		b, err := userfile.Read(s.File)
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

// mergeMaps merges b into a, deeply, into a new map; b wins. As helm merges
// -f files.
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
