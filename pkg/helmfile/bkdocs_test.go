package helmfile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/bkcache/bkcache/pkg/images"
)

// bkdocsTree copies testdata/bkdocs (BlueKing 7.2's helmfile tree as BKDocs
// describes it, fresh: no optional files) into a temporary directory and
// writes the given files into it.
func bkdocsTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "blueking")
	if err := copyDir("testdata/bkdocs", dir); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// The optional files of the tree, as BKDocs names them.
var bkdocsOptional = []string{
	"environments/default/custom.yaml",
	"environments/default/mysql-custom-values.yaml.gotmpl",
	"environments/default/redis-custom-values.yaml.gotmpl",
	"environments/default/bkrepo-custom-values.yaml.gotmpl",
	"environments/default/bkcmdb-custom-values.yaml.gotmpl",
	"environments/default/bkci-custom-values.yaml.gotmpl",
	"environments/default/bkmonitoroperator-custom-values.yaml.gotmpl",
	"environments/default/bknodeman-custom-values.yaml.gotmpl",
}

// The fresh tree's lists: exact.
var (
	bkdocsFreshSure = lines(
		// escaped imageRegistry: hard-coded in bk-repo and bk-ci (bk-ci issue 11171)
		"docker.io/bitnami/kubectl:1.28.4",
		"docker.io/library/busybox:1.36",
		"docker.io/library/mysql:8.0.36",
		"hub.bktencent.com/bitnami/mongodb:6.0.2-debian-11-r1",
		"hub.bktencent.com/bitnami/mysql:8.0.36-debian-12-r8",
		"hub.bktencent.com/bitnami/redis:7.2.4-debian-12-r9",
		"hub.bktencent.com/bkce/bkci-backend:2.1.0",
		"hub.bktencent.com/bkce/bkci-gateway:2.1.0",
		"hub.bktencent.com/blueking/bk-nodeman:2.4.4",
		"hub.bktencent.com/blueking/bkrepo-gateway:1.6.0",
		"hub.bktencent.com/blueking/bkrepo-repository:1.6.0",
		// tag "" rendered as "v" + appVersion
		"hub.bktencent.com/blueking/cmdb_adminserver:v3.11.3",
		"hub.bktencent.com/blueking/cmdb_apiserver:v3.11.3",
		// tag defaulted to appVersion
		"quay.io/bkmonitor/operator:3.6.0",
	)
	bkdocsFreshMaybe = lines(
		"hub.bktencent.com/bitnami/exporter:1.0",                         // bk-redis: the chart's metrics image, registry from global.imageRegistry
		"hub.bktencent.com/bitnami/mysqld-exporter:0.15.1-debian-12-r8",  // bk-mysql: its metrics image, disabled
		"hub.bktencent.com/bkci/agent-runner:2.1.0",                      // JSON in a ConfigMap value
		"hub.bktencent.com/bkci/ci:latest",                               // YAML in a ConfigMap value, and values
		"hub.bktencent.com/blueking/bkmonitorbeat:3.4.0",                 // --bkmonitorbeat-image REF
		"hub.bktencent.com/blueking/cmdb_monstache:v3.11.3",              // disabled component: "v" + appVersion as the chart renders its siblings
		"hub.bktencent.com/blueking/nodeman-plugin:2.4.0",                // split map without registry: the release's
		"hub.bktencent.com/blueking/nodeman-saas:2.4.4",                  // env var without registry: the release's
		"quay.io/bkmonitor/operator-webhook:3.6.0",                       // disabled webhook: appVersion as the operator's tag
		"quay.io/prometheus-operator/prometheus-config-reloader:v0.70.0", // --prometheus-config-reloader=REF
	)
)

func bkdocsImages(t *testing.T, dir string, opts Options) (*images.List, []Notice, int) {
	t.Helper()
	var notices []Notice
	opts.Notify = func(n Notice) { notices = append(notices, n) }
	l := newLoader(opts.LoadOptions)
	if _, err := l.load(context.Background(), filepath.Join(dir, "base.yaml.gotmpl")); err != nil {
		t.Fatalf("load: %v", err)
	}
	notices = nil // the run below reports them again
	list, err := Images(context.Background(), filepath.Join(dir, "base.yaml.gotmpl"), opts)
	if err != nil {
		t.Fatalf("images: %v", err)
	}
	return list, notices, l.loads
}

func TestBKDocsFresh(t *testing.T) {
	dir := bkdocsTree(t, nil)
	l, notices, loads := bkdocsImages(t, dir, Options{})
	if got := text(t, l, images.WriteOptions{}); got != bkdocsFreshSure {
		t.Errorf("sure list:\n%s\nwant:\n%s", got, bkdocsFreshSure)
	}
	got := text(t, l, images.WriteOptions{IncludeMaybe: true})
	_, maybes, _ := strings.Cut(got, "(values, env vars, ConfigMaps, chart annotations)\n")
	if maybes != bkdocsFreshMaybe {
		t.Errorf("maybe list:\n%s\nwant:\n%s", maybes, bkdocsFreshMaybe)
	}
	// Each missing optional file once, at its level, and the run goes on.
	var reported []string
	for _, n := range notices {
		rel, _ := filepath.Rel(dir, n.File)
		reported = append(reported, rel)
		if n.Level != "Warn" || n.What != "values file" {
			t.Errorf("notice %+v: want a Warn about a values file", n)
		}
		if rel == "environments/default/custom.yaml" && n.Environment != "default" {
			t.Errorf("custom.yaml notice names no environment: %+v", n)
		}
		if strings.HasSuffix(rel, "-custom-values.yaml.gotmpl") && n.Release == "" {
			t.Errorf("release overlay notice names no release: %+v", n)
		}
	}
	if !slices.Equal(slices.Sorted(slices.Values(reported)), slices.Sorted(slices.Values(bkdocsOptional))) {
		t.Errorf("notices:\n  %s\nwant once each:\n  %s", strings.Join(reported, "\n  "), strings.Join(bkdocsOptional, "\n  "))
	}
	if n := notices[0].String(); n != "optional values file "+filepath.Join(dir, "environments/default/custom.yaml")+" not found (missingFileHandler: Warn)" {
		t.Errorf("notice text = %q", n)
	}
	// base.yaml.gotmpl names base-blueking five times and base-storage twice:
	// each is loaded once.
	if loads != 3 {
		t.Errorf("%d helmfile loads, want 3 (base, base-storage, base-blueking)", loads)
	}
	checkMaybeTags(t, l, dir)
}

// checkMaybeTags: no maybe ends in a tag its chart does not render or its
// values do not spell.
func checkMaybeTags(t *testing.T, l *images.List, dir string) {
	t.Helper()
	var written strings.Builder
	_ = filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && strings.Contains(filepath.Base(p), "values") {
			b, _ := os.ReadFile(p)
			written.Write(b)
		}
		return nil
	})
	rendered := map[string]map[string]bool{} // chart -> tags of its sure images
	for _, img := range l.Images(false) {
		for _, s := range img.Sources {
			if rendered[s.Chart] == nil {
				rendered[s.Chart] = map[string]bool{}
			}
			rendered[s.Chart][tagOf(img.Reference)] = true
		}
	}
	for _, img := range l.Images(true) {
		if img.Certainty != images.Maybe {
			continue
		}
		tag := tagOf(img.Reference)
		for _, s := range img.Sources {
			spelled := regexp.MustCompile(`(tag: "?|:)` + regexp.QuoteMeta(tag) + `\b`).MatchString(written.String())
			if !rendered[s.Chart][tag] && !spelled {
				t.Errorf("maybe %s: tag %s is neither rendered by chart %s nor written in its values (%s)", img.Reference, tag, s.Chart, s.Reason)
			}
		}
	}
}

func TestBKDocsCustomised(t *testing.T) {
	dir := bkdocsTree(t, map[string]string{
		"environments/default/custom.yaml":                      "imageRegistry: registry.intra:5000\n",
		"environments/default/bkcmdb-custom-values.yaml.gotmpl": "monstache:\n  enabled: true\n",
		"environments/default/bkci-custom-values.yaml.gotmpl":   "dispatch:\n  defaultImage: bkci/ci:ubuntu\n",
		// created empty, as BKDocs tells users to
		"environments/default/bkrepo-custom-values.yaml.gotmpl": "",
	})
	l, notices, _ := bkdocsImages(t, dir, Options{})
	want := lines(
		"docker.io/bitnami/kubectl:1.28.4",
		"docker.io/library/busybox:1.36",
		"docker.io/library/mysql:8.0.36",
		"quay.io/bkmonitor/operator:3.6.0",
		"registry.intra:5000/bitnami/mongodb:6.0.2-debian-11-r1",
		"registry.intra:5000/bitnami/mysql:8.0.36-debian-12-r8",
		"registry.intra:5000/bitnami/redis:7.2.4-debian-12-r9",
		"registry.intra:5000/bkce/bkci-backend:2.1.0",
		"registry.intra:5000/bkce/bkci-gateway:2.1.0",
		"registry.intra:5000/blueking/bk-nodeman:2.4.4",
		"registry.intra:5000/blueking/bkrepo-gateway:1.6.0",
		"registry.intra:5000/blueking/bkrepo-repository:1.6.0",
		"registry.intra:5000/blueking/cmdb_adminserver:v3.11.3",
		"registry.intra:5000/blueking/cmdb_apiserver:v3.11.3",
		"registry.intra:5000/blueking/cmdb_monstache:v3.11.3", // enabled by bkcmdb-custom-values
	)
	if got := text(t, l, images.WriteOptions{}); got != want {
		t.Errorf("sure list:\n%s\nwant:\n%s", got, want)
	}
	got := text(t, l, images.WriteOptions{IncludeMaybe: true})
	_, maybes, _ := strings.Cut(got, "(values, env vars, ConfigMaps, chart annotations)\n")
	wantMaybe := lines(
		"quay.io/bkmonitor/operator-webhook:3.6.0",
		"quay.io/prometheus-operator/prometheus-config-reloader:v0.70.0",
		"registry.intra:5000/bitnami/exporter:1.0",
		"registry.intra:5000/bitnami/mysqld-exporter:0.15.1-debian-12-r8",
		"registry.intra:5000/bkci/agent-runner:2.1.0",
		"registry.intra:5000/bkci/ci:ubuntu",
		"registry.intra:5000/blueking/bkmonitorbeat:3.4.0",
		"registry.intra:5000/blueking/nodeman-plugin:2.4.0",
		"registry.intra:5000/blueking/nodeman-saas:2.4.4",
	)
	if maybes != wantMaybe {
		t.Errorf("maybe list:\n%s\nwant:\n%s", maybes, wantMaybe)
	}
	if len(notices) != len(bkdocsOptional)-4 {
		t.Errorf("%d notices, want %d: %+v", len(notices), len(bkdocsOptional)-4, notices)
	}
	checkMaybeTags(t, l, dir)
	doc, err := images.Result(l, images.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var esc []string
	for _, u := range doc.Registries {
		esc = append(esc, fmt.Sprintf("%s:%d/%d", u.Registry, u.Images, len(u.Escaped)))
	}
	if strings.Join(esc, " ") != "registry.intra:5000:11/0 docker.io:3/3 quay.io:1/1" {
		t.Errorf("registries (registry:images/escaped) = %s", strings.Join(esc, " "))
	}

	// --state-values-set wins over custom.yaml. (base.yaml.gotmpl's nested
	// helmfiles name their own selectors, which replace -l as in helmfile:
	// select a release in base-blueking.yaml.gotmpl, as BKDocs does.)
	l, err = Images(context.Background(), filepath.Join(dir, "base-blueking.yaml.gotmpl"), Options{LoadOptions: LoadOptions{StateValuesSet: []string{"imageRegistry=10.0.0.5:5000"}, Selectors: []string{"name=bk-cmdb"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := text(t, l, images.WriteOptions{}); got != lines("10.0.0.5:5000/blueking/cmdb_adminserver:v3.11.3", "10.0.0.5:5000/blueking/cmdb_apiserver:v3.11.3", "10.0.0.5:5000/blueking/cmdb_monstache:v3.11.3") {
		t.Errorf("--state-values-set imageRegistry: %s", got)
	}
}

// TestMissingFileHandlers: Error (the default) stops the run naming the
// helmfile, the release or environment, and the file; Warn, Info and Debug
// report the file once at their level and go on.
// edit replaces old with new in a fixture's file, which must hold old.
func edit(t *testing.T, dir, file, old, new string) {
	t.Helper()
	p := filepath.Join(dir, file)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s lacks %q", file, old)
	}
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), old, new)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestMissingFileHandlers(t *testing.T) {
	ctx := context.Background()
	t.Run("release Error", func(t *testing.T) {
		dir := bkdocsTree(t, map[string]string{"environments/default/custom.yaml": ""})
		edit(t, dir, "base-blueking.yaml.gotmpl", "missingFileHandler: Warn", "missingFileHandler: Error")
		_, err := Images(ctx, filepath.Join(dir, "base-blueking.yaml.gotmpl"), Options{LoadOptions: LoadOptions{Selectors: []string{"name=bk-cmdb"}}})
		var re *ReleaseError
		if !errors.As(err, &re) {
			t.Fatalf("error = %v, want a ReleaseError", err)
		}
		for _, want := range []string{"base-blueking.yaml.gotmpl", `release "bk-cmdb"`, "environments/default/bkcmdb-custom-values.yaml.gotmpl not found", "missingFileHandler: Error", `set missingFileHandler: Warn on release "bk-cmdb"`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q:\n%v", want, err)
			}
		}
	})
	t.Run("release default is Error", func(t *testing.T) {
		dir := bkdocsTree(t, map[string]string{"environments/default/custom.yaml": ""})
		edit(t, dir, "base-blueking.yaml.gotmpl", "    missingFileHandler: Warn\n", "")
		_, err := Images(ctx, filepath.Join(dir, "base-blueking.yaml.gotmpl"), Options{LoadOptions: LoadOptions{Selectors: []string{"name=bk-ci"}}})
		if err == nil || !strings.Contains(err.Error(), `release "bk-ci"`) || !strings.Contains(err.Error(), "bkci-custom-values.yaml.gotmpl not found") {
			t.Errorf("error = %v", err)
		}
	})
	t.Run("environment Error", func(t *testing.T) {
		dir := bkdocsTree(t, nil)
		edit(t, dir, "env.yaml", "missingFileHandler: Warn", "missingFileHandler: Error")
		_, err := Images(ctx, filepath.Join(dir, "base.yaml.gotmpl"), Options{})
		for _, want := range []string{"base.yaml.gotmpl", `environment "default"`, "environments/default/custom.yaml not found", `set missingFileHandler: Warn on environment "default"`} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q: %v", want, err)
			}
		}
	})
	t.Run("Info and Debug", func(t *testing.T) {
		dir := bkdocsTree(t, nil)
		edit(t, dir, "env.yaml", "missingFileHandler: Warn", "missingFileHandler: Info")
		edit(t, dir, "base-blueking.yaml.gotmpl", "missingFileHandler: Warn", "missingFileHandler: Debug")
		var got []string
		_, err := Images(ctx, filepath.Join(dir, "base-blueking.yaml.gotmpl"), Options{LoadOptions: LoadOptions{
			Selectors: []string{"name=bk-ci"}, Notify: func(n Notice) { got = append(got, n.Level+" "+filepath.Base(n.File)) },
		}})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"Info custom.yaml", "Debug bkci-custom-values.yaml.gotmpl"}
		if !slices.Equal(got, want) {
			t.Errorf("notices %q, want %q", got, want)
		}
	})
	t.Run("invalid handler", func(t *testing.T) {
		dir := bkdocsTree(t, nil)
		edit(t, dir, "env.yaml", "missingFileHandler: Warn", "missingFileHandler: Ignore")
		_, err := Images(ctx, filepath.Join(dir, "base.yaml.gotmpl"), Options{})
		if err == nil || !strings.Contains(err.Error(), `missingFileHandler "Ignore": use Error, Warn, Info or Debug`) {
			t.Errorf("error = %v", err)
		}
	})
}

// TestMissingFileHandlersNested: a missing nested helmfile, and keys that a
// missing optional file might have held.
func TestMissingFileHandlersNested(t *testing.T) {
	ctx := context.Background()
	t.Run("nested helmfile", func(t *testing.T) {
		dir := bkdocsTree(t, nil)
		edit(t, dir, "base.yaml.gotmpl", "helmfiles:\n", "helmfiles:\n  - path: base-extra.yaml.gotmpl\n")
		_, err := Images(ctx, filepath.Join(dir, "base.yaml.gotmpl"), Options{})
		if err == nil || !strings.Contains(err.Error(), "nested helmfile base-extra.yaml.gotmpl: no such file") {
			t.Errorf("error = %v", err)
		}
		edit(t, dir, "defaults.yaml", "helmDefaults:", "missingFileHandler: Warn\nhelmDefaults:")
		var got []Notice
		_, err = Images(ctx, filepath.Join(dir, "base.yaml.gotmpl"), Options{LoadOptions: LoadOptions{Notify: func(n Notice) { got = append(got, n) }}})
		nested := slices.IndexFunc(got, func(n Notice) bool { return n.What == "nested helmfile" })
		if err != nil || nested < 0 || filepath.Base(got[nested].File) != "base-extra.yaml.gotmpl" {
			t.Errorf("helmfile-level Warn: %v %+v", err, got)
		}
	})
	t.Run("a key from a missing optional file", func(t *testing.T) {
		dir := bkdocsTree(t, nil)
		edit(t, dir, "base-blueking.yaml.gotmpl", "namespace: {{ $.Values.namespace }}", "namespace: {{ $.Values.customNamespace }}")
		_, err := Images(ctx, filepath.Join(dir, "base.yaml.gotmpl"), Options{})
		for _, want := range []string{"base-blueking.yaml.gotmpl", `environment "default"`, `map has no entry for key "customNamespace"`, "environments/default/custom.yaml"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q: %v", want, err)
			}
		}
	})
	t.Run("a key missing in an environment values file", func(t *testing.T) {
		dir := bkdocsTree(t, map[string]string{"environments/default/custom.yaml.gotmpl": "bkDomain: {{ .Values.domain.nope }}\n"})
		edit(t, dir, "env.yaml", "custom.yaml\n", "custom.yaml.gotmpl\n")
		_, err := Images(ctx, filepath.Join(dir, "base.yaml.gotmpl"), Options{})
		for _, want := range []string{`environment "default"`, "custom.yaml.gotmpl:1:", `map has no entry for key "nope"`} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q: %v", want, err)
			}
		}
	})
}

// TestHelmfile0142Syntax: what BlueKing's pinned helmfile accepted is read.
func TestHelmfile0142Syntax(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	chart, _ := filepath.Abs("testdata/charts/bkapp")
	write := func(name, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A plain .yaml helmfile with templates (0.142 rendered every helmfile),
	// charts: for releases, .Environment.Values, escaped release templates,
	// helmfiles[].values, and a base whose paths are relative to the
	// helmfile that names it.
	write("common/env.yaml", "environments:\n  default:\n    values:\n      - env/values.yaml\n")
	write("env/values.yaml", "reg: r.example\ntag: \"7\"\n")
	write("helmfile.yaml", `bases:
  - common/env.yaml
---
helmfiles:
  - path: sub/helmfile.yaml
    values:
      - subReg: {{ .Environment.Values.reg }}
charts:
  - name: app
    chart: `+chart+`
    set:
      - name: imageRegistry
        value: {{ .Values.reg }}
      - name: image.tag
        value: {{ .StateValues.tag | quote }}
  - name: named
    chart: `+chart+`
    valuesTemplate:
      - image:
          repository: blueking/{{`+"`{{ .Release.Name }}`"+`}}
`)
	write("sub/helmfile.yaml", "releases:\n  - name: sub\n    chart: "+chart+"\n    set:\n      - name: imageRegistry\n        value: {{ .Values.subReg }}\n      - name: image.repository\n        value: blueking/sub\n")
	l, err := Images(ctx, filepath.Join(dir, "helmfile.yaml"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := text(t, l, images.WriteOptions{})
	for _, want := range []string{"r.example/blueking/bk-paas:7\n", "r.example/blueking/sub:1.2.3\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("lacks %s:\n%s", want, got)
		}
	}
	if !strings.Contains(got, "hub.bktencent.com/blueking/named:1.2.3\n") {
		t.Errorf("escaped release template {{`{{ .Release.Name }}`}}: got\n%s", got)
	}

	// A plain .yaml of today's helmfile whose {{ }} is text for a chart's tpl
	// (no such state value): read as written, not refused.
	write("v1/helmfile.yaml", "releases:\n  - name: tpl\n    chart: "+chart+"\n    values:\n      - note: \"{{ .Values.chartOnly.key }}\"\n        image: {repository: blueking/tpl}\n")
	l, err = Images(ctx, filepath.Join(dir, "v1/helmfile.yaml"), Options{})
	if err != nil || !strings.Contains(text(t, l, images.WriteOptions{}), "hub.bktencent.com/blueking/tpl:1.2.3\n") {
		t.Errorf("today's plain helmfile with chart text in {{ }}: %v", err)
	}
}

// TestNestedHelmfilesMemoised: the 615-byte chain of issue 14 (each of 18
// levels names the next twice, 2^18 paths) loads each helmfile once and
// lists its release once.
func TestNestedHelmfilesMemoised(t *testing.T) {
	dir := t.TempDir()
	chart, _ := filepath.Abs("testdata/charts/bkapp")
	for i := 0; i < 18; i++ {
		next := fmt.Sprintf("h%02d.yaml", i+1)
		body := fmt.Sprintf("helmfiles: [%s, %s]\n", next, next)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("h%02d.yaml", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	leaf := "releases:\n  - name: leaf\n    chart: " + chart + "\n"
	if err := os.WriteFile(filepath.Join(dir, "h18.yaml"), []byte(leaf), 0o644); err != nil {
		t.Fatal(err)
	}
	l := newLoader(LoadOptions{})
	rels, err := l.load(context.Background(), filepath.Join(dir, "h00.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rels) != 1 || rels[0].Name != "leaf" {
		t.Errorf("releases = %+v, want the leaf once", rels)
	}
	if l.loads != 19 {
		t.Errorf("%d helmfile loads, want 19 (one per file)", l.loads)
	}
	// Different state values are a different load.
	if err := os.WriteFile(filepath.Join(dir, "v.yaml"), []byte("helmfiles:\n  - path: h17.yaml\n    values: [{a: 1}]\n  - path: h17.yaml\n    values: [{a: 2}]\n  - path: h17.yaml\n    values: [{a: 1}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l = newLoader(LoadOptions{})
	rels, err = l.load(context.Background(), filepath.Join(dir, "v.yaml"))
	if err != nil || len(rels) != 2 || l.loads != 5 {
		t.Errorf("by values: %d releases, %d loads (want 2 and 5: v, h17 and h18 twice), %v", len(rels), l.loads, err)
	}
	// A helmfile that names itself is a cycle, not a hang.
	if err := os.WriteFile(filepath.Join(dir, "self.yaml"), []byte("helmfiles: [self.yaml]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadReleases(context.Background(), filepath.Join(dir, "self.yaml"), LoadOptions{}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("self-inclusion: %v", err)
	}
}
