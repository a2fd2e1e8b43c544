package helmfile

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/repo"

	"github.com/bkcache/bkcache/pkg/images"
)

// chartRepo serves testdata/charts/bkapp as versions 1.2.3 and 1.3.0 of an
// HTTP chart repository (index.yaml + .tgz) on 127.0.0.1, counting requests.
func chartRepo(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	dir := t.TempDir()
	idx := repo.NewIndexFile()
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
		if err := idx.MustAdd(c.Metadata, filepath.Base(file), "", "sha256:x"); err != nil {
			t.Fatal(err)
		}
	}
	if err := idx.WriteFile(filepath.Join(dir, "index.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	fs := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("test server must listen on 127.0.0.1, got %s", srv.URL)
	}
	return srv.URL, &hits
}

func TestHTTPRepository(t *testing.T) {
	url, hits := chartRepo(t)
	dir := t.TempDir()
	helmfile := `repositories:
  - name: blueking
    url: {{ requiredEnv "BKCACHE_TEST_REPO" }}
---
releases:
  - name: pinned
    chart: blueking/bkapp
    version: 1.2.3
  - name: constrained
    chart: blueking/bkapp
    version: "~1.3"
    set:
      - name: image.repository
        value: blueking/constrained
  - name: latest
    chart: blueking/bkapp
    set:
      - name: image.repository
        value: blueking/latest
`
	if err := os.WriteFile(filepath.Join(dir, "helmfile.yaml.gotmpl"), []byte(helmfile), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BKCACHE_TEST_REPO", url)
	l, err := Images(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := text(t, l, images.WriteOptions{Format: "chart-images"})
	want := lines(
		"bkapp\t1.2.3\thub.bktencent.com/blueking/bk-app-runtime:2.0\thub.bktencent.com/blueking/bk-paas-clean:1.2.3\thub.bktencent.com/blueking/bk-paas:1.2.3",
		"bkapp\t1.3.0\thub.bktencent.com/blueking/bk-app-runtime:2.0\thub.bktencent.com/blueking/bk-paas-clean:1.3.0\thub.bktencent.com/blueking/constrained:1.3.0\thub.bktencent.com/blueking/latest:1.3.0",
	)
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	// One index and two archives for three releases.
	if n := hits.Load(); n != 3 {
		t.Errorf("repository saw %d requests, want 3 (index once, each archive once)", n)
	}

	// --from-chart with --repo, and a version that does not exist.
	l, err = ChartImages(context.Background(), ChartOptions{Chart: "bkapp", RepoURL: url, Version: "1.2.3"})
	if err != nil || !strings.Contains(text(t, l, images.WriteOptions{}), "bk-paas:1.2.3") {
		t.Errorf("--repo: %v", err)
	}
	_, err = ChartImages(context.Background(), ChartOptions{Chart: "bkapp", RepoURL: url, Version: "9.9.9"})
	if err == nil || !strings.Contains(err.Error(), "no chart bkapp version 9.9.9") {
		t.Errorf("missing version error = %v", err)
	}
}

// TestDependencyFromRepository: a chart whose Chart.yaml names a dependency
// that is not vendored gets it from the repository, in memory.
func TestDependencyFromRepository(t *testing.T) {
	url, _ := chartRepo(t)
	checkUmbrellaDependency(t, url, "1.3.0")
}

// checkUmbrellaDependency renders a chart that depends on bkapp from repository
// and checks the dependency's image is found and the user's chart dir stays untouched.
func checkUmbrellaDependency(t *testing.T, repository, version string) {
	t.Helper()
	chartDir := filepath.Join(t.TempDir(), "umbrella")
	if err := os.MkdirAll(filepath.Join(chartDir, "templates"), 0o755); err != nil {
		t.Fatal(err)
	}
	chartYAML := "apiVersion: v2\nname: umbrella\nversion: 0.1.0\ndependencies:\n  - name: bkapp\n    version: " + version + "\n    repository: " + repository + "\n"
	if err := os.WriteFile(filepath.Join(chartDir, "Chart.yaml"), []byte(chartYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := ChartImages(context.Background(), ChartOptions{Chart: chartDir})
	if err != nil {
		t.Fatal(err)
	}
	if got := text(t, l, images.WriteOptions{}); !strings.Contains(got, "hub.bktencent.com/blueking/bk-paas:1.3.0\n") {
		t.Errorf("got %s", got)
	}
	if _, err := os.Stat(filepath.Join(chartDir, "charts")); !os.IsNotExist(err) {
		t.Errorf("the user's chart directory was written to: %v", err)
	}
}
