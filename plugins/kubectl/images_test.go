package kubectl

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/registry"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/bkcache/bkcache/internal/golden"
	"github.com/bkcache/bkcache/internal/registrytest"
)

const bk = "../../pkg/helmfile/testdata/bk/base.yaml.gotmpl"

// run executes `kubectl bkcache ARGS` in-process, isolated from the user's kubeconfig.
func run(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	var out, errOut bytes.Buffer
	root := NewRootCommand(genericiooptions.IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut})
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

func TestImagesCommand(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stdin    string
		args     []string
		want     []string // substrings of stdout
		wantErr  string   // substring of the error
		notWant  string
		exactOut string
	}{
		{name: "helmfile text", args: []string{"images", "--from-helmfile", bk, "--selector", "name=bk-paas"},
			want: []string{"hub.bktencent.com/blueking/bk-paas:1.2.3\n"}, notWant: "#"},
		{name: "chart-images", args: []string{"images", "--from-helmfile", bk, "-e", "default", "-l", "seq=third", "-o", "chart-images"},
			want: []string{"bkapp\t1.2.3\thub.bktencent.com/blueking/bk-app-runtime:2.0\thub.bktencent.com/blueking/bk-paas-clean:1.2.3\thub.bktencent.com/blueking/bk-paas:1.2.3\n"}},
		{name: "why", args: []string{"images", "--from-helmfile", bk, "--why", "hub.bktencent.com/blueking/bk-paas:1.2.3"},
			want: []string{"release=bk-paas chart=bkapp@1.2.3 file=bkapp/templates/all.yaml object=blueking/Deployment/bk-paas path=spec.template.spec.containers[0].image certainty=sure"}},
		{name: "why unknown", args: []string{"images", "--from-helmfile", bk, "--why", "nope:1"}, wantErr: "not found"},
		{name: "maybe and rewrite", args: []string{"images", "--from-helmfile", bk, "-l", "seq=third", "--include-maybe", "--rewrite-registry", "10.0.0.1:5500"},
			want: []string{"10.0.0.1:5500/blueking/bk-paas:1.2.3\n", "# maybe", "10.0.0.1:5500/blueking/slug-app:1.1.0\n"}},
		// bk-web pulls docker.io/bitnami/redis, bk-redis hub.bktencent.com/bitnami/redis: one name for both is refused.
		{name: "rewrite collision", args: []string{"images", "--from-helmfile", bk, "--rewrite-registry", "10.0.0.1:5500"},
			wantErr: "10.0.0.1:5500/bitnami/redis:7.2.4 <- docker.io/bitnami/redis:7.2.4, hub.bktencent.com/bitnami/redis:7.2.4"},
		{name: "rewrite pairs", args: []string{"images", "--from-helmfile", bk, "--rewrite-registry", "hub.bktencent.com=10.0.0.1:5500", "--rewrite-registry", "docker.io=10.0.0.1:5501"},
			want: []string{"10.0.0.1:5501/bitnami/redis:7.2.4\n", "10.0.0.1:5500/bitnami/redis:7.2.4\n", "quay.io/prometheus/node-exporter:v1.7.0\n"}},
		{name: "registries", args: []string{"images", "--from-helmfile", bk, "-o", "registries"},
			want: []string{"REGISTRY", "docker.io  ", "images come from docker.io although their releases are configured with imageRegistry hub.bktencent.com:\n  docker.io/bitnami/nginx:1.26\n"}},
		{name: "upstreams", args: []string{"images", "--from-helmfile", bk, "--upstreams", "--cache-host", "10.0.0.5"},
			want: []string{"#   kubectl bkcache mirror --registry 10.0.0.5:5500 --upstream hub.bktencent.com\n", "- name: bkhub\n  port: 5500\n  upstream: https://hub.bktencent.com\n"}},
		{name: "upstreams and -o", args: []string{"images", "--from-helmfile", bk, "--upstreams", "-o", "json"}, wantErr: "does not go with"},
		{name: "json", args: []string{"images", "--from-helmfile", bk, "-o", "json", "--rewrite-registry", "c:5000", "-l", "name=bk-paas"},
			want: []string{`"reference": "c:5000/blueking/bk-paas:1.2.3"`, `"original": "hub.bktencent.com/blueking/bk-paas:1.2.3"`, `"release": "bk-paas"`}},
		{name: "chart", args: []string{"images", "--from-chart", "../../pkg/helmfile/testdata/charts/web", "--set", "redis.enabled=false", "--set-string", "image.tag=9", "-n", "ns1", "-o", "yaml"},
			want: []string{"reference: docker.io/bitnami/nginx:9", "namespace: ns1"}, notWant: "redis"},
		{name: "manifests stdin", stdin: "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: busybox}]}\n",
			args: []string{"images", "--from-manifests", "-"}, exactOut: "docker.io/library/busybox:latest\n"},
		{name: "manifests dir", args: []string{"images", "--from-manifests", "testdata"}, exactOut: "docker.io/library/nginx:1.25\n"},
		{name: "keep-going", args: []string{"images", "--from-helmfile", "../../pkg/helmfile/testdata/errors/helmfile.yaml", "--keep-going"},
			want: []string{"hub.bktencent.com/blueking/bk-paas:1.2.3\n"}, wantErr: "2 of 3 releases failed"},
		// file:// dependencies three levels up, environments passed down, templateArgs, patches.
		{name: "corpus", args: []string{"images", "--from-helmfile", "../../pkg/helmfile/testdata/corpus/platform", "-e", "demo", "-l", "tier=back"},
			exactOut: "docker.io/corp/gateway-patched:2.0\nregistry.demo.example/corp/api-patched:2.1-demo\n"},
		{name: "unapplied warns", args: []string{"images", "--from-helmfile", "../../pkg/helmfile/testdata/unapplied/helmfile.yaml"},
			want: []string{"docker.io/bitnami/nginx:"}},
		{name: "strict", args: []string{"images", "--from-helmfile", "../../pkg/helmfile/testdata/unapplied/helmfile.yaml", "--strict"},
			wantErr: "postRenderer ./add-sidecar.sh"},
		{name: "strict without helmfile", args: []string{"images", "--from-chart", "../../pkg/helmfile/testdata/charts/web", "--strict"}, wantErr: "--strict goes with --from-helmfile"},
		{name: "no source", args: []string{"images"}, wantErr: "exactly one of"},
		{name: "two sources", args: []string{"images", "--from-helmfile", bk, "--from-cluster"}, wantErr: "exactly one of"},
		{name: "chart flags without chart", args: []string{"images", "--from-helmfile", bk, "--set", "a=b"}, wantErr: "go with --from-chart"},
		{name: "bad output", args: []string{"images", "--from-helmfile", bk, "-o", "xml"}, wantErr: "unknown output format"},
		{name: "bad registry", args: []string{"images", "--from-helmfile", bk, "--rewrite-registry", "http://x"}, wantErr: "without scheme"},
		{name: "missing file", args: []string{"images", "--from-manifests", "nope.yaml"}, wantErr: "nope.yaml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, err := run(t, tc.stdin, tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error = %v, want %q", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatalf("error: %v\n%s", err, errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if tc.notWant != "" && strings.Contains(out, tc.notWant) {
				t.Errorf("stdout has %q:\n%s", tc.notWant, out)
			}
			if tc.exactOut != "" && out != tc.exactOut {
				t.Errorf("stdout = %q, want %q", out, tc.exactOut)
			}
		})
	}
}

func TestInvalidReferenceWarns(t *testing.T) {
	_, errOut, err := run(t, "", "images", "--from-manifests", "testdata/pods.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut, `warning: invalid image reference "{{ .Values.oops }}"`) || !strings.Contains(errOut, "file=testdata/pods.yaml:9") {
		t.Errorf("stderr = %s", errOut)
	}
}

// TestImagesFromOCIChart: `--from-chart oci://…` against a real registry on
// 127.0.0.1 (plain HTTP), the chart pushed as `helm push` does.
func TestImagesFromOCIChart(t *testing.T) {
	reg := registrytest.StartDistribution(t)
	rc, err := registry.NewClient(registry.ClientOptPlainHTTP(), registry.ClientOptCredentialsFile(filepath.Join(t.TempDir(), "config.json")))
	if err != nil {
		t.Fatal(err)
	}
	c, err := loader.Load("../../pkg/helmfile/testdata/charts/bkapp")
	if err != nil {
		t.Fatal(err)
	}
	file, err := chartutil.Save(c, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Push(data, reg.Addr+"/charts/bkapp:"+c.Metadata.Version); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := run(t, "", "images", "--from-chart", "oci://"+reg.Addr+"/charts/bkapp", "--version", "1.2.3", "--set", "image.tag=7", "-n", "blueking")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	want := "hub.bktencent.com/blueking/bk-app-runtime:2.0\nhub.bktencent.com/blueking/bk-paas-clean:1.2.3\nhub.bktencent.com/blueking/bk-paas:7\n"
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
}

// TestImagesCheck: --check asks a real registry on 127.0.0.1 (plain HTTP) for
// each listed image, repointed at it, lists the missing ones on stdout and
// fails while any is missing.
func TestImagesCheck(t *testing.T) {
	reg := registrytest.StartDistribution(t)
	push := func(repoTag string) {
		t.Helper()
		img, err := registrytest.Image(1, 64, "amd64")
		if err != nil {
			t.Fatal(err)
		}
		if err := registrytest.PushTo(reg.Addr, repoTag, img); err != nil {
			t.Fatal(err)
		}
	}
	chart := "../../pkg/helmfile/testdata/charts/bkapp"
	push("blueking/bk-paas:1.2.3")
	push("blueking/bk-paas:other-tag") // the repository exists, the tag is what counts

	out, errOut, err := run(t, "", "images", "--from-chart", chart, "--check", reg.Addr)
	if err == nil || !strings.Contains(err.Error(), "2 of 3 images missing from "+reg.Addr) ||
		!strings.Contains(err.Error(), "missing "+reg.Addr+"/blueking/bk-paas-clean:1.2.3") {
		t.Errorf("error = %v", err)
	}
	if want := "hub.bktencent.com/blueking/bk-app-runtime:2.0\nhub.bktencent.com/blueking/bk-paas-clean:1.2.3\n"; out != want {
		t.Errorf("stdout = %q, want the missing ones %q (stderr %s)", out, want, errOut)
	}

	push("blueking/bk-app-runtime:2.0")
	push("blueking/bk-paas-clean:1.2.3")
	out, errOut, err = run(t, "", "images", "--from-chart", chart, "--check", reg.Addr)
	if err != nil || out != "" || !strings.Contains(errOut, "all 3 images present in "+reg.Addr) {
		t.Errorf("all present: err %v, stdout %q, stderr %q", err, out, errOut)
	}

	// An unreachable registry is not "missing": it says it could not ask.
	reg.Stop()
	_, _, err = run(t, "", "images", "--from-chart", chart, "--check", reg.Addr)
	if err == nil || !strings.Contains(err.Error(), "3 could not be checked") || strings.Contains(err.Error(), "listed on stdout") {
		t.Errorf("registry down: %v", err)
	}

	for _, args := range [][]string{
		{"images", "--from-chart", chart, "--insecure"},
		{"images", "--from-chart", chart, "--check", "http://x"},
		{"images", "--from-chart", chart, "--check", "x:1", "--why", "y"},
	} {
		if _, _, err := run(t, "", args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

// TestImagesGolden: every output format of `images` on the BlueKing-shaped fixture, byte for
// byte (go test ./plugins/kubectl/ -run Golden -update rewrites testdata/images/).
func TestImagesGolden(t *testing.T) {
	for _, tc := range []struct {
		file string
		args []string
	}{
		{"text.txt", []string{"--include-maybe"}},
		{"list.json", []string{"-o", "json", "-l", "seq=third"}},
		{"list.yaml", []string{"-o", "yaml", "-l", "seq=third"}},
		{"chart-images.txt", []string{"-o", "chart-images"}},
		{"registries.txt", []string{"-o", "registries"}},
		{"upstreams.yaml", []string{"--upstreams", "--cache-host", "10.0.0.5"}},
		{"why.txt", []string{"--why", "hub.bktencent.com/blueking/bk-paas:1.2.3"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			out, errOut, err := run(t, "", append([]string{"images", "--from-helmfile", bk}, tc.args...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, errOut)
			}
			golden.Assert(t, []byte(out), "images/"+tc.file)
		})
	}
}

// --from-manifests takes regular files only (a named pipe would block for
// ever, /dev/zero fill the memory), and an interrupt ends a read of standard
// input that blocks.
func TestImagesRefusesSpecialFiles(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, "/dev/zero"} {
		done := make(chan error, 1)
		go func() { _, _, err := run(t, "", "images", "--from-manifests", p); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("images --from-manifests %s: %v; want a refusal", p, err)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("images --from-manifests %s: still running after 60 s", p)
		}
	}

	r, w := io.Pipe()
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errOut bytes.Buffer
	root := NewRootCommand(genericiooptions.IOStreams{In: r, Out: &out, ErrOut: &errOut})
	root.SetArgs([]string{"images", "--from-manifests", "-"})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Error("images --from-manifests - ended without an error after the interrupt")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("images --from-manifests -: still reading standard input 60 s after the interrupt")
	}
}
