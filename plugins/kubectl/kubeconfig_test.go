package kubectl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericclioptions"
)

func TestMissingKubeconfig(t *testing.T) {
	dir := t.TempDir()
	present := filepath.Join(dir, "config")
	if err := os.WriteFile(present, []byte("apiVersion: v1\nkind: Config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	absent := filepath.Join(dir, "none")
	str := func(s string) *string { return &s }
	tests := []struct {
		name   string
		flags  func(*genericclioptions.ConfigFlags)
		env    map[string]string
		looked []string // nil: a kubeconfig is there (or named)
	}{
		{"KUBECONFIG names a missing file", nil, map[string]string{"KUBECONFIG": absent},
			[]string{"KUBECONFIG=" + absent + " (missing)", "--kubeconfig (not given)", "in-cluster service account (KUBERNETES_SERVICE_HOST not set)"}},
		{"KUBECONFIG lists a missing and a present file", nil, map[string]string{"KUBECONFIG": absent + ":" + present}, nil},
		{"--kubeconfig given: client-go reports on it", func(f *genericclioptions.ConfigFlags) { f.KubeConfig = str(absent) }, map[string]string{"KUBECONFIG": absent}, nil},
		{"--server given", func(f *genericclioptions.ConfigFlags) { f.APIServer = str("https://10.0.0.1:6443") }, map[string]string{"KUBECONFIG": absent}, nil},
		{"in a pod", nil, map[string]string{"KUBECONFIG": absent, "KUBERNETES_SERVICE_HOST": "10.96.0.1"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := genericclioptions.NewConfigFlags(true)
			if tt.flags != nil {
				tt.flags(f)
			}
			got := missingKubeconfig(f, func(k string) string { return tt.env[k] })
			if strings.Join(got, "|") != strings.Join(tt.looked, "|") {
				t.Errorf("looked = %q, want %q", got, tt.looked)
			}
		})
	}
}
