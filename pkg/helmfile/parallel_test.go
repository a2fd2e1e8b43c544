package helmfile

import (
	"context"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
)

// renderWith renders the chart at dir (loaded afresh: a render prunes
// disabled subcharts) with its defaults on the given number of workers.
func renderWith(t *testing.T, dir string, workers int) (string, string) {
	t.Helper()
	chrt, err := loader.Load(dir)
	if err != nil {
		return "", "load: " + err.Error()
	}
	out, err := renderChart(context.Background(), chrt, "rel", "ns", nil, RenderOptions{Workers: workers})
	if err != nil {
		return "", err.Error()
	}
	return strings.Join(out.Files, "\n---\n"), ""
}

// Rendering a chart's templates in parallel gives byte-identical files and
// the same errors as helm's serial render, on every chart of the tests and
// a large one with subcharts.
func TestParallelRenderIdentical(t *testing.T) {
	var charts []string
	filepath.WalkDir("testdata", func(p string, d fs.DirEntry, err error) error { //nolint:errcheck // test walk
		if err == nil && !d.IsDir() && d.Name() == "Chart.yaml" {
			charts = append(charts, filepath.Dir(p))
		}
		return nil
	})
	charts = append(charts, benchLargeChart(t), includesOthers(t))
	if len(charts) < 10 {
		t.Fatalf("found %d charts", len(charts))
	}
	rendered := 0
	for _, dir := range charts {
		serial, serr := renderWith(t, dir, 1)
		for _, workers := range []int{2, 3, 8} {
			par, perr := renderWith(t, dir, workers)
			if perr != serr {
				t.Errorf("%s, %d workers: error %q, serial %q", dir, workers, perr, serr)
			}
			if par != serial {
				t.Errorf("%s, %d workers: output differs from the serial render (%d vs %d bytes)", dir, workers, len(par), len(serial))
			}
		}
		if serr == "" {
			rendered++
		}
	}
	if rendered < len(charts)/2 {
		t.Errorf("only %d of %d charts rendered", rendered, len(charts))
	}
}

// includesOthers is a chart whose templates include each other by file name
// (the checksum idiom), with helpers, a template holding a define, and a
// subchart.
func includesOthers(t *testing.T) string {
	root := filepath.Join(t.TempDir(), "inc")
	files := map[string]string{
		"Chart.yaml":                    "apiVersion: v2\nname: inc\nversion: 1.0.0\ndependencies:\n  - name: sub\n    version: 1.0.0\n",
		"values.yaml":                   "image: {repository: lib/app, tag: \"1\"}\nsub: {image: lib/sub}\n",
		"templates/_helpers.tpl":        "{{- define \"inc.name\" -}}inc-{{ .Release.Name }}{{- end -}}\n",
		"templates/configmap.yaml":      "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ include \"inc.name\" . }}\ndata:\n  a: \"1\"\n",
		"templates/deployment.yaml":     "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ include \"inc.name\" . }}\n  annotations:\n    checksum/config: {{ include (print $.Template.BasePath \"/configmap.yaml\") . | sha256sum }}\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: {{ .Values.image.repository }}:{{ .Values.image.tag }}\n          env: [{name: T, value: {{ .Template.Name | quote }}}]\n",
		"templates/with-define.yaml":    "{{- define \"inc.extra\" -}}x{{- end -}}\napiVersion: v1\nkind: Service\nmetadata:\n  name: {{ include \"inc.extra\" . }}\n",
		"templates/job.yaml":            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: j\nspec:\n  template:\n    spec:\n      containers: [{name: j, image: {{ .Values.image.repository }}}]\n",
		"charts/sub/Chart.yaml":         "apiVersion: v2\nname: sub\nversion: 1.0.0\n",
		"charts/sub/templates/pod.yaml": "apiVersion: v1\nkind: Pod\nmetadata:\n  name: s\n  annotations: {c: {{ include (print $.Template.BasePath \"/cm.yaml\") . | sha256sum }}}\nspec:\n  containers: [{name: s, image: {{ .Values.image }}}]\n",
		"charts/sub/templates/cm.yaml":  "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: s\n",
	}
	for name, text := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// splitInputs loads the chart at dir and gives what renderSplit takes: the
// chart, its renderable templates and its default values.
func splitInputs(t *testing.T, dir string) (*chart.Chart, []string, chartutil.Values) {
	t.Helper()
	chrt, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	collectRenderable(chrt, &names)
	top, err := chartutil.ToRenderValues(chrt, map[string]any{}, chartutil.ReleaseOptions{Name: "rel", Namespace: "ns"}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	return chrt, names, top
}

// The split gives every renderable template to one worker, and the workers
// render a chart whose templates include each other by name without falling
// back to the serial render.
func TestParallelRenderSplit(t *testing.T) {
	dir := includesOthers(t)
	chrt, names, top := splitInputs(t, dir)
	serial, err := engine.Render(chrt, top)
	if err != nil {
		t.Fatal(err)
	}
	for _, workers := range []int{2, 6} {
		split, err := renderSplit(context.Background(), chrt, top, names, workers)
		if err != nil {
			t.Fatalf("%d workers: %v", workers, err)
		}
		if !maps.Equal(split, serial) {
			t.Errorf("%d workers: %v\nserial: %v", workers, split, serial)
		}
	}
	want := []string{"inc/charts/sub/templates/cm.yaml", "inc/charts/sub/templates/pod.yaml", "inc/templates/configmap.yaml",
		"inc/templates/deployment.yaml", "inc/templates/job.yaml", "inc/templates/with-define.yaml"}
	slices.Sort(names)
	if !slices.Equal(names, want) {
		t.Errorf("renderable %v, want %v", names, want)
	}
}

// A template named only by a name built at run time is not in the other
// workers' copies: the split fails and the render goes serial, identical.
func TestParallelRenderRunTimeName(t *testing.T) {
	dir := includesOthers(t)
	p := filepath.Join(dir, "templates", "dynamic.yaml")
	text := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: d\n  annotations: {c: {{ include (printf \"%s/%s.%s\" $.Template.BasePath \"job\" \"yaml\") . | sha256sum }}}\n"
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	serial, serr := renderWith(t, dir, 1)
	if serr != "" || !strings.Contains(serial, "kind: Job") {
		t.Fatalf("serial render: %q, error %q", serial, serr)
	}
	chrt, names, top := splitInputs(t, dir)
	// Several splits: in some, job.yaml and dynamic.yaml go to different workers.
	failed := false
	for _, workers := range []int{2, 3, 4, 7} {
		if _, err := renderSplit(context.Background(), chrt, top, names, workers); err != nil {
			failed = true
		}
		if par, perr := renderWith(t, dir, workers); par != serial || perr != "" {
			t.Errorf("%d workers: output differs from the serial render, error %q", workers, perr)
		}
	}
	if !failed {
		t.Error("no split failed: job.yaml was parsed in every worker, or the test's include is not a run-time name")
	}
}

func TestSetsValues(t *testing.T) {
	tests := []struct {
		text string
		want bool
	}{
		{`{{- $_ := set .Values "a" 1 }}`, true},
		{`{{- $_ := set $.Values.global "a" 1 }}`, true},
		{`{{ $_ := unset ( .Values.x) "k" }}`, true},
		{`{{ $x := mergeOverwrite .Values.a .Values.b }}`, true},
		{`{{ $x := merge (dict) .Values.a }}`, false}, // a new dict is changed, not the values
		{`{{ .Values.offset }} {{ reset .Values2 }}`, false},
		{`{{ toYaml .Values.resources | nindent 2 }}`, false},
		{`{{ set .ValuesX "a" 1 }}`, false},
		{`{{ set .Values`, true},
		{``, false},
	}
	for _, tt := range tests {
		if got := setsValues([]byte(tt.text)); got != tt.want {
			t.Errorf("setsValues(%q) = %v, want %v", tt.text, got, tt.want)
		}
	}
}

func TestFileNames(t *testing.T) {
	got := map[string]bool{}
	fileNames([]byte(`{{ include (print $.Template.BasePath "/configmap.yaml") . }} a.b.yml x.tpl .yaml y.yamlx z.json_ w-1.toml "s.txt"`), got)
	want := []string{"a.b.yml", "configmap.yaml", "s.txt", "w-1.toml", "x.tpl"}
	if names := slices.Sorted(maps.Keys(got)); !slices.Equal(names, want) {
		t.Errorf("got %v, want %v", names, want)
	}
}
