package helmfile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
)

// TestPackagedChartWithDependencies: a .tgz whose charts/ holds its
// dependencies (helm's own dependency build, then packaged) renders as
// helm renders it, aliases and conditions included.
func TestPackagedChartWithDependencies(t *testing.T) {
	built := buildCorpusCharts(t)
	chrt, err := loader.Load(filepath.Join(built, "platform/charts/web"))
	if err != nil {
		t.Fatal(err)
	}
	tgz, err := chartutil.Save(chrt, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range [][]string{nil, {"monitoring.enabled=true", "tags.extras=true"}} {
		want := walkHelmRender(t, tgz, set, false)
		l, err := ChartImages(context.Background(), ChartOptions{Chart: tgz, Set: set})
		if err != nil {
			t.Fatal(err)
		}
		got := sureRefs(t, l)
		if !slices.Equal(got, want) {
			t.Errorf("set %v: got %v, want %v", set, got, want)
		}
	}
}

// TestMissingFileDependency: a file:// dependency that is not there names
// the path looked for and the Chart.yaml that asked, and nothing is written.
func TestMissingFileDependency(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "charts", "app")
	if err := os.MkdirAll(filepath.Join(dir, "templates"), 0o755); err != nil {
		t.Fatal(err)
	}
	chartYAML := "apiVersion: v2\nname: app\nversion: 0.1.0\ndependencies:\n  - name: lib\n    version: 1.x\n    repository: file://../../lib\n"
	if err := os.WriteFile(filepath.Join(dir, "Chart.yaml"), []byte(chartYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ChartImages(context.Background(), ChartOptions{Chart: dir})
	lookedFor := filepath.Join(filepath.Dir(filepath.Dir(dir)), "lib")
	if err == nil || !strings.Contains(err.Error(), lookedFor+" not found") || !strings.Contains(err.Error(), filepath.Join(dir, "Chart.yaml")) {
		t.Errorf("error = %v, want it to name %s and %s", err, lookedFor, filepath.Join(dir, "Chart.yaml"))
	}
	if _, err := os.Stat(filepath.Join(dir, "charts")); !os.IsNotExist(err) {
		t.Errorf("the chart's directory was written to: %v", err)
	}
}

// TestUnappliedStrict: a release with a post-renderer is a warning naming
// it, and an error with Strict.
func TestUnappliedStrict(t *testing.T) {
	dir := t.TempDir()
	chart := filepath.Join(buildCorpusCharts(t), "platform/charts/metrics")
	hf := "releases:\n  - name: m\n    chart: " + chart + "\n    postRenderer: ./rewrite.sh\n"
	if err := os.WriteFile(filepath.Join(dir, "helmfile.yaml"), []byte(hf), 0o644); err != nil {
		t.Fatal(err)
	}
	var warned []string
	opts := Options{LoadOptions: LoadOptions{Notify: func(n Notice) { warned = append(warned, n.String()) }}}
	if _, err := Images(context.Background(), dir, opts); err != nil {
		t.Fatal(err)
	}
	if len(warned) != 1 || !strings.Contains(warned[0], `release "m"`) || !strings.Contains(warned[0], "postRenderer ./rewrite.sh") {
		t.Errorf("warnings: %q", warned)
	}
	opts.Strict = true
	if _, err := Images(context.Background(), dir, opts); err == nil || !strings.Contains(err.Error(), "postRenderer ./rewrite.sh") {
		t.Errorf("strict: %v", err)
	}
}

// TestRenderArgs: helm template flags in helmDefaults are applied or named.
func TestRenderArgs(t *testing.T) {
	var r ReleaseRender
	un := r.parseArgs("helmDefaults.templateArgs", []string{"--api-versions", "a/v1,b/v1", "-a=c/v1", "--kube-version=v1.31.0", "--is-upgrade", "--no-hooks", "--dry-run=server", "--include-crds", "--set", "x=1", "--post-renderer", "p", "--frobnicate"})
	if !slices.Equal(r.APIVersions, []string{"a/v1", "b/v1", "c/v1"}) || r.KubeVersion != "v1.31.0" || !r.IsUpgrade || !r.NoHooks || !slices.Equal(r.Set, []string{"x=1"}) {
		t.Errorf("parsed %+v", r)
	}
	if !slices.Equal(un, []string{"helmDefaults.templateArgs --post-renderer p", "helmDefaults.templateArgs --frobnicate"}) {
		t.Errorf("unapplied %q", un)
	}
}

// TestGluedDocumentSeparators: a "---" that a template's {{- glued to the
// next line ("---apiVersion: v1", as raw charts render) starts a document,
// as helm reads it; patches see the same documents.
func TestGluedDocumentSeparators(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "raw")
	files := map[string]string{
		"Chart.yaml":           "apiVersion: v2\nname: raw\nversion: 0.1.0\n",
		"templates/raw.yaml":   "{{- range $i, $r := .Values.templates }}\n{{- if gt $i 0 }}\n---\n{{- end }}\n{{- tpl $r $ }}\n{{- end }}\n",
		"templates/NOTES.txt":  "notes\n",
		"templates/_empty.tpl": "",
	}
	for name, text := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var values strings.Builder
	values.WriteString("templates:\n")
	for _, n := range []string{"a", "b", "c"} {
		fmt.Fprintf(&values, "  - |\n    apiVersion: v1\n    kind: Pod\n    metadata: {name: %s}\n    spec: {containers: [{name: %s, image: docker.io/library/%s:1}]}\n", n, n, n)
	}
	if err := os.WriteFile(filepath.Join(dir, "values.yaml"), []byte(values.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	want := walkHelmRender(t, dir, nil, false)
	if len(want) != 3 {
		t.Fatalf("helm found %v, want three pods' images", want)
	}
	l, err := ChartImages(context.Background(), ChartOptions{Chart: dir})
	if err != nil {
		t.Fatal(err)
	}
	got := sureRefs(t, l)
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
