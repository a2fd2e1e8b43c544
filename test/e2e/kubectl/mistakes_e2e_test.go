//go:build e2e

package kubectl

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The first mistakes a new user makes with kubectl bkcache, each answered
// with its fix, through the real kubectl. No cluster needed.
func TestMistakesThroughKubectl(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	env := pluginEnv(t, ctx)
	run := func(env []string, args ...string) (string, string, int) {
		cmd := exec.CommandContext(ctx, imagesKubectl, args...)
		cmd.Env = env
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
		}
		return out.String(), errOut.String(), code
	}
	fails := func(t *testing.T, env []string, want []string, args ...string) {
		t.Helper()
		out, errOut, code := run(env, args...)
		if code == 0 {
			t.Errorf("kubectl %s exited 0, want an error\nstdout:\n%s", strings.Join(args, " "), out)
		}
		for _, w := range want {
			if !strings.Contains(errOut, w) {
				t.Errorf("kubectl %s: stderr lacks %q:\n%s", strings.Join(args, " "), w, errOut)
			}
		}
	}
	testdata := "../../../pkg/helmfile/testdata/"

	t.Run("unknown or missing command", func(t *testing.T) {
		fails(t, env, []string{`unknown command "imgaes"`, "did you mean images?"}, "bkcache", "imgaes")
		fails(t, env, []string{"kubectl bkcache needs a command", "--help"}, "bkcache")
	})

	t.Run("undefined environment", func(t *testing.T) {
		fails(t, env, []string{`environment "staging" is not defined in base.yaml.gotmpl (defined: default, prod)`},
			"bkcache", "images", "--from-helmfile", testdata+"bk/base.yaml.gotmpl", "-e", "staging")
		_, errOut, _ := run(env, "bkcache", "images", "--from-helmfile", testdata+"bk/base.yaml.gotmpl", "-e", "staging")
		if strings.Contains(errOut, "map has no entry for key") {
			t.Errorf("an undefined environment is reported as a missing key:\n%s", errOut)
		}
	})

	t.Run("key missing from a release values template", func(t *testing.T) {
		dir := t.TempDir()
		chart, _ := filepath.Abs(testdata + "charts/bkapp")
		files := map[string]string{
			"helmfile.yaml": `environments:
  default:
    values:
    - env.yaml
    - custom.yaml
    missingFileHandler: Warn
releases:
- name: app
  chart: ` + chart + `
  missingFileHandler: Warn
  values:
  - app-values.yaml.gotmpl
  - app-custom-values.yaml.gotmpl
`,
			"env.yaml":               "domain: example.com\n",
			"app-values.yaml.gotmpl": "image:\n  registry: {{ .Values.imageRegistry }}\n",
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		fails(t, env, []string{`environment "default"`, "imageRegistry", "optional values files not found", "custom.yaml", "app-custom-values.yaml.gotmpl"},
			"bkcache", "images", "--from-helmfile", filepath.Join(dir, "helmfile.yaml"))
	})

	t.Run("no kubeconfig", func(t *testing.T) {
		// pluginEnv's KUBECONFIG names a file that does not exist.
		var missing string
		for _, e := range env {
			if v, ok := strings.CutPrefix(e, "KUBECONFIG="); ok {
				missing = v
			}
		}
		want := []string{"no kubeconfig found", "KUBECONFIG=" + missing + " (missing)", "--kubeconfig FILE", "export KUBECONFIG=FILE"}
		fails(t, env, want, "bkcache", "images", "--from-cluster")
		fails(t, env, want, "bkcache", "mirror", "--registry", "10.0.0.5:5500", "--dry-run")
		_, errOut, _ := run(env, "bkcache", "images", "--from-cluster")
		if strings.Contains(errOut, "localhost:8080") {
			t.Errorf("the error names kubectl's fallback address, not the missing kubeconfig:\n%s", errOut)
		}
		// Without KUBECONFIG: the home directory's file is named.
		home := t.TempDir()
		var noEnv []string
		for _, e := range env {
			if !strings.HasPrefix(e, "KUBECONFIG=") && !strings.HasPrefix(e, "HOME=") {
				noEnv = append(noEnv, e)
			}
		}
		fails(t, append(noEnv, "HOME="+home), []string{filepath.Join(home, ".kube", "config") + " (missing)"}, "bkcache", "images", "--from-cluster")
	})

	t.Run("help shows no argument made of backquoted words", func(t *testing.T) {
		out, _, code := run(env, "bkcache", "images", "--help")
		if code != 0 || strings.Contains(out, "--upstreams docker") {
			t.Errorf("images --help:\n%s", out)
		}
	})
}
