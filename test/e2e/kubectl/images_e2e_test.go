//go:build e2e

// End-to-end: the plugin built onto PATH and run through the real kubectl,
// as an operator runs it. No cluster needed.
//
//	go test -tags e2e ./test/e2e/kubectl/ -run Images
package kubectl

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// The real kubectl, as an operator runs it.
const imagesKubectl = "/usr/bin/kubectl"

// pluginEnv builds the plugin into a temporary directory and returns an
// environment in which the real kubectl finds it, with no cluster configured.
func pluginEnv(t *testing.T, ctx context.Context) []string {
	t.Helper()
	if _, err := os.Stat(imagesKubectl); err != nil {
		t.Fatalf("the real kubectl is needed at %s: %v", imagesKubectl, err)
	}
	bin := t.TempDir()
	build := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(bin, "kubectl-bkcache"), "github.com/bkcache/bkcache/cmd/kubectl-bkcache")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return append(os.Environ(),
		"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"KUBECONFIG="+filepath.Join(t.TempDir(), "none"))
}

func TestImagesThroughKubectl(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	env := pluginEnv(t, ctx)
	kubectl := func(stdin string, args ...string) (string, string, error) {
		cmd := exec.CommandContext(ctx, imagesKubectl, args...)
		cmd.Env = env
		cmd.Stdin = strings.NewReader(stdin)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return out.String(), errOut.String(), err
	}
	testdata := "../../../pkg/helmfile/testdata/"

	start := time.Now()
	out, errOut, err := kubectl("", "bkcache", "images", "--from-helmfile", testdata+"bk/base.yaml.gotmpl")
	if err != nil {
		t.Fatalf("kubectl bkcache images: %v\n%s", err, errOut)
	}
	t.Logf("rendered the fixture helmfile through kubectl in %v", time.Since(start))
	want := strings.Join([]string{
		"docker.io/bitnami/nginx:1.26",
		"docker.io/bitnami/redis:7.2.4",
		"docker.io/library/alpine:3.19",
		"docker.io/library/busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"hub.bktencent.com/bitnami/nginx:1.25",
		"hub.bktencent.com/bitnami/redis:7.2.4",
		"hub.bktencent.com/blueking/bk-app-runtime:2.0",
		"hub.bktencent.com/blueking/bk-paas-clean:1.2.3",
		"hub.bktencent.com/blueking/bk-paas:1.2.3",
		"quay.io/example/widget-from-crds:1.0",
		"quay.io/prometheus/node-exporter:v1.7.0",
	}, "\n") + "\n"
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}

	out, _, err = kubectl("", "bkcache", "images", "--from-helmfile", testdata+"bk/base.yaml.gotmpl", "-e", "default", "--selector", "seq=third", "-o", "chart-images")
	if err != nil || !strings.Contains(out, "bkapp\t1.2.3\thub.bktencent.com/blueking/bk-app-runtime:2.0\t") {
		t.Errorf("chart-images: %v\n%s", err, out)
	}

	out, _, err = kubectl("kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: busybox:1.36}]}\n",
		"bkcache", "images", "--from-manifests", "-")
	if err != nil || out != "docker.io/library/busybox:1.36\n" {
		t.Errorf("--from-manifests -: %v %q", err, out)
	}

	// Failures exit non-zero and name the helmfile, release and chart.
	out, errOut, err = kubectl("", "bkcache", "images", "--from-helmfile", testdata+"errors/helmfile.yaml", "--keep-going")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("--keep-going with failures: err = %v, want a non-zero exit", err)
	}
	if !strings.Contains(out, "hub.bktencent.com/blueking/bk-paas:1.2.3") ||
		!strings.Contains(errOut, `2 of 3 releases failed`) || !strings.Contains(errOut, `release "missing" (chart ../charts/does-not-exist)`) {
		t.Errorf("--keep-going: stdout %q stderr %q", out, errOut)
	}

	// --check against a real registry on 127.0.0.1: the missing images on
	// stdout, a non-zero exit while any is missing.
	reg := registrytest.StartDistribution(t)
	img, err := registrytest.Image(1, 64, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if err := registrytest.PushTo(reg.Addr, "blueking/bk-paas:1.2.3", img); err != nil {
		t.Fatal(err)
	}
	out, errOut, err = kubectl("", "bkcache", "images", "--from-chart", testdata+"charts/bkapp", "--check", reg.Addr)
	if !errors.As(err, &ee) || ee.ExitCode() == 0 || out != "hub.bktencent.com/blueking/bk-app-runtime:2.0\nhub.bktencent.com/blueking/bk-paas-clean:1.2.3\n" ||
		!strings.Contains(errOut, "2 of 3 images missing from "+reg.Addr) {
		t.Errorf("--check: err %v, stdout %q, stderr %q", err, out, errOut)
	}

	out, _, err = kubectl("", "bkcache", "images", "--help")
	if err != nil || !strings.Contains(out, "kubectl bkcache images --from-helmfile") {
		t.Errorf("help: %v\n%s", err, out)
	}
}
