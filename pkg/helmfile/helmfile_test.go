package helmfile

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bkcache/bkcache/pkg/images"
)

const testDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func text(t *testing.T, l *images.List, opts images.WriteOptions) string {
	t.Helper()
	var b bytes.Buffer
	if err := images.Write(&b, l, opts); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func lines(s ...string) string { return strings.Join(s, "\n") + "\n" }

func TestBlueKingLikeHelmfile(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"default environment", Options{}, lines(
			// bk-web: set image.tag, metrics subchart enabled by set, values file.
			"docker.io/bitnami/nginx:1.26",
			"docker.io/bitnami/redis:7.2.4",
			// hook (pre-install) included, test hook left out
			"docker.io/library/alpine:3.19",
			"docker.io/library/busybox@"+testDigest,
			// bk-redis: the global registry override from the environment
			"hub.bktencent.com/bitnami/nginx:1.25",
			"hub.bktencent.com/bitnami/redis:7.2.4",
			// bk-paas: split map in a custom resource, CronJob, .gotmpl values
			"hub.bktencent.com/blueking/bk-app-runtime:2.0",
			"hub.bktencent.com/blueking/bk-paas-clean:1.2.3",
			"hub.bktencent.com/blueking/bk-paas:1.2.3",
			// a custom resource in crds/
			"quay.io/example/widget-from-crds:1.0",
			// the metrics subchart, enabled by a release's set:
			"quay.io/prometheus/node-exporter:v1.7.0",
		)},
		// base-storage's entry names its own selectors (seq=first): as in
		// helmfile, they replace the command line's for that helmfile.
		{"selector", Options{LoadOptions: LoadOptions{Selectors: []string{"seq=third"}}}, lines(
			"docker.io/library/alpine:3.19",
			"docker.io/library/busybox@"+testDigest,
			"hub.bktencent.com/bitnami/nginx:1.25",
			"hub.bktencent.com/bitnami/redis:7.2.4",
			"hub.bktencent.com/blueking/bk-app-runtime:2.0",
			"hub.bktencent.com/blueking/bk-paas-clean:1.2.3",
			"hub.bktencent.com/blueking/bk-paas:1.2.3",
			"quay.io/example/widget-from-crds:1.0",
		)},
		{"prod environment and a negative selector", Options{LoadOptions: LoadOptions{Environment: "prod", Selectors: []string{"seq=fourth,name!=bk-web"}}}, lines(
			"docker.io/library/alpine:3.19",
			"docker.io/library/busybox@"+testDigest,
			// bk-prod-only sets no imageRegistry: the chart's default applies.
			"hub.bktencent.com/blueking/bk-app-runtime:2.0",
			"hub.bktencent.com/blueking/bk-paas-clean:1.2.3",
			"hub.bktencent.com/blueking/prod-only:1.2.3",
			"prod-hub.example.com/bitnami/nginx:1.25",
			"prod-hub.example.com/bitnami/redis:7.2.4",
			"quay.io/example/widget-from-crds:1.0",
		)},
		{"state values set", Options{LoadOptions: LoadOptions{Selectors: []string{"seq=third"}, StateValuesSet: []string{"imageRegistry=10.0.0.1:5500", "bkPaasVersion=9.9.9"}}}, lines(
			"10.0.0.1:5500/bitnami/nginx:1.25",
			"10.0.0.1:5500/bitnami/redis:7.2.4",
			"10.0.0.1:5500/blueking/bk-app-runtime:2.0",
			"10.0.0.1:5500/blueking/bk-paas-clean:1.2.3",
			"10.0.0.1:5500/blueking/bk-paas:9.9.9",
			"docker.io/library/alpine:3.19",
			"docker.io/library/busybox@"+testDigest,
			"quay.io/example/widget-from-crds:1.0",
		)},
		{"state values file", Options{LoadOptions: LoadOptions{Selectors: []string{"name=bk-paas"}, StateValuesFiles: []string{"testdata/bk/environments/prod/values.yaml"}}}, lines(
			"docker.io/library/alpine:3.19",
			"docker.io/library/busybox@"+testDigest,
			"prod-hub.example.com/bitnami/nginx:1.25",
			"prod-hub.example.com/bitnami/redis:7.2.4",
			"prod-hub.example.com/blueking/bk-app-runtime:2.0",
			"prod-hub.example.com/blueking/bk-paas-clean:1.2.3",
			"prod-hub.example.com/blueking/bk-paas:1.2.3",
			"quay.io/example/widget-from-crds:1.0",
		)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Images(ctx, "testdata/bk/base.yaml.gotmpl", tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := text(t, l, images.WriteOptions{}); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestMaybesAndSources(t *testing.T) {
	l, err := Images(context.Background(), "testdata/bk/base.yaml.gotmpl", Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := text(t, l, images.WriteOptions{IncludeMaybe: true})
	_, maybes, _ := strings.Cut(got, "# maybe")
	for _, want := range []string{
		"docker.io/bitnami/redis-exporter:1.58.0",   // images.lock of an enabled subchart
		"hub.bktencent.com/blueking/slug-app:1.1.0", // env var and values; tag from `get` default
		"quay.io/example/sidecar:2.0",               // helm.sh/images annotation
	} {
		if !strings.Contains(maybes, want+"\n") {
			t.Errorf("maybes lack %s:\n%s", want, maybes)
		}
	}
	img, ok := l.Why("hub.bktencent.com/blueking/bk-paas:1.2.3")
	if !ok || len(img.Sources) != 2 {
		t.Fatalf("why: %+v %v", img, ok)
	}
	s := img.Sources[0]
	if s.Certainty != images.Sure {
		s = img.Sources[1]
	}
	if !strings.HasSuffix(s.Helmfile, "base-blueking.yaml.gotmpl") || s.Release != "bk-paas" || s.Chart != "bkapp" || s.ChartVersion != "1.2.3" ||
		s.File != "bkapp/templates/all.yaml" || s.Kind != "Deployment" || s.Namespace != "blueking" || s.Path != "spec.template.spec.containers[0].image" {
		t.Errorf("source = %+v", s)
	}
	if _, ok := l.Why("docker.io/library/busybox:test-only"); ok {
		t.Error("test hook image listed without IncludeTests")
	}
	if _, ok := l.Why("should/not-appear"); ok {
		t.Error("installed: false release rendered")
	}
}

func TestIncludeTestsAndHelmfileD(t *testing.T) {
	t.Setenv("BKCACHE_TEST_REGISTRY", "reg.test")
	l, err := Images(context.Background(), "testdata/hfd", Options{RenderOptions: RenderOptions{IncludeTests: true}})
	if err != nil {
		t.Fatal(err)
	}
	got := text(t, l, images.WriteOptions{})
	for _, want := range []string{"docker.io/library/busybox:test-only\n", "reg.test/blueking/bk-paas:"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "redis") {
		t.Errorf("redis subchart disabled by set: still rendered:\n%s", got)
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	_, err := Images(ctx, "testdata/errors/helmfile.yaml", Options{Parallel: 1})
	var re *ReleaseError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "testdata/errors/helmfile.yaml") {
		t.Fatalf("error = %v, want a ReleaseError naming the helmfile", err)
	}

	l, err := Images(ctx, "testdata/errors/helmfile.yaml", Options{KeepGoing: true})
	var errs *Errors
	if !errors.As(err, &errs) || len(errs.Failed) != 2 || errs.Total != 3 {
		t.Fatalf("keep-going error = %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		`2 of 3 releases failed`,
		`release "missing" (chart ../charts/does-not-exist)`, "does-not-exist: no such directory",
		`release "broken" (chart ../charts/web)`, "broken-values.yaml", "line 2",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if got := text(t, l, images.WriteOptions{}); !strings.Contains(got, "hub.bktencent.com/blueking/bk-paas:1.2.3") {
		t.Errorf("keep-going lost the good release: %s", got)
	}

	_, err = Images(ctx, "testdata/errors/badtemplate.yaml.gotmpl", Options{})
	if err == nil || !strings.Contains(err.Error(), "badtemplate.yaml.gotmpl:4:") {
		t.Errorf("template error = %v, want file:line", err)
	}
	_, err = Images(ctx, "testdata/bk/base.yaml.gotmpl", Options{LoadOptions: LoadOptions{Environment: "staging"}})
	if err == nil || !strings.Contains(err.Error(), `environment "staging" is not defined`) {
		t.Errorf("unknown environment error = %v", err)
	}
	_, err = Images(ctx, "testdata/bk", Options{})
	if err == nil || !strings.Contains(err.Error(), "--from-helmfile testdata/bk/base.yaml.gotmpl") {
		t.Errorf("directory without helmfile.yaml: %v", err)
	}
	_, err = Images(ctx, "testdata/hfd", Options{LoadOptions: LoadOptions{Selectors: []string{"name=none"}}})
	if err == nil || !strings.Contains(err.Error(), "no release selected") {
		t.Errorf("empty selection: %v", err)
	}
}

func TestChartImages(t *testing.T) {
	l, err := ChartImages(context.Background(), ChartOptions{
		Chart: "testdata/charts/web", ValuesFiles: []string{"testdata/chartvalues/values.yaml"},
		Set: []string{"metrics.enabled=true,redis.enabled=false"}, SetString: []string{"image.tag=2"},
		RenderOptions: RenderOptions{KubeVersion: "v1.30.0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := lines(
		"docker.io/library/alpine:3.19",
		"docker.io/library/busybox@"+testDigest,
		"my.registry:5000/bitnami/nginx:2",
		"quay.io/example/widget-from-crds:1.0",
		"quay.io/prometheus/node-exporter:v1.7.0",
	)
	if got := text(t, l, images.WriteOptions{}); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	img, _ := l.Why("quay.io/prometheus/node-exporter:v1.7.0")
	if len(img.Sources) == 0 || img.Sources[0].Release != "web" || img.Sources[0].Namespace != "default" {
		t.Errorf("release name defaults to the chart's: %+v", img.Sources)
	}
	if _, err := ChartImages(context.Background(), ChartOptions{Chart: "testdata/charts/nope"}); err == nil || !strings.Contains(err.Error(), "--repo") {
		t.Errorf("missing chart error = %v", err)
	}
	if _, err := ChartImages(context.Background(), ChartOptions{Chart: "testdata/charts/web", RenderOptions: RenderOptions{KubeVersion: "banana"}}); err == nil || !strings.Contains(err.Error(), "--kube-version") {
		t.Errorf("bad kube version error = %v", err)
	}
}

// TestReleaseTemplates: release fields rendered per release, as helmfile
// renders release templates: .Release.Name in values paths, .Release.Labels in
// the chart, .Release.Namespace in setTemplate, valuesTemplate,
// installedTemplate, in a plain helmfile.yaml and an escaped .gotmpl one.
func TestReleaseTemplates(t *testing.T) {
	ctx := context.Background()
	l, err := Images(ctx, "testdata/reltmpl/helmfile.yaml", Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := lines(
		"docker.io/library/alpine:3.19",
		"docker.io/library/busybox@"+testDigest,
		"quay.io/example/widget-from-crds:1.0",
		"reg.example/bitnami/from-web-values:blueking-apps",
		"reg.example/blueking/bk-app-runtime:2.0",
		"reg.example/blueking/bk-paas-clean:1.2.3",
		"reg.example/blueking/from-bk-app-values:blueking-apps",
	)
	if got := text(t, l, images.WriteOptions{}); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	img, _ := l.Why("reg.example/blueking/from-bk-app-values:blueking-apps")
	if len(img.Sources) == 0 || img.Sources[0].Namespace != "blueking-apps" || img.Sources[0].Release != "bk-app" {
		t.Errorf("sources = %+v", img.Sources)
	}
	// Labels are rendered before selection.
	rels, err := LoadReleases(ctx, "testdata/reltmpl/helmfile.yaml", LoadOptions{Selectors: []string{"team=web-team"}})
	if err != nil || len(rels) != 1 || rels[0].Name != "web" || rels[0].Namespace != "blueking-apps" {
		t.Errorf("select by a templated label: %v %+v", err, rels)
	}

	l, err = Images(ctx, "testdata/reltmpl/escaped.yaml.gotmpl", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := text(t, l, images.WriteOptions{}); !strings.Contains(got, "hub.bktencent.com/blueking/from-bk-app-values:reg-example-default\n") {
		t.Errorf("escaped release templates: got\n%s", got)
	}

	// A broken release template names the helmfile, the release and the field.
	dir := t.TempDir()
	bad := "releases:\n  - name: x\n    chart: ../charts/bkapp\n    values:\n      - values/{{ .Release.Nope }}.yaml\n"
	if err := os.WriteFile(filepath.Join(dir, "helmfile.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Images(ctx, dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "helmfile.yaml") || !strings.Contains(err.Error(), `release "x": values[0]`) {
		t.Errorf("template error = %v", err)
	}
}
