package helmfile

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// This file holds what templates see and the releases: their own templating
// (release templates), selection, installed/condition, values and set.

type envData struct {
	Name        string
	Values      map[string]any
	KubeContext string
}

type releaseData struct {
	Name        string
	Namespace   string
	Chart       string
	Labels      map[string]string
	KubeContext string
}

// templateData is what helmfile templates see: .Values and .StateValues
// (the same map: 0.142 knew .Values, today's helmfile prefers .StateValues),
// .Environment.{Name,Values}, .Namespace, and in release templates .Release.
func templateData(envName string, vals map[string]any, rel *releaseData) map[string]any {
	if vals == nil {
		vals = map[string]any{}
	}
	d := map[string]any{
		"Values":      vals,
		"StateValues": vals,
		"Environment": envData{Name: envName, Values: vals},
		"Namespace":   "",
		"KubeContext": "",
		"Chart":       "",
	}
	if rel != nil {
		d["Release"] = *rel
		d["Namespace"] = rel.Namespace
	}
	return d
}

// releaseResult is one release of one loaded helmfile, resolved once
// however many selectors reach it.
type releaseResult struct {
	spec     releaseSpec // after release templating
	labels   map[string]string
	ns       string
	resolved bool
	rel      Release
	keep     bool // installed and its condition holds
}

// release resolves the release k of st if sel selects it. A release whose
// own templating fails is returned (with its error) whatever the selectors:
// without its labels it cannot be judged.
func (l *stateLoader) release(st *state, k releaseKey, sel selectorSet) (Release, bool) {
	r := l.releases[k]
	if r == nil {
		raw, err := st.withInherited(st.releases[k.index])
		if st.namespace != "" {
			raw.Namespace = st.namespace // helmfile's ApplyOverrides
		}
		if err != nil {
			return Release{Helmfile: st.file, Name: raw.Name, Namespace: raw.Namespace, Chart: raw.Chart, err: err}, true
		}
		s, err := executeReleaseTemplates(st, raw, l.opts.Namespace)
		if err != nil {
			return Release{Helmfile: st.file, Name: raw.Name, Namespace: raw.Namespace, Chart: raw.Chart, err: err}, true
		}
		r = &releaseResult{spec: s, ns: s.Namespace, labels: map[string]string{}}
		if r.ns == "" {
			r.ns = l.opts.Namespace
		}
		// As helmfile's GetReleasesWithLabels: commonLabels, the release's
		// labels, then name, namespace and the chart's last path element.
		maps.Copy(r.labels, st.commonLabels)
		maps.Copy(r.labels, s.Labels)
		r.labels["name"], r.labels["namespace"] = s.Name, r.ns
		r.labels["chart"] = s.Chart[strings.LastIndex(s.Chart, "/")+1:]
		l.releases[k] = r
	}
	if !sel.match(r.labels) {
		return Release{}, false
	}
	if !r.resolved {
		r.rel, r.keep = l.resolveRelease(st, r.spec, r.ns)
		r.resolved = true
	}
	return r.rel, r.keep
}

// resolveRelease applies installed and condition, then reads the release's
// values and set: entries and finds its chart.
func (l *stateLoader) resolveRelease(st *state, s releaseSpec, ns string) (Release, bool) {
	if s.Installed != nil && !*s.Installed {
		return Release{}, false
	}
	if s.Condition != "" {
		v, _ := getPath(s.Condition, false, nil, st.values)
		if b, ok := v.(bool); !ok || !b {
			return Release{}, false
		}
	}
	base := Release{Helmfile: st.file, Name: s.Name, Namespace: ns, Chart: s.Chart, Version: s.Version, Labels: s.Labels, StateValues: st.values}
	if s.Name == "" || s.Chart == "" {
		base.err = fmt.Errorf("a release needs name: and chart:")
		return base, true
	}
	handler := st.handler
	if s.MissingFileHandler != nil {
		handler = s.MissingFileHandler
	}
	owner := fileOwner{helmfile: st.file, release: s.Name, handler: handler, handlerAt: fmt.Sprintf("release %q", s.Name)}
	if err := l.checkSecrets(st, s, owner); err != nil {
		base.err = err
		return base, true
	}
	rd := &releaseData{Name: s.Name, Namespace: ns, Chart: s.Chart, Labels: s.Labels}
	relVals, skipped, err := l.mergeValues(valuesList(st.dir, s.Values), templateData(st.envName, st.values, rd), owner)
	if err != nil {
		// A key missing from a values template most often lives in an
		// optional file that is absent, or in another environment.
		base.err = fmt.Errorf("environment %q: %w%s", st.envName, err, skippedHint(append(slices.Clone(st.skipped), skipped...)))
		return base, true
	}
	for _, set := range s.Set {
		if set.File != "" && !filepath.IsAbs(set.File) {
			set.File = filepath.Join(st.dir, set.File)
		}
		if err := applySet(relVals, set); err != nil {
			base.err = err
			return base, true
		}
	}
	for _, set := range s.SetString {
		if err := strvals.ParseIntoString(set.Name+"="+fmt.Sprint(set.Value), relVals); err != nil {
			base.err = fmt.Errorf("setString %s: %w", set.Name, err)
			return base, true
		}
	}
	base.Values = relVals
	base.Render, base.Unapplied = releaseRender(st, s)
	if base.patches, err = l.loadPatches(st, s, templateData(st.envName, st.values, rd)); err != nil {
		base.err = err
		return base, true
	}
	if base.chart, err = resolveChart(st.dir, s.Chart, s.Version, st.repos); err != nil {
		base.err = err
	}
	return base, true
}

// executeReleaseTemplates renders a release's own template expressions, as
// helmfile does for release templates (`templates:` merged with YAML
// anchors, or any release field holding {{ }} after the file's rendering):
// name, namespace, chart, version and labels first, repeated until they stop
// changing, since one may name another (.Release.Name in the namespace);
// then installedTemplate, values paths, valuesTemplate maps and setTemplate
// entries, which helmfile puts before values: and set:. Inline values maps
// and set: entries are left as written, as helmfile leaves them.
func executeReleaseTemplates(st *state, s releaseSpec, defaultNS string) (releaseSpec, error) {
	if !hasTemplate(s) {
		return s, nil
	}
	render := func(field, text string, rd *releaseData) (string, error) {
		if !strings.Contains(text, "{{") {
			return text, nil
		}
		out, err := renderTemplate(st.file, text, 1, templateData(st.envName, st.values, rd), true)
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
	s.Labels = maps.Clone(s.Labels)
	if err := renderIdentity(&s, render, data); err != nil {
		return s, err
	}
	return renderReleaseValues(s, render, data())
}

// renderIdentity renders name, namespace, chart, version and labels until
// they stop changing, since one may name another.
func renderIdentity(s *releaseSpec, render func(field, text string, rd *releaseData) (string, error), data func() *releaseData) error {
	for range 5 {
		prev, rd := *s, data()
		var err error
		if s.Name, err = render("name", s.Name, rd); err != nil {
			return err
		}
		if s.Namespace, err = render("namespace", s.Namespace, rd); err != nil {
			return err
		}
		if s.Chart, err = render("chart", s.Chart, rd); err != nil {
			return err
		}
		if s.Version, err = render("version", s.Version, rd); err != nil {
			return err
		}
		changed := false
		for k, v := range s.Labels {
			if s.Labels[k], err = render("labels."+k, v, rd); err != nil {
				return err
			}
			changed = changed || s.Labels[k] != v
		}
		if !changed && s.Name == prev.Name && s.Namespace == prev.Namespace && s.Chart == prev.Chart && s.Version == prev.Version {
			break
		}
	}
	return nil
}

// renderReleaseValues renders installedTemplate, values paths, valuesTemplate
// maps and setTemplate entries.
func renderReleaseValues(s releaseSpec, render func(field, text string, rd *releaseData) (string, error), rd *releaseData) (releaseSpec, error) {
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
	for i, v := range s.Secrets {
		if p, ok := v.(string); ok {
			var err error
			if s.Secrets[i], err = render(fmt.Sprintf("secrets[%d]", i), p, rd); err != nil {
				return s, err
			}
		}
	}
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
	for _, v := range append(slices.Clone(s.Values), s.Secrets...) {
		if p, ok := v.(string); ok && strings.Contains(p, "{{") {
			return true
		}
	}
	return false
}

// checkSecrets fails a release whose secrets: files exist: they need sops,
// which is not run here. Missing ones go to the release's
// missingFileHandler, as helmfile resolves them before decrypting.
func (l *stateLoader) checkSecrets(st *state, s releaseSpec, owner fileOwner) error {
	owner.what = "secrets file"
	var present []string
	for _, e := range valuesList(st.dir, s.Secrets) {
		if e.file == "" {
			continue
		}
		files, _, err := l.resolveFile(e.file, owner)
		if err != nil {
			return fmt.Errorf("secrets: %w", err)
		}
		present = append(present, files...)
	}
	if len(present) > 0 {
		return fmt.Errorf("secrets %s need sops, which kubectl bkcache does not run: render with decrypted values files instead (values:)", strings.Join(present, ", "))
	}
	return nil
}
