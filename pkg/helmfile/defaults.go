package helmfile

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// This file holds what helmfile adds to `helm template` besides values, as
// helmfile's state flagsForTemplate builds it: apiVersions and kubeVersion
// (the release's, else the state's), helmDefaults.args (every helm command)
// and helmDefaults.templateArgs (`helm template` only), and skipSchemaValidation.

// helmDefaults are the keys of helmfile's helmDefaults that change what
// `helm template` renders. The others (wait, timeout, atomic, …) act on a
// cluster and do not.
type helmDefaults struct {
	Args                 stringList `json:"args"`
	TemplateArgs         stringList `json:"templateArgs"`
	SkipSchemaValidation *bool      `json:"skipSchemaValidation"`
	PostRenderer         *string    `json:"postRenderer"`
}

// stringList is a list of strings also written as one string ("--a --b"),
// as helmfile's args and templateArgs are seen in the wild.
type stringList []string

func (s *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if json.Unmarshal(b, &one) == nil {
		*s = strings.Fields(one)
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want a list of strings: %w", err)
	}
	*s = many
	return nil
}

// merge lays a later part's or base's helmDefaults over d, key by key, as
// helmfile merges bases (later wins).
func (d *helmDefaults) merge(o *helmDefaults) {
	if o == nil {
		return
	}
	if o.Args != nil {
		d.Args = o.Args
	}
	if o.TemplateArgs != nil {
		d.TemplateArgs = o.TemplateArgs
	}
	if o.SkipSchemaValidation != nil {
		d.SkipSchemaValidation = o.SkipSchemaValidation
	}
	if o.PostRenderer != nil {
		d.PostRenderer = o.PostRenderer
	}
}

// inheritance is what a parent passes a nested helmfile through `inherits:`
// (today's helmfile): the child's own settings win, the parent's fill gaps.
type inheritance struct {
	Env          map[string]any        `json:"env,omitempty"` // the parent's state values
	HelmDefaults *helmDefaults         `json:"helmDefaults,omitempty"`
	Repos        map[string]Repository `json:"repos,omitempty"`
	CommonLabels map[string]string     `json:"commonLabels,omitempty"`
	Templates    map[string]any        `json:"templates,omitempty"`
	APIVersions  []string              `json:"apiVersions,omitempty"`
	KubeVersion  string                `json:"kubeVersion,omitempty"`
}

// inherit builds what st passes a nested helmfile that lists want.
func (st *state) inherit(want []string) (*inheritance, error) {
	if len(want) == 0 {
		return nil, nil
	}
	in := &inheritance{}
	for _, w := range want {
		switch w {
		default:
			return nil, fmt.Errorf("invalid inherits entry %q: use environments, helmDefaults, repositories, commonLabels, apiVersions, kubeVersion or templates", w)
		case "templates":
			in.Templates = st.templates
		case "environments":
			in.Env = deepCopy(st.values)
		case "helmDefaults":
			d := st.helmDefaults
			in.HelmDefaults = &d
		case "repositories":
			in.Repos = st.repos
		case "commonLabels":
			in.CommonLabels = st.commonLabels
		case "apiVersions":
			in.APIVersions = st.apiVersions
		case "kubeVersion":
			in.KubeVersion = st.kubeVersion
		}
	}
	return in, nil
}

// applyInherited fills what st did not set from what its parent passed.
func (st *state) applyInherited() {
	in := st.inherited
	if in == nil {
		return
	}
	if in.HelmDefaults != nil {
		d := *in.HelmDefaults
		own := st.helmDefaults
		d.merge(&own)
		st.helmDefaults = d
	}
	for name, r := range in.Repos {
		if _, ok := st.repos[name]; !ok {
			st.repos[name] = r
		}
	}
	for k, v := range in.Templates {
		if _, ok := st.templates[k]; !ok {
			if st.templates == nil {
				st.templates = map[string]any{}
			}
			st.templates[k] = v
		}
	}
	for k, v := range in.CommonLabels {
		if _, ok := st.commonLabels[k]; !ok {
			if st.commonLabels == nil {
				st.commonLabels = map[string]string{}
			}
			st.commonLabels[k] = v
		}
	}
	for _, a := range in.APIVersions {
		if !slices.Contains(st.apiVersions, a) {
			st.apiVersions = append(st.apiVersions, a)
		}
	}
	if st.kubeVersion == "" {
		st.kubeVersion = in.KubeVersion
	}
}

// ReleaseRender is what a release's `helm template` gets besides values.
type ReleaseRender struct {
	APIVersions []string
	KubeVersion string
	// IsUpgrade renders .Release.IsUpgrade (--is-upgrade).
	IsUpgrade bool
	// NoHooks leaves hooks out (--no-hooks); SkipCRDs the crds/ files
	// (--skip-crds).
	NoHooks, SkipCRDs    bool
	SkipSchemaValidation bool
	// Set and SetString are --set and --set-string given in args.
	Set, SetString []string
}

// releaseRender computes a release's render settings and what of them is
// not applied here.
func releaseRender(st *state, s releaseSpec) (ReleaseRender, []string) {
	r := ReleaseRender{APIVersions: st.apiVersions, KubeVersion: st.kubeVersion}
	if len(s.APIVersions) > 0 {
		r.APIVersions = s.APIVersions
	}
	if s.KubeVersion != "" {
		r.KubeVersion = s.KubeVersion
	}
	r.APIVersions = slices.Clone(r.APIVersions)
	d := st.helmDefaults
	if d.SkipSchemaValidation != nil {
		r.SkipSchemaValidation = *d.SkipSchemaValidation
	}
	if s.SkipSchemaValidation != nil {
		r.SkipSchemaValidation = *s.SkipSchemaValidation
	}
	// helm takes the last of a repeated flag: args first, then templateArgs,
	// as helmfile orders them.
	unapplied := r.parseArgs("helmDefaults.args", d.Args)
	unapplied = append(unapplied, r.parseArgs("helmDefaults.templateArgs", d.TemplateArgs)...)
	switch {
	case s.PostRenderer != nil && *s.PostRenderer != "":
		unapplied = append(unapplied, "postRenderer "+*s.PostRenderer)
	case s.PostRenderer == nil && d.PostRenderer != nil && *d.PostRenderer != "":
		unapplied = append(unapplied, "helmDefaults.postRenderer "+*d.PostRenderer)
	}
	if len(s.Transformers) > 0 {
		unapplied = append(unapplied, "transformers (kustomize transformers)")
	}
	if len(s.Dependencies) > 0 {
		unapplied = append(unapplied, "dependencies (chartify's ad-hoc chart dependencies)")
	}
	return r, unapplied
}

// flagsWithValue are the helm template flags that take a value, applied or
// not: their value must not be read as a flag of its own.
var flagsWithValue = map[string]bool{
	"--api-versions": true, "-a": true, "--kube-version": true, "--set": true, "--set-string": true,
	"--values": true, "-f": true, "--set-file": true, "--set-json": true, "--set-literal": true,
	"--namespace": true, "-n": true, "--kube-context": true, "--kubeconfig": true, "--output-dir": true,
	"--show-only": true, "-s": true, "--post-renderer": true, "--post-renderer-args": true, "--version": true,
	"--repo": true, "--timeout": true, "--description": true, "--name-template": true, "--release-name": true,
	"--labels": true,
}

// renderNeutral are flags that do not change what the chart renders offline.
var renderNeutral = map[string]bool{
	"--include-crds": true, "--skip-tests": true, "--validate": true, "--debug": true, "--dry-run": true,
	"--enable-dns": true, "--devel": true, "--dependency-update": true, "--atomic": true, "--wait": true,
	"--wait-for-jobs": true, "--create-namespace": true, "--kube-context": true, "--kubeconfig": true,
	"--timeout": true, "--description": true, "--labels": true, "--namespace": true, "-n": true,
	"--version": true, "--repo": true, "--disable-openapi-validation": true, "--generate-name": true,
	"--insecure-skip-tls-verify": true, "--plain-http": true, "--pass-credentials": true, "--verify": true,
	"--skip-schema-validation": true, "--hide-notes": true, "--take-ownership": true, "--force": true,
	"--rollback-on-failure": true, "--cleanup-on-fail": true,
}

// parseArgs applies helm template flags to r and returns those it does not
// apply, each named with where it was written.
func (r *ReleaseRender) parseArgs(where string, args []string) []string {
	var unapplied []string
	for i := 0; i < len(args); i++ {
		written := args[i]
		flag, value, hasValue := strings.Cut(args[i], "=")
		if !hasValue && flagsWithValue[flag] && i+1 < len(args) {
			i++
			value, hasValue = args[i], true
			written += " " + value
		}
		switch flag {
		case "--api-versions", "-a":
			for _, v := range strings.Split(value, ",") {
				if v = strings.TrimSpace(v); v != "" && !slices.Contains(r.APIVersions, v) {
					r.APIVersions = append(r.APIVersions, v)
				}
			}
		case "--kube-version":
			r.KubeVersion = value
		case "--is-upgrade":
			r.IsUpgrade = !hasValue || value == "true"
		case "--no-hooks":
			r.NoHooks = !hasValue || value == "true"
		case "--skip-crds":
			r.SkipCRDs = !hasValue || value == "true"
		case "--skip-schema-validation":
			r.SkipSchemaValidation = !hasValue || value == "true"
		case "--set":
			r.Set = append(r.Set, value)
		case "--set-string":
			r.SetString = append(r.SetString, value)
		default:
			if !renderNeutral[flag] {
				unapplied = append(unapplied, where+" "+written)
			}
		}
	}
	return unapplied
}
