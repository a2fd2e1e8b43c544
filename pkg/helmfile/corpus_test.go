package helmfile

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/downloader"
	"helm.sh/helm/v3/pkg/getter"
	"sigs.k8s.io/yaml"
)

// The corpus (testdata/corpus) is a platform shaped like public helmfile
// deployments: a library chart shared through file:// three levels up, a
// subchart (aliased twice, by condition and by tag) with its own file://
// dependency, environments in the parent's bases and none in the
// sub-helmfiles, helmDefaults.templateArgs with --api-versions gating a
// workload, and patches that change images.

// corpusRelease is what the helmfile says of one release once templated,
// written out by hand for the helm SDK.
type corpusRelease struct {
	name, namespace, chart, values string
	// patched: image before the release's patches -> after.
	patched map[string]string
}

func corpusReleases(env string) []corpusRelease {
	// The environment's registry, api tag and extras switch.
	v := map[string][3]string{
		"default":    {"docker.io", "2.0", "false"},
		"demo":       {"registry.demo.example", "2.1-demo", "false"},
		"production": {"registry.prod.example", "2.1", "true"},
	}[env]
	reg, t, x := v[0], v[1], v[2]
	rels := []corpusRelease{
		{name: "web", namespace: "web", chart: "web", values: "image: {registry: " + reg + "}\nmonitoring: {enabled: true}\n"},
		{name: "web-canary", namespace: "web", chart: "web", values: "image: {registry: " + reg + ", tag: 1.1.0-rc1}\n"},
		{name: "api", namespace: "api", chart: "web",
			values: "image: {registry: " + reg + ", repository: corp/api, tag: \"" + t + "\"}\ntags: {extras: " + x + "}\n",
			patched: map[string]string{
				reg + "/corp/api:" + t:       reg + "/corp/api-patched:" + t,
				"docker.io/corp/gateway:1.5": "docker.io/corp/gateway-patched:2.0",
			}},
	}
	if env == "default" {
		// Passed nothing, defining no environments: loaded under default only.
		rels = append(rels, corpusRelease{name: "legacy", namespace: "legacy", chart: "metrics"})
	}
	return rels
}

// buildCorpusCharts copies the corpus and vendors the charts' dependencies
// there with helm's own dependency manager, bottom-up, as
// `helm dependency build` run in each chart would.
func buildCorpusCharts(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	if err := copyDir("testdata/corpus", root); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"metrics", "web"} {
		m := &downloader.Manager{
			Out: io.Discard, ChartPath: filepath.Join(root, "platform/charts", c), Getters: getter.Providers{},
			RepositoryConfig: filepath.Join(root, "repositories.yaml"), RepositoryCache: filepath.Join(root, "cache"),
		}
		if err := m.Update(); err != nil {
			t.Fatalf("helm dependency update %s: %v", c, err)
		}
	}
	return root
}

// helmReleaseImages renders a chart with the helm SDK as `helm template
// --include-crds --api-versions …` does and walks the objects.
func helmReleaseImages(t *testing.T, chartPath, name, namespace, values string, apiVersions []string) []string {
	t.Helper()
	chrt, err := loader.Load(chartPath)
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]any{}
	if err := yaml.Unmarshal([]byte(values), &vals); err != nil {
		t.Fatal(err)
	}
	inst := action.NewInstall(&action.Configuration{})
	inst.DryRun, inst.DryRunOption, inst.ClientOnly, inst.IncludeCRDs, inst.Replace = true, "client", true, true, true
	inst.ReleaseName, inst.Namespace, inst.APIVersions = name, namespace, chartutil.VersionSet(apiVersions)
	rel, err := inst.Run(chrt, vals)
	if err != nil {
		t.Fatalf("helm render of %s: %v", name, err)
	}
	return manifestRefs(t, rel.Manifest)
}

func TestCorpus(t *testing.T) {
	built := buildCorpusCharts(t)
	gateway := []string{"gateway.networking.k8s.io/v1"} // helmDefaults.templateArgs
	for _, env := range []string{"default", "demo", "production"} {
		t.Run(env, func(t *testing.T) {
			seen := map[string]bool{}
			for _, r := range corpusReleases(env) {
				imgs := helmReleaseImages(t, filepath.Join(built, "platform/charts", r.chart), r.name, r.namespace, r.values, gateway)
				for from, to := range r.patched {
					i := slices.Index(imgs, canonical(t, from))
					if i < 0 {
						t.Fatalf("release %s: helm rendered no %s for the patch to change: %v", r.name, from, imgs)
					}
					imgs[i] = canonical(t, to)
				}
				for _, img := range imgs {
					seen[img] = true
				}
			}
			want := slices.Sorted(func(yield func(string) bool) {
				for k := range seen {
					if !yield(k) {
						return
					}
				}
			})
			l, err := Images(context.Background(), "testdata/corpus/platform", Options{LoadOptions: LoadOptions{Environment: env}})
			if err != nil {
				t.Fatal(err)
			}
			got := sureRefs(t, l)
			if !slices.Equal(got, want) {
				t.Errorf("images differ from helm's per-release render\n got: %v\nwant: %v", got, want)
			}
		})
	}
	for _, d := range []string{"web", "metrics"} {
		if _, err := os.Stat(filepath.Join("testdata/corpus/platform/charts", d, "charts")); !os.IsNotExist(err) {
			t.Errorf("chart %s: its directory was written to (charts/): %v", d, err)
		}
	}
}

// TestCorpusSelectors: selectors reach the sub-helmfiles' releases.
func TestCorpusSelectors(t *testing.T) {
	for _, c := range []struct {
		env, sel string
		want     []string
	}{
		{"default", "tier=back", []string{"api", "legacy"}},
		{"demo", "tier=back", []string{"api"}},
		{"demo", "tier!=back", []string{"web", "web-canary"}},
		{"production", "name=web-canary", []string{"web-canary"}},
		// helmfile's chart label is the chart's last path element.
		{"demo", "chart=web", []string{"api", "web", "web-canary"}},
		{"demo", "chart=metrics", nil},
		{"default", "chart=metrics", []string{"legacy"}},
		// commonLabels of apps/web's helmfile.
		{"demo", "team=frontend", []string{"web", "web-canary"}},
	} {
		rels, err := LoadReleases(context.Background(), "testdata/corpus/platform", LoadOptions{Environment: c.env, Selectors: []string{c.sel}})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rels {
			got = append(got, r.Name)
		}
		sort.Strings(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("-e %s -l %s: got %v, want %v", c.env, c.sel, got, c.want)
		}
	}
}

// TestCorpusEnvironments: an environment the top helmfile does not define
// is an error naming those it does; a sub-helmfile without environments
// and passed none is skipped with a notice; values templates render once.
func TestCorpusEnvironments(t *testing.T) {
	_, err := LoadReleases(context.Background(), "testdata/corpus/platform", LoadOptions{Environment: "staging"})
	if err == nil || !strings.Contains(err.Error(), `environment "staging" is not defined in helmfile.yaml.gotmpl (defined: default, demo, production)`) {
		t.Errorf("undefined environment: %v", err)
	}
	var notices []string
	l := newLoader(LoadOptions{Environment: "production", Notify: func(n Notice) { notices = append(notices, n.String()) }})
	rels, err := l.load(context.Background(), "testdata/corpus/platform")
	if err != nil {
		t.Fatal(err)
	}
	if len(rels) != 3 {
		t.Errorf("got %d releases, want web, web-canary and api", len(rels))
	}
	if len(notices) != 1 || !strings.Contains(notices[0], "apps/legacy/helmfile.yaml") || !strings.Contains(notices[0], "skipped") {
		t.Errorf("notices: %q", notices)
	}
	if l.valuesRenders != 1 {
		t.Errorf("passwords.yaml.gotmpl rendered %d times, want once", l.valuesRenders)
	}
	// Each part once, but the parent's first, whose bases bring the values
	// it is then rendered with: 2 + 1 (parent), 2 + 2 (web, api).
	if l.partRenders != 7 {
		t.Errorf("%d renders of helmfile parts, want 7", l.partRenders)
	}
	for _, r := range rels {
		if r.Name == "api" && r.StateValues["dbPassword"] == nil {
			t.Errorf("api: the parent's values (dbPassword) did not reach the sub-helmfile: %v", r.StateValues)
		}
	}
}
