package helmfile

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/registry"

	"github.com/bkcache/bkcache/internal/registrytest"
	"github.com/bkcache/bkcache/pkg/images"
)

// ociCharts pushes testdata/charts/bkapp as versions 1.2.3 and 1.3.0 into a
// real registry (distribution 2.8, registry:2's code) on 127.0.0.1, the way
// `helm push` does, and returns the registry's host:port.
func ociCharts(t *testing.T) string {
	t.Helper()
	reg := registrytest.StartDistribution(t)
	rc, err := registry.NewClient(registry.ClientOptPlainHTTP(), registry.ClientOptCredentialsFile(filepath.Join(t.TempDir(), "config.json")))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, v := range []string{"1.2.3", "1.3.0"} {
		c, err := loader.Load("testdata/charts/bkapp")
		if err != nil {
			t.Fatal(err)
		}
		c.Metadata.Version, c.Metadata.AppVersion = v, v
		file, err := chartutil.Save(c, dir)
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rc.Push(data, reg.Addr+"/charts/bkapp:"+v); err != nil {
			t.Fatalf("push bkapp %s into %s: %v", v, reg.Addr, err)
		}
	}
	return reg.Addr
}

func TestOCIRegistry(t *testing.T) {
	addr := ociCharts(t)
	ctx := context.Background()

	// A helmfile: an `oci: true` repository (helmfile's spelling: no scheme)
	// and oci:// chart references, pinned, constrained and with a tag.
	dir := t.TempDir()
	hf := `repositories:
  - name: charts
    url: {{ requiredEnv "BKCACHE_TEST_OCI" }}/charts
    oci: true
---
releases:
  - name: pinned
    chart: charts/bkapp
    version: 1.2.3
  - name: constrained
    chart: oci://{{ requiredEnv "BKCACHE_TEST_OCI" }}/charts/bkapp
    version: "~1.3"
    set:
      - name: image.repository
        value: blueking/constrained
  - name: latest
    chart: charts/bkapp
    set:
      - name: image.repository
        value: blueking/latest
`
	if err := os.WriteFile(filepath.Join(dir, "helmfile.yaml.gotmpl"), []byte(hf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BKCACHE_TEST_OCI", addr)
	l, err := Images(ctx, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := lines(
		"bkapp\t1.2.3\thub.bktencent.com/blueking/bk-app-runtime:2.0\thub.bktencent.com/blueking/bk-paas-clean:1.2.3\thub.bktencent.com/blueking/bk-paas:1.2.3",
		"bkapp\t1.3.0\thub.bktencent.com/blueking/bk-app-runtime:2.0\thub.bktencent.com/blueking/bk-paas-clean:1.3.0\thub.bktencent.com/blueking/constrained:1.3.0\thub.bktencent.com/blueking/latest:1.3.0",
	)
	if got := text(t, l, images.WriteOptions{Format: "chart-images"}); got != want {
		t.Errorf("helmfile over OCI: got\n%s\nwant\n%s", got, want)
	}

	// --from-chart oci://…, with --version, without (the highest), and with
	// the tag in the reference.
	for _, tc := range []struct{ chart, version, want string }{
		{"oci://" + addr + "/charts/bkapp", "1.2.3", "hub.bktencent.com/blueking/bk-paas:1.2.3\n"},
		{"oci://" + addr + "/charts/bkapp", "", "hub.bktencent.com/blueking/bk-paas:1.3.0\n"},
		{"oci://" + addr + "/charts/bkapp", ">=1.0 <1.3", "hub.bktencent.com/blueking/bk-paas:1.2.3\n"},
		{"oci://" + addr + "/charts/bkapp:1.2.3", "", "hub.bktencent.com/blueking/bk-paas:1.2.3\n"},
	} {
		l, err := ChartImages(ctx, ChartOptions{Chart: tc.chart, Version: tc.version})
		if err != nil {
			t.Errorf("--from-chart %s --version %q: %v", tc.chart, tc.version, err)
			continue
		}
		if got := text(t, l, images.WriteOptions{}); !strings.Contains(got, tc.want) {
			t.Errorf("--from-chart %s --version %q: got\n%s\nwant a line %s", tc.chart, tc.version, got, tc.want)
		}
	}

	// A version the registry lacks names the chart and the version.
	_, err = ChartImages(ctx, ChartOptions{Chart: "oci://" + addr + "/charts/bkapp", Version: "9.9.9"})
	if err == nil || !strings.Contains(err.Error(), "charts/bkapp") || !strings.Contains(err.Error(), "9.9.9") {
		t.Errorf("missing version error = %v", err)
	}
}

// TestOCIDependency: a chart whose Chart.yaml takes a dependency from an
// oci:// repository on a loopback registry (plain HTTP) gets it, in memory.
func TestOCIDependency(t *testing.T) {
	addr := ociCharts(t)
	checkUmbrellaDependency(t, "oci://"+addr+"/charts", "~1.3")
}
