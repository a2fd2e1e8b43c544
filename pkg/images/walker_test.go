package images

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestMaybeRules: maybes never invent a tag or a registry, are plausible
// images, keep their reason, and come from the forms operators use.
func TestMaybeRules(t *testing.T) {
	manifests := `
kind: Deployment
metadata: {name: op}
spec:
  template:
    spec:
      containers:
      - name: op
        image: quay.io/example/operator:v1.0
        args:
        - --prometheus-config-reloader=quay.io/prometheus-operator/prometheus-config-reloader:v0.70.0
        - --sidecar-image
        - quay.io/example/sidecar:2.1
        - --default-image=bkci/ci:latest
        - --log-level=info
        - --metrics-port
        - "8080"
        - --upstream=hub.bktencent.com:443
        env:
        - {name: SLUG_IMAGE, value: blueking/slug-app:1.0}
        - {name: RUNNER_IMAGE_PORT, value: "8080"}
---
kind: ConfigMap
metadata: {name: ci-env}
data:
  BK_CI_IMAGE_API_PORT: "80"
  BK_CI_IMAGE: jetstack
  image: nginx:1.25
  config.yaml: |
    dispatch:
      defaultImage: bkci/ci:ubuntu
      port: 80
  settings.json: '{"runner": {"image": "hub.bktencent.com/bkci/runner:1.0"}, "n": 3}'
  nginx.conf: |
    server { listen 80; }
---
kind: ConfigMap
metadata: {name: helm-check}
data:
  images:
    api: {registry: hub.bktencent.com, repository: blueking/api, tag: v3.1.0}
    web: hub.bktencent.com/blueking/web:v3.1.0
`
	found, err := FromManifests([]byte(manifests), ManifestOptions{Registry: "registry.intra:5000"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"maybe quay.io/example/sidecar:2.1 Deployment/op spec.template.spec.containers[0].args[2]",
		"maybe quay.io/prometheus-operator/prometheus-config-reloader:v0.70.0 Deployment/op spec.template.spec.containers[0].args[0]",
		"maybe registry.intra:5000/bkci/ci:latest Deployment/op spec.template.spec.containers[0].args[3]",
		"maybe registry.intra:5000/bkci/ci:ubuntu ConfigMap/ci-env data.config.yaml: dispatch.defaultImage",
		"maybe registry.intra:5000/blueking/slug-app:1.0 Deployment/op spec.template.spec.containers[0].env[0].value",
		"sure hub.bktencent.com/bkci/runner:1.0 ConfigMap/ci-env data.settings.json: runner.image",
		"sure hub.bktencent.com/blueking/api:v3.1.0 ConfigMap/helm-check data.images.api",
		"maybe hub.bktencent.com/blueking/web:v3.1.0 ConfigMap/helm-check data.images.web",
		"sure nginx:1.25 ConfigMap/ci-env data.image",
		"sure quay.io/example/operator:v1.0 Deployment/op spec.template.spec.containers[0].image",
	}
	// An image key inside YAML/JSON held in a ConfigMap value is a maybe.
	want[5] = "maybe hub.bktencent.com/bkci/runner:1.0 ConfigMap/ci-env data.settings.json: runner.image"
	slices.Sort(want)
	if got := summary(t, found); !reflect.DeepEqual(got, want) {
		t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	for _, f := range found {
		if f.Source.Certainty == Maybe && (f.Source.Reason == "" || f.Source.Path == "") {
			t.Errorf("maybe %s without reason or path: %+v", f.Raw, f.Source)
		}
		if strings.HasPrefix(f.Raw, "registry.intra:5000/") && !strings.Contains(f.Source.Reason, "registry registry.intra:5000") {
			t.Errorf("maybe %s: the reason does not say where the registry came from: %q", f.Raw, f.Source.Reason)
		}
	}

	values := `
image: {registry: hub.bktencent.com}          # cmdb: one registry for every component
adminserver:
  image: {repository: blueking/cmdb_adminserver, tag: ""}
monstache:
  image: {repository: blueking/cmdb_monstache, tag: ""}
unknown:
  image: {repository: blueking/cmdb_unknown, tag: ""}
certManager:
  acmesolver: {repository: jetstack}
  image: {repository: quay.io/jetstack/cert-manager-controller}
webhook:
  image: {registry: quay.io, repository: jetstack/cert-manager-webhook, tag: v1.14.4}
port: "80"
apiImage: "80"
sidecarImage: nginx
`
	tags := map[string][2]string{
		"adminserver.image":      {"v3.11.3", `"v" + appVersion 3.11.3 of chart bk-cmdb, as its templates render it`},
		"monstache.image":        {"v3.11.3", `"v" + appVersion 3.11.3 of chart bk-cmdb, as its templates render it`},
		"certManager.image":      {"v1.14.4", "appVersion v1.14.4 of chart cert-manager"},
		"certManager.acmesolver": {"v1.14.4", "appVersion v1.14.4 of chart cert-manager"},
	}
	found, err = FromValues([]byte(values), ValuesOptions{Source: Source{Chart: "bk-cmdb"}, DefaultTag: func(path string) (string, string) {
		return tags[path][0], tags[path][1]
	}})
	if err != nil {
		t.Fatal(err)
	}
	want = []string{
		"maybe hub.bktencent.com/blueking/cmdb_adminserver:v3.11.3 / adminserver.image",
		"maybe hub.bktencent.com/blueking/cmdb_monstache:v3.11.3 / monstache.image",
		"maybe quay.io/jetstack/cert-manager-controller:v1.14.4 / certManager.image",
		"maybe quay.io/jetstack/cert-manager-webhook:v1.14.4 / webhook.image",
	}
	if got := summary(t, found); !reflect.DeepEqual(got, want) {
		t.Errorf("values: got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	for _, f := range found {
		if strings.Contains(f.Raw, "cmdb_adminserver") && (!strings.Contains(f.Source.Reason, `"v" + appVersion`) || !strings.Contains(f.Source.Reason, "from image.registry")) {
			t.Errorf("completed maybe: reason %q does not say how", f.Source.Reason)
		}
	}
}
