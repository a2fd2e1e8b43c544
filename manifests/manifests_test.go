package manifests

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// registry-cache.yaml is for kubectl apply: every document must be a named object.
func TestRegistryCacheIsValidYAML(t *testing.T) {
	data, err := os.ReadFile("registry-cache.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kinds := []string{}
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		var obj struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatalf("document is not YAML: %v\n%s", err, doc)
		}
		if obj.APIVersion == "" || obj.Kind == "" || obj.Metadata.Name == "" {
			t.Errorf("document lacks apiVersion, kind or name:\n%s", doc)
		}
		kinds = append(kinds, obj.Kind)
	}
	if got := strings.Join(kinds, ","); got != "ConfigMap,Deployment,Service" {
		t.Errorf("kinds = %s", got)
	}
}
