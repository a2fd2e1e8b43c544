package kubectl

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
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
			want: []string{"bkapp 1.2.3 hub.bktencent.com/blueking/bk-app-runtime:2.0 hub.bktencent.com/blueking/bk-paas-clean:1.2.3 hub.bktencent.com/blueking/bk-paas:1.2.3\n"}},
		{name: "why", args: []string{"images", "--from-helmfile", bk, "--why", "hub.bktencent.com/blueking/bk-paas:1.2.3"},
			want: []string{"release=bk-paas chart=bkapp@1.2.3 file=bkapp/templates/all.yaml object=blueking/Deployment/bk-paas path=spec.template.spec.containers[0].image certainty=sure"}},
		{name: "why unknown", args: []string{"images", "--from-helmfile", bk, "--why", "nope:1"}, wantErr: "not found"},
		{name: "maybe and rewrite", args: []string{"images", "--from-helmfile", bk, "--include-maybe", "--rewrite-registry", "10.0.0.1:5500"},
			want: []string{"10.0.0.1:5500/blueking/bk-paas:1.2.3\n", "# maybe", "10.0.0.1:5500/blueking/slug-app:1.1.0\n"}},
		{name: "json", args: []string{"images", "--from-helmfile", bk, "-o", "json", "--rewrite-registry", "c:5000", "-l", "name=bk-paas"},
			want: []string{`"reference": "c:5000/blueking/bk-paas:1.2.3"`, `"original": "hub.bktencent.com/blueking/bk-paas:1.2.3"`, `"release": "bk-paas"`}},
		{name: "chart", args: []string{"images", "--from-chart", "../../pkg/helmfile/testdata/charts/web", "--set", "redis.enabled=false", "--set-string", "image.tag=9", "-n", "ns1", "-o", "yaml"},
			want: []string{"reference: docker.io/bitnami/nginx:9", "namespace: ns1"}, notWant: "redis"},
		{name: "manifests stdin", stdin: "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: busybox}]}\n",
			args: []string{"images", "--from-manifests", "-"}, exactOut: "docker.io/library/busybox:latest\n"},
		{name: "manifests dir", args: []string{"images", "--from-manifests", "testdata"}, exactOut: "docker.io/library/nginx:1.25\n"},
		{name: "keep-going", args: []string{"images", "--from-helmfile", "../../pkg/helmfile/testdata/errors/helmfile.yaml", "--keep-going"},
			want: []string{"hub.bktencent.com/blueking/bk-paas:1.2.3\n"}, wantErr: "2 of 3 releases failed"},
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
