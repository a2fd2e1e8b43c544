package images

import (
	"bytes"
	"fmt"
	"go.yaml.in/yaml/v3"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/pkg/imageref"
)

// refs returns "certainty ref path" per finding, sorted, for compact comparisons.
// dig is a well-formed digest for test references.
const dig = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func summary(t *testing.T, found []Found) []string {
	t.Helper()
	var out []string
	for _, f := range found {
		c := f.Source.Certainty
		if c == "" {
			c = Sure
		}
		out = append(out, string(c)+" "+f.Raw+" "+f.Source.Kind+"/"+f.Source.Name+" "+f.Source.Path)
	}
	sort.Strings(out)
	return out
}

func TestFromManifests(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"pod", `
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  initContainers: [{name: i, image: busybox:1}]
  containers:
  - name: c
    image: nginx:1
    env:
    - {name: BUILDER_IMAGE, value: hub.bktencent.com/blueking/slug-app:1.0}
    - {name: URL, value: "http://example.com:80/x"}
    - {name: HOST, value: "db.local:3306"}
  ephemeralContainers: [{name: e, image: debug:2}]
`, []string{
			"maybe hub.bktencent.com/blueking/slug-app:1.0 Pod/p spec.containers[0].env[0].value",
			"sure busybox:1 Pod/p spec.initContainers[0].image",
			"sure debug:2 Pod/p spec.ephemeralContainers[0].image",
			"sure nginx:1 Pod/p spec.containers[0].image",
		}},
		{"workloads", `
kind: Deployment
metadata: {name: d}
spec: {template: {spec: {containers: [{name: a, image: a:1}]}}}
---
kind: StatefulSet
metadata: {name: s}
spec: {template: {spec: {containers: [{name: a, image: s:1}]}}}
---
kind: DaemonSet
metadata: {name: ds}
spec: {template: {spec: {containers: [{name: a, image: ds:1}]}}}
---
kind: ReplicaSet
metadata: {name: rs}
spec: {template: {spec: {containers: [{name: a, image: rs:1}]}}}
---
kind: ReplicationController
metadata: {name: rc}
spec: {template: {spec: {containers: [{name: a, image: rc:1}]}}}
---
kind: Job
metadata: {name: j}
spec: {template: {spec: {containers: [{name: a, image: j:1}]}}}
---
kind: CronJob
metadata: {name: cj}
spec: {jobTemplate: {spec: {template: {spec: {containers: [{name: a, image: cj:1}]}}}}}
---
# empty document
`, []string{
			"sure a:1 Deployment/d spec.template.spec.containers[0].image",
			"sure cj:1 CronJob/cj spec.jobTemplate.spec.template.spec.containers[0].image",
			"sure ds:1 DaemonSet/ds spec.template.spec.containers[0].image",
			"sure j:1 Job/j spec.template.spec.containers[0].image",
			"sure rc:1 ReplicationController/rc spec.template.spec.containers[0].image",
			"sure rs:1 ReplicaSet/rs spec.template.spec.containers[0].image",
			"sure s:1 StatefulSet/s spec.template.spec.containers[0].image",
		}},
		{"typed kinds ignore image fields outside containers", `
kind: Deployment
metadata: {name: d, annotations: {image: not/this:1}}
spec:
  image: not/this:2
  template: {spec: {containers: [{name: a, image: a:1}]}}
`, []string{"sure a:1 Deployment/d spec.template.spec.containers[0].image"}},
		{"custom resources", `
apiVersion: example.com/v1
kind: Prometheus
metadata: {name: k8s, annotations: {image: ignored:1}}
spec:
  image: quay.io/prometheus/prometheus:v2
  sidecars:
  - image: {registry: quay.io, repository: thanos/thanos, tag: v0.30}
  - image: {repository: bitnami/redis, tag: 7.0.10, digest: "` + dig + `"}
  exporter: {image: exporter, tag: "1.10"}
  podTemplate:
    spec: {containers: [{name: x, image: x:1}]}
  jobTemplate:
    spec: {template: {spec: {containers: [{name: y, image: y:1}]}}}
  imagePullPolicy: Always
`, []string{
			"sure bitnami/redis:7.0.10@" + dig + " Prometheus/k8s spec.sidecars[1].image",
			"sure exporter:1.10 Prometheus/k8s spec.exporter",
			"sure quay.io/prometheus/prometheus:v2 Prometheus/k8s spec.image",
			"sure quay.io/thanos/thanos:v0.30 Prometheus/k8s spec.sidecars[0].image",
			"sure x:1 Prometheus/k8s spec.podTemplate.spec.containers[0].image",
			"sure y:1 Prometheus/k8s spec.jobTemplate.spec.template.spec.containers[0].image",
		}},
		{"configmap", `
kind: ConfigMap
metadata: {name: cm}
data:
  SLUG_IMAGE: blueking/slug-app:1
  other: hub.bktencent.com/blueking/runner:2
  url: https://hub.bktencent.com/v2/
  note: hello
`, []string{
			"maybe blueking/slug-app:1 ConfigMap/cm data.SLUG_IMAGE",
			"maybe hub.bktencent.com/blueking/runner:2 ConfigMap/cm data.other",
		}},
		{"kinds that hold no image are not read", `
apiVersion: v1
kind: Service
metadata: {name: s, annotations: {image: not/read:1}}
spec: {image: not/read:2}
--- # a CRD: megabytes of schema in the field
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
spec: {versions: [{schema: {openAPIV3Schema: {properties: {image: {type: string, default: "x:1"}}}}}]}
---
kind: Pod
metadata: {name: p}
spec: {containers: [{name: c, image: read:1}]}
`, []string{"sure read:1 Pod/p spec.containers[0].image"}},
		{"list", `
apiVersion: v1
kind: List
items:
- {kind: Pod, metadata: {name: a}, spec: {containers: [{name: a, image: a:1}]}}
- {kind: Pod, metadata: {name: b}, spec: {containers: [{name: b, image: b:1}]}}
`, []string{"sure a:1 Pod/a spec.containers[0].image", "sure b:1 Pod/b spec.containers[0].image"}},
		{"json and anchors", `{"kind":"Pod","metadata":{"name":"j"},"spec":{"containers":[{"name":"c","image":"j:1"}]}}
---
kind: Widget
metadata: {name: w}
base: &img {image: w:1}
copy: *img
`, []string{"sure j:1 Pod/j spec.containers[0].image", "sure w:1 Widget/w base.image", "sure w:1 Widget/w copy.image"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			found, err := FromManifests([]byte(tc.yaml), ManifestOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := summary(t, found); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

func TestFromManifestsSourcesAndErrors(t *testing.T) {
	rendered := "---\n# Source: web/templates/deploy.yaml\nkind: Pod\nmetadata: {name: p, namespace: ns}\nspec: {containers: [{name: c, image: nginx}]}\n"
	found, err := FromManifests([]byte(rendered), ManifestOptions{Source: Source{Release: "r", Chart: "web"}})
	if err != nil || len(found) != 1 {
		t.Fatalf("found %v, %v", found, err)
	}
	s := found[0].Source
	if s.File != "web/templates/deploy.yaml" || s.Namespace != "ns" || s.Release != "r" || s.Line != 0 {
		t.Errorf("source = %+v", s)
	}
	found, _ = FromManifests([]byte(rendered), ManifestOptions{Source: Source{File: "x.yaml"}, Lines: true})
	if found[0].Source.Line != 5 {
		t.Errorf("line = %d, want 5", found[0].Source.Line)
	}
	_, err = FromManifests([]byte("kind: Pod\n---\nkind: [unclosed\n"), ManifestOptions{Source: Source{File: "bad.yaml"}})
	if err == nil || !strings.Contains(err.Error(), "bad.yaml: document 2") || !strings.Contains(err.Error(), "line") {
		t.Errorf("error = %v, want the file, document and line", err)
	}
}

func TestFromValues(t *testing.T) {
	values := `
global: {imageRegistry: hub.bktencent.com}
image: {registry: hub.bktencent.com, repository: blueking/bk-paas, tag: 1.2.3, pullPolicy: IfNotPresent}
builder:
  slugImage: blueking/slug-app:1.0
  image: {repository: blueking/slug-app, tag: null}
  imagePullPolicy: Always
  imagePullSecrets: [regcred]
apps:
  - hub.bktencent.com/blueking/runner:2
  - /var/lib/x:1
  - https://hub.bktencent.com/v2/
  - redis.svc.cluster.local:6379
  - not an image
`
	found, err := FromValues([]byte(values), ValuesOptions{Source: Source{Release: "paas"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"maybe hub.bktencent.com/blueking/bk-paas:1.2.3 / image",
		"maybe hub.bktencent.com/blueking/runner:2 / apps[0]",
		// global.imageRegistry applies to maybes without a registry; the
		// split map builder.image has no tag and no DefaultTag: dropped.
		"maybe hub.bktencent.com/blueking/slug-app:1.0 / builder.slugImage",
	}
	if got := summary(t, found); !reflect.DeepEqual(got, want) {
		t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	for _, f := range found {
		if f.Source.Release != "paas" || f.Source.Reason == "" {
			t.Errorf("source %+v: want release and reason", f.Source)
		}
	}
}

func TestAnnotationAndLock(t *testing.T) {
	found, err := FromChartAnnotation("helm.sh/images", "- name: a\n  image: a:1\n- name: b\n  image: quay.io/b:2\n", Source{Chart: "c"})
	if err != nil || len(found) != 2 || found[1].Raw != "quay.io/b:2" || found[1].Source.Certainty != Maybe {
		t.Errorf("annotation: %+v, %v", found, err)
	}
	if _, err := FromChartAnnotation("helm.sh/images", "{", Source{}); err == nil {
		t.Error("bad annotation: want error")
	}
	lock := "apiVersion: v0\nchart: {name: redis, version: 1}\nimages:\n- name: redis\n  image: docker.io/bitnami/redis:7\n"
	found, err = FromImagesLock([]byte(lock), Source{})
	if err != nil || len(found) != 1 || found[0].Raw != "docker.io/bitnami/redis:7" {
		t.Errorf("lock: %+v, %v", found, err)
	}
}

// TestGoldenManifest runs a realistic manifest file from testdata end to end.
func TestGoldenManifest(t *testing.T) {
	data, err := os.ReadFile("testdata/rendered.yaml")
	if err != nil {
		t.Fatal(err)
	}
	found, err := FromManifests(data, ManifestOptions{Source: Source{File: "testdata/rendered.yaml"}, Lines: true})
	if err != nil {
		t.Fatal(err)
	}
	l := NewList()
	l.Add(found...)
	var b bytes.Buffer
	if err := Write(&b, l, WriteOptions{IncludeMaybe: true}); err != nil {
		t.Fatal(err)
	}
	want := "docker.io/library/busybox:1.36\nhub.bktencent.com/blueking/bk-paas-migrate:1.2.3@" + dig + "\nhub.bktencent.com/blueking/bk-paas:1.2.3\n" +
		"# maybe: pulled at run time perhaps (values, env vars, ConfigMaps, chart annotations)\nhub.bktencent.com/blueking/slug-app:1.0\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

// Nested aliases must not make extraction exponential ("billion laughs").
func TestNestedAliasesStayLinear(t *testing.T) {
	doc := "a0: &a0 {image: nginx:1}\n"
	for i := 1; i < 40; i++ {
		doc += fmt.Sprintf("a%d: &a%d [*a%d, *a%d]\n", i, i, i-1, i-1)
	}
	list := "kind: List\nx0: &a0 {kind: Pod, spec: {containers: [{image: nginx:1}]}}\n"
	for i := 1; i < 40; i++ {
		list += fmt.Sprintf("x%d: &a%d {kind: List, items: [*a%d, *a%d]}\n", i, i, i-1, i-1)
	}
	list += "items: [*a39]\n"
	done := make(chan struct{})
	go func() {
		defer close(done)
		FromValues([]byte(doc), ValuesOptions{})
		FromManifests([]byte(doc), ManifestOptions{})
		FromManifests([]byte(list), ManifestOptions{})
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("extraction of 40 nested aliases did not finish in 5 s")
	}
}

// FuzzValues: the values and manifest scanners never panic on any YAML, and
// what they find holds: every maybe has a reason and a path, is plausible
// (no bare number, no single word), and every listed reference is
// normalised and written one per line in the text output.
func FuzzValues(f *testing.F) {
	f.Add([]byte("image:\n  registry: r.io\n  repository: a/b\n  tag: 1\n"))
	f.Add([]byte("x: &a {image: nginx}\ny: *a\n"))
	f.Add([]byte("- hub.bktencent.com/a/b:1\n"))
	f.Add([]byte("global: {imageRegistry: r.io}\nimage: {repository: a/b, tag: \"\"}\nport: \"80\"\nsidecarImage: jetstack\n"))
	f.Add([]byte("kind: ConfigMap\ndata:\n  c.yaml: |\n    defaultImage: bkci/ci:ubuntu\n  images: {a: {repository: x/y, tag: v1}}\n"))
	f.Add([]byte("kind: Pod\nspec: {containers: [{image: a:1, args: [--x-image, q.io/a:1, --y=r.io/b:2]}]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		found, _ := FromValues(b, ValuesOptions{DefaultTag: func(string) (string, string) { return "1.0", "appVersion" }})
		for _, fd := range found {
			if fd.Source.Certainty != Maybe || fd.Source.Reason == "" {
				t.Fatalf("values finding %q: certainty %q reason %q", fd.Raw, fd.Source.Certainty, fd.Source.Reason)
			}
		}
		more, _ := FromManifests(b, ManifestOptions{Registry: "r.example"})
		found = append(found, more...)
		for _, fd := range found {
			if fd.Source.Certainty == Maybe && (fd.Source.Reason == "" || fd.Source.Path == "" || !plausible(fd.Raw)) {
				t.Fatalf("maybe %q: reason %q path %q", fd.Raw, fd.Source.Reason, fd.Source.Path)
			}
		}
		l := NewList()
		l.Add(found...)
		var out bytes.Buffer
		if err := Write(&out, l, WriteOptions{IncludeMaybe: true}); err != nil {
			t.Fatal(err)
		}
		var refs []string
		for _, img := range l.Images(true) {
			if n, err := imageref.Normalize(img.Reference); err != nil || n != img.Reference {
				t.Fatalf("listed %q, which normalises to %q, %v", img.Reference, n, err)
			}
			refs = append(refs, img.Reference)
		}
		var lines []string
		for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
			if line != "" && !strings.HasPrefix(line, "#") {
				lines = append(lines, line)
			}
		}
		if strings.Join(lines, "\n") != strings.Join(refs, "\n") {
			t.Fatalf("text output:\n%s\nlisted:\n%s", out.String(), strings.Join(refs, "\n"))
		}
	})
}

// TestValuesRegistry: the override read from the values' maps is the one the
// values walk reads from their YAML nodes.
func TestValuesRegistry(t *testing.T) {
	type named map[string]any // as helm's chartutil.Values
	tests := []struct {
		name, values, want, key string
	}{
		{"global wins", "global: {imageRegistry: a.io/}\nimageRegistry: b.io\n", "a.io", "global.imageRegistry"},
		{"top level", "global: {}\nimageRegistry: b.io\n", "b.io", "imageRegistry"},
		{"image holds only a registry", "image: {registry: c.io, pullPolicy: Always}\n", "c.io", "image.registry"},
		{"image with repository is a split map", "image: {registry: c.io, repository: x/y}\n", "", ""},
		{"empty string", "imageRegistry: \"\"\n", "", ""},
		{"a map is no registry", "imageRegistry: {a: b}\n", "", ""},
		{"global not a map", "global: x\nimageRegistry: d.io\n", "d.io", "imageRegistry"},
		{"none", "replicas: 3\n", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var vals map[string]any
			if err := yaml.Unmarshal([]byte(tt.values), &vals); err != nil {
				t.Fatal(err)
			}
			var root yaml.Node
			if err := yaml.Unmarshal([]byte(tt.values), &root); err != nil {
				t.Fatal(err)
			}
			nodeReg, nodeKey := valuesRegistry(&root)
			for _, v := range []map[string]any{vals, {"global": named{"imageRegistry": "e.io"}}} {
				reg, key := ValuesRegistry(v)
				if _, ok := v["global"].(named); ok {
					if reg != "e.io" || key != "global.imageRegistry" {
						t.Errorf("named map: got %q %q", reg, key)
					}
					continue
				}
				if reg != tt.want || key != tt.key || reg != nodeReg || key != nodeKey {
					t.Errorf("got %q %q, want %q %q (from nodes: %q %q)", reg, key, tt.want, tt.key, nodeReg, nodeKey)
				}
			}
		})
	}
}
