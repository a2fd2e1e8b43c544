package helmfile

import (
	"encoding/json"
	"fmt"
)

// This file holds the helmfile document model: what a helmfile part says
// (stateDoc and its pieces) and what the loader makes of it (state).
// The loader is in load.go and parts.go, values in values.go, release
// templating in release.go, selectors in selector.go.

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
	// Render is what helmfile would pass `helm template` for this release
	// besides values: helmDefaults.templateArgs and args, apiVersions,
	// kubeVersion (the command line's --kube-version and --api-versions add
	// to it).
	Render ReleaseRender
	// Unapplied names what of the release changes its render and is not
	// applied here (a post-renderer, transformers, …): Images warns, or
	// fails under Strict.
	Unapplied []string
	chart     chartRef
	patches   releasePatches
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
// missingFileHandler Warn, Info and Debug skip it, or (Message set) another
// thing skipped as helmfile skips it, such as a nested helmfile that does not
// define the environment.
type Notice struct {
	Message     string
	Level       string // Warn, Info or Debug
	What        string // "values file", "nested helmfile"
	File        string
	Helmfile    string
	Environment string // for environment values
	Release     string // for release values
}

func (n Notice) String() string {
	if n.Message != "" {
		return n.Message
	}
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
	HelmDefaults *helmDefaults  `json:"helmDefaults"`
	Templates    map[string]any `json:"templates"`
	// Namespace overrides every release's namespace (helmfile's state
	// namespace:).
	Namespace string `json:"namespace"`
	// CommonLabels are added to every release's labels.
	CommonLabels map[string]string `json:"commonLabels"`
	// DefaultInherit names templates every release inherits.
	DefaultInherit stringList `json:"defaultInherit"`
	// APIVersions and KubeVersion are the state's `helm template
	// --api-versions/--kube-version`.
	APIVersions []string `json:"apiVersions"`
	KubeVersion string   `json:"kubeVersion"`
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
	// Inherits lists what the parent passes down (today's helmfile):
	// environments, helmDefaults, repositories, apiVersions, kubeVersion.
	Inherits     []string `json:"inherits"`
	hasSelectors bool
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
	SetString          []setSpec         `json:"setString"`
	SetTemplate        []setSpec         `json:"setTemplate"`
	Secrets            []any             `json:"secrets"`
	MissingFileHandler *string           `json:"missingFileHandler"`
	// What changes the render besides values.
	APIVersions           []string `json:"apiVersions"`
	KubeVersion           string   `json:"kubeVersion"`
	SkipSchemaValidation  *bool    `json:"skipSchemaValidation"`
	StrategicMergePatches []any    `json:"strategicMergePatches"`
	JSONPatches           []any    `json:"jsonPatches"`
	// Inherit names release templates to merge in (inherit.go).
	Inherit inheritList `json:"inherit"`
	// Not applied here: reported (Release.Unapplied).
	Transformers []any   `json:"transformers"`
	Dependencies []any   `json:"dependencies"`
	PostRenderer *string `json:"postRenderer"`
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
	inherited *inheritance
	// helmDefaults, apiVersions and kubeVersion, bases and parts merged.
	helmDefaults helmDefaults
	apiVersions  []string
	kubeVersion  string
	// templates and defaultInherit, for releases' inherit:.
	templates      map[string]any
	defaultInherit []string
	commonLabels   map[string]string
	namespace      string // the state's namespace: override
	// values are the state values, computed once the whole file is read.
	values map[string]any
	// skipped lists the optional values files that were missing, for
	// errors about keys they might have held.
	skipped []string
}

type envEntry struct {
	values  []valuesEntry
	handler *string
	// secrets are sops files, not decrypted here: reported.
	secrets int
}
