package helmfile

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/bkcache/bkcache/pkg/userfile"
)

// This file reads one helmfile into a state: its parts in order, each
// rendered with the state values known so far, and its bases.

var partSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// addFile merges a file into st: bases first, then each part in order, each
// rendered with the state values known so far.
func (l *stateLoader) addFile(st *state, file string, depth int) error {
	if depth > 10 {
		return fmt.Errorf("helmfile %s: bases nested deeper than 10: a cycle?", file)
	}
	raw, err := userfile.Read(file)
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
		out, added, err := l.renderWithHead(st, file, part, line, depth)
		headAdded = added
		switch {
		case err == nil:
			data = out
		case isTemplate(file) && len(st.envs) > 0 && st.envs[st.envName] == nil && st.envName != "default":
			// The environment is undefined so far, which is why the part
			// does not render: say so, as helmfile does.
			return &undefinedEnvError{file: st.file, env: st.envName, defined: st.envNames()}
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
				st.envs[name] = &envEntry{values: valuesList(st.dir, e.Values), handler: e.MissingFileHandler, secrets: len(e.Secrets)}
			}
		}
		if doc.MissingFileHandler != nil && st.handler == nil {
			st.handler = doc.MissingFileHandler
		}
	}
	return st.addBody(file, doc)
}

// renderWithHead renders a templated part. A first pass finds its bases
// and environments, which the values of the second pass come from. Strict
// first: when it renders and the head leaves the values as they were, its
// output is the part's (one render, which matters for costly functions such
// as derivePassword); else a forgiving pass finds the head.
func (l *stateLoader) renderWithHead(st *state, file, part string, line, depth int) (out []byte, headAdded bool, err error) {
	known, err := l.stateValues(st)
	if err != nil {
		return nil, false, err
	}
	first, ferr := l.renderPart(file, part, line, templateData(st.envName, known, nil), true)
	strictOK := ferr == nil
	if !strictOK {
		first, ferr = l.renderPart(file, part, line, templateData(st.envName, known, nil), false)
	}
	if ferr == nil {
		var head stateDoc
		if yaml.Unmarshal(first, &head) == nil {
			if err := l.addHead(st, head, depth); err != nil {
				return nil, false, err
			}
			headAdded = true
		}
	}
	after, err := l.stateValues(st)
	if err != nil {
		return nil, headAdded, err
	}
	if strictOK && reflect.DeepEqual(known, after) {
		return first, headAdded, nil
	}
	out, err = l.renderPart(file, part, line, templateData(st.envName, after, nil), true)
	return out, headAdded, err
}

// addBody merges what a part says besides its head: repositories,
// templates, helmDefaults, apiVersions, kubeVersion, nested helmfiles and
// releases; later parts and the file over its bases, as helmfile merges them.
func (st *state) addBody(file string, doc stateDoc) error {
	if err := checkHandler(doc.MissingFileHandler, "helmfile "+file); err != nil {
		return err
	}
	for _, r := range doc.Repositories {
		st.repos[r.Name] = r
	}
	for name, t := range doc.Templates {
		if st.templates == nil {
			st.templates = map[string]any{}
		}
		st.templates[name] = t
	}
	if doc.Namespace != "" {
		st.namespace = doc.Namespace
	}
	for k, v := range doc.CommonLabels {
		if st.commonLabels == nil {
			st.commonLabels = map[string]string{}
		}
		st.commonLabels[k] = v
	}
	if doc.DefaultInherit != nil {
		st.defaultInherit = doc.DefaultInherit
	}
	st.helmDefaults.merge(doc.HelmDefaults)
	if len(doc.APIVersions) > 0 {
		st.apiVersions = doc.APIVersions
	}
	if doc.KubeVersion != "" {
		st.kubeVersion = doc.KubeVersion
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
		env.secrets += len(e.Secrets)
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

func (st *state) skippedHint() string { return skippedHint(st.skipped) }

// skippedHint names the optional values files that were absent.
func skippedHint(skipped []string) string {
	if len(skipped) == 0 {
		return ""
	}
	return fmt.Sprintf(" (optional values files not found, which may have held the key: %s)", strings.Join(skipped, ", "))
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

// renderPart renders a helmfile part once per run for each (file, part,
// data, strictness): a base named by many nested helmfiles with the same
// values is rendered once.
func (l *stateLoader) renderPart(file, part string, line int, data any, strict bool) ([]byte, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return renderTemplate(file, part, line, data, strict)
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		abs = file
	}
	// The text is in the key: two parts may start on one line ("---" first).
	key := fmt.Sprintf("%s\x00%d\x00%t\x00%s\x00%s", abs, line, strict, part, b)
	r, ok := l.parts[key]
	if !ok {
		r.out, r.err = renderTemplate(file, part, line, data, strict)
		l.parts[key] = r
		l.partRenders++
	}
	return r.out, r.err
}

type partResult struct {
	out []byte
	err error
}
