//go:build e2e

package kubectl

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/pkg/cache"
)

// bkdocsKubectl builds the plugin onto PATH and returns a runner of a
// command in dir (the real kubectl when the command is "kubectl"), as an
// operator runs it from $INSTALL_DIR/blueking.
func bkdocsKubectl(t *testing.T, ctx context.Context) func(dir, command string, args ...string) (string, string, error) {
	t.Helper()
	env := pluginEnv(t, ctx)
	return func(dir, command string, args ...string) (string, string, error) {
		if command == "kubectl" {
			command = imagesKubectl
		}
		cmd := exec.CommandContext(ctx, command, args...)
		cmd.Dir, cmd.Env = dir, env
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return out.String(), errOut.String(), err
	}
}

// bkdocsCopy copies pkg/helmfile/testdata/bkdocs (BKDocs' tree, fresh) and
// writes the given files into the copy.
func bkdocsCopy(t *testing.T, files map[string]string) string {
	t.Helper()
	src := "../../../pkg/helmfile/testdata/bkdocs"
	dst := filepath.Join(t.TempDir(), "blueking")
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dst, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func bkLines(s ...string) string { return strings.Join(s, "\n") + "\n" }

// TestImagesBKDocsThroughKubectl: BlueKing's helmfile tree as a new user has
// it right after a fresh install (no optional files) and customised, through
// the real kubectl: exact lists, each missing optional file warned about
// once, exit 0; missingFileHandler: Error stops naming the helmfile, the
// release and the file; -o registries, --upstreams, -o chart-images.
func TestImagesBKDocsThroughKubectl(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	run := bkdocsKubectl(t, ctx)
	kubectl := func(dir string, args ...string) (string, string, error) { return run(dir, "kubectl", args...) }

	fresh, wantSure, freshErr := bkdocsFresh(t, kubectl)
	bkdocsOutputs(t, run, fresh, wantSure, freshErr)
	bkdocsCustomised(t, kubectl)
	bkdocsStrict(t, kubectl)
}

// kubectlRunner runs the real kubectl in a directory: stdout, stderr, error.
type kubectlRunner func(dir string, args ...string) (string, string, error)

// bkdocsFresh: the tree right after a fresh install lists exactly its images
// and warns once about each missing optional file. It returns the tree, the
// list and the run's stderr (a pipe).
func bkdocsFresh(t *testing.T, kubectl kubectlRunner) (fresh, wantSure, errOut string) {
	fresh = bkdocsCopy(t, nil)
	start := time.Now()
	out, errOut, err := kubectl(fresh, "bkcache", "images", "--from-helmfile", "base.yaml.gotmpl")
	if err != nil {
		t.Fatalf("fresh tree: %v\n%s", err, errOut)
	}
	t.Logf("fresh BKDocs tree (7 releases, 5 nested helmfile entries of one file) through kubectl in %v", time.Since(start).Round(time.Millisecond))
	wantSure = bkLines(
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
		"hub.bktencent.com/blueking/cmdb_adminserver:v3.11.3",
		"hub.bktencent.com/blueking/cmdb_apiserver:v3.11.3",
		"quay.io/bkmonitor/operator:3.6.0",
	)
	if out != wantSure {
		t.Errorf("fresh tree, stdout:\n%s\nwant:\n%s", out, wantSure)
	}
	optional := []string{
		"environments/default/custom.yaml not found (missingFileHandler: Warn)",
		"environments/default/mysql-custom-values.yaml.gotmpl of release bk-mysql not found (missingFileHandler: Warn)",
		"environments/default/redis-custom-values.yaml.gotmpl of release bk-redis not found (missingFileHandler: Warn)",
		"environments/default/bkrepo-custom-values.yaml.gotmpl of release bk-repo not found (missingFileHandler: Warn)",
		"environments/default/bkcmdb-custom-values.yaml.gotmpl of release bk-cmdb not found (missingFileHandler: Warn)",
		"environments/default/bkci-custom-values.yaml.gotmpl of release bk-ci not found (missingFileHandler: Warn)",
		"environments/default/bkmonitoroperator-custom-values.yaml.gotmpl of release bk-monitor-operator not found (missingFileHandler: Warn)",
		"environments/default/bknodeman-custom-values.yaml.gotmpl of release bk-nodeman not found (missingFileHandler: Warn)",
	}
	for _, w := range optional {
		if n := strings.Count(errOut, "warning: optional values file "+w+"\n"); n != 1 {
			t.Errorf("warning %q printed %d times, want once:\n%s", w, n, errOut)
		}
	}
	if n := strings.Count(errOut, "\n"); n != len(optional) {
		t.Errorf("stderr has %d lines, want the %d warnings only:\n%s", n, len(optional), errOut)
	}

	return fresh, wantSure, errOut
}

// bkdocsOutputs: --include-maybe, --why, -o registries, --upstreams and -o
// chart-images of the fresh tree; the summary goes to a terminal only (pipeErr:
// the fresh run's stderr).
func bkdocsOutputs(t *testing.T, run func(dir, command string, args ...string) (string, string, error), fresh, wantSure, pipeErr string) {
	kubectl := func(dir string, args ...string) (string, string, error) { return run(dir, "kubectl", args...) }
	out, _, err := kubectl(fresh, "bkcache", "images", "--from-helmfile", "base.yaml.gotmpl", "--include-maybe")
	wantMaybe := wantSure + "# maybe: pulled at run time perhaps (values, env vars, ConfigMaps, chart annotations)\n" + bkLines(
		"hub.bktencent.com/bitnami/exporter:1.0",
		"hub.bktencent.com/bitnami/mysqld-exporter:0.15.1-debian-12-r8",
		"hub.bktencent.com/bkci/agent-runner:2.1.0",
		"hub.bktencent.com/bkci/ci:latest",
		"hub.bktencent.com/blueking/bkmonitorbeat:3.4.0",
		"hub.bktencent.com/blueking/cmdb_monstache:v3.11.3",
		"hub.bktencent.com/blueking/nodeman-plugin:2.4.0",
		"hub.bktencent.com/blueking/nodeman-saas:2.4.4",
		"quay.io/bkmonitor/operator-webhook:3.6.0",
		"quay.io/prometheus-operator/prometheus-config-reloader:v0.70.0",
	)
	if err != nil || out != wantMaybe {
		t.Errorf("--include-maybe: %v\n%s\nwant:\n%s", err, out, wantMaybe)
	}
	out, _, err = kubectl(fresh, "bkcache", "images", "--from-helmfile", "base.yaml.gotmpl", "--include-maybe", "--why", "hub.bktencent.com/blueking/cmdb_monstache:v3.11.3")
	if err != nil || !strings.Contains(out, `reason=split image map in the chart values; tag "v" + appVersion 3.11.3 of chart bk-cmdb, as its templates render it; registry hub.bktencent.com from image.registry`) ||
		!strings.Contains(out, "path=monstache.image") {
		t.Errorf("--why of a completed maybe: %v\n%s", err, out)
	}

	// As BKDocs: the intranet registry given on the command line.
	out, _, err = kubectl(fresh, "bkcache", "images", "--from-helmfile", "base.yaml.gotmpl", "--state-values-set", "imageRegistry=registry.intra:5000")
	if err != nil || !strings.Contains(out, "registry.intra:5000/blueking/cmdb_adminserver:v3.11.3\n") || strings.Contains(out, "hub.bktencent.com") {
		t.Errorf("--state-values-set imageRegistry: %v\n%s", err, out)
	}

	// Which registries, and the images that escape imageRegistry.
	out, _, err = kubectl(fresh, "bkcache", "images", "--from-helmfile", "base.yaml.gotmpl", "-o", "registries")
	wantReg := `REGISTRY           IMAGES  MAYBE  ESCAPED
hub.bktencent.com  10      0      0
docker.io          3       0      3
quay.io            1       0      1

3 images come from docker.io although their releases are configured with imageRegistry hub.bktencent.com:
  docker.io/bitnami/kubectl:1.28.4
  docker.io/library/busybox:1.36
  docker.io/library/mysql:8.0.36

1 image comes from quay.io although their releases are configured with imageRegistry hub.bktencent.com:
  quay.io/bkmonitor/operator:3.6.0
`
	if err != nil || out != wantReg {
		t.Errorf("-o registries: %v\n%s\nwant:\n%s", err, out, wantReg)
	}
	// On a terminal, -o text adds a one-line summary on stderr (script(1)
	// gives the command a pseudo-terminal); in a pipe it does not.
	tty, _, err := run(fresh, "script", "-qec", "kubectl bkcache images --from-helmfile base.yaml.gotmpl", "/dev/null")
	if err != nil || !strings.Contains(tty, "# 14 images from 3 registries: hub.bktencent.com 10, docker.io 3, quay.io 1; 4 escape imageRegistry hub.bktencent.com") {
		t.Errorf("summary on a terminal: %v\n%s", err, tty)
	}
	if strings.Contains(pipeErr, "registries:") {
		t.Errorf("summary printed to a pipe:\n%s", pipeErr)
	}

	// --upstreams: a caches file `docker bkcache up -f` takes. `up` has no
	// dry run: the file is checked with up's own parser (pkg/cache).
	out, _, err = kubectl(fresh, "bkcache", "images", "--from-helmfile", "base.yaml.gotmpl", "--upstreams", "--cache-host", "10.0.0.5")
	if err != nil {
		t.Fatalf("--upstreams: %v\n%s", err, out)
	}
	caches, err := cache.ParseCachesFile([]byte(out))
	if err != nil {
		t.Fatalf("docker bkcache up -f would refuse the --upstreams output: %v\n%s", err, out)
	}
	var got []string
	for _, c := range caches {
		got = append(got, c.Name+" "+c.Upstream+" "+string(rune('0'+c.Port-5500)))
	}
	if strings.Join(got, ", ") != "bkhub https://hub.bktencent.com 0, docker-io https://registry-1.docker.io 1, quay-io https://quay.io 2" {
		t.Errorf("caches: %s", strings.Join(got, ", "))
	}
	for _, want := range []string{"#   kubectl bkcache mirror --registry 10.0.0.5:5500 --upstream hub.bktencent.com\n", "#   kubectl bkcache mirror --registry 10.0.0.5:5501 --upstream docker.io\n", "#   kubectl bkcache mirror --registry 10.0.0.5:5502 --upstream quay.io\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("--upstreams lacks %q:\n%s", want, out)
		}
	}

	// Each registry to its own cache; one name for two registries' images is refused.
	out, _, err = kubectl(fresh, "bkcache", "images", "--from-helmfile", "base.yaml.gotmpl",
		"--rewrite-registry", "hub.bktencent.com=10.0.0.5:5500", "--rewrite-registry", "docker.io=10.0.0.5:5501")
	if err != nil || !strings.Contains(out, "10.0.0.5:5501/library/busybox:1.36\n") || !strings.Contains(out, "10.0.0.5:5500/blueking/bk-nodeman:2.4.4\n") || !strings.Contains(out, "quay.io/bkmonitor/operator:3.6.0\n") {
		t.Errorf("--rewrite-registry pairs: %v\n%s", err, out)
	}

	// chart-images: TABs, so that both `awk '{print $1}'` and `cut -f1` read the chart.
	out, _, err = kubectl(fresh, "bkcache", "images", "--from-helmfile", "base.yaml.gotmpl", "-o", "chart-images")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) < 3 || f[0] != strings.Fields(line)[0] || !strings.Contains(f[2], "/") {
			t.Errorf("chart-images line %q: want chart<TAB>version<TAB>image…", line)
		}
	}
	if !strings.Contains(out, "bk-cmdb\t3.11.3\thub.bktencent.com/blueking/cmdb_adminserver:v3.11.3\thub.bktencent.com/blueking/cmdb_apiserver:v3.11.3\n") {
		t.Errorf("chart-images:\n%s", out)
	}

}

// bkdocsCustomised: customised as BKDocs tells users to: custom.yaml and some overlays.
func bkdocsCustomised(t *testing.T, kubectl kubectlRunner) {
	custom := bkdocsCopy(t, map[string]string{
		"environments/default/custom.yaml":                      "imageRegistry: registry.intra:5000\n",
		"environments/default/bkcmdb-custom-values.yaml.gotmpl": "monstache:\n  enabled: true\n",
		"environments/default/bkci-custom-values.yaml.gotmpl":   "dispatch:\n  defaultImage: bkci/ci:ubuntu\n",
		"environments/default/bkrepo-custom-values.yaml.gotmpl": "",
	})
	out, errOut, err := kubectl(custom, "bkcache", "images", "--from-helmfile", "base.yaml.gotmpl")
	wantCustom := bkLines(
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
		"registry.intra:5000/blueking/cmdb_monstache:v3.11.3",
	)
	if err != nil || out != wantCustom {
		t.Errorf("customised tree: %v\n%s\nwant:\n%s\nstderr:\n%s", err, out, wantCustom, errOut)
	}
	if strings.Count(errOut, "warning: ") != 4 || strings.Contains(errOut, "custom.yaml not found") || strings.Contains(errOut, "bkcmdb-custom") {
		t.Errorf("customised tree: warnings for the 4 missing overlays only:\n%s", errOut)
	}

}

// bkdocsStrict: with missingFileHandler: Error on the releases the run stops,
// naming the helmfile, the release and the file.
func bkdocsStrict(t *testing.T, kubectl kubectlRunner) {
	strict := bkdocsCopy(t, map[string]string{"environments/default/custom.yaml": ""})
	p := filepath.Join(strict, "base-blueking.yaml.gotmpl")
	b, _ := os.ReadFile(p)
	if err := os.WriteFile(p, bytes.ReplaceAll(b, []byte("missingFileHandler: Warn"), []byte("missingFileHandler: Error")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := kubectl(strict, "bkcache", "images", "--from-helmfile", "base-blueking.yaml.gotmpl", "-l", "seq=second")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("missingFileHandler: Error: err = %v, want a non-zero exit\n%s", err, out)
	}
	for _, want := range []string{"helmfile base-blueking.yaml.gotmpl", `release "bk-cmdb"`, "values file environments/default/bkcmdb-custom-values.yaml.gotmpl not found (missingFileHandler: Error"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}
