package images

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func deploymentList() *List {
	l := NewList()
	conf := func(s Source) Source { s.ImageRegistry = "hub.bktencent.com"; return s }
	l.Add(
		Found{Raw: "hub.bktencent.com/blueking/bk-paas:1.2.3", Source: conf(Source{Chart: "bk-paas"})},
		Found{Raw: "hub.bktencent.com/blueking/bk-ci:2.0", Source: conf(Source{Chart: "bk-ci"})},
		Found{Raw: "busybox:1.36", Source: conf(Source{Chart: "bk-ci"})},
		Found{Raw: "docker.io/bitnami/redis:7.2", Source: conf(Source{Chart: "bk-ci"})},
		Found{Raw: "quay.io/jetstack/cert-manager-controller:v1.14.4", Source: conf(Source{Chart: "cert-manager"})},
		Found{Raw: "quay.io/library/busybox:1.36", Source: Source{Chart: "other"}}, // no imageRegistry configured
		Found{Raw: "hub.bktencent.com/blueking/slug:1", Source: conf(Source{Chart: "bk-paas", Certainty: Maybe, Reason: "values"})},
	)
	return l
}

func TestRegistriesAndUpstreams(t *testing.T) {
	l := deploymentList()
	var b bytes.Buffer
	if err := Write(&b, l, WriteOptions{Format: "registries"}); err != nil {
		t.Fatal(err)
	}
	want := `REGISTRY           IMAGES  MAYBE  ESCAPED
docker.io          2       0      2
hub.bktencent.com  2       0      0
quay.io            2       0      1

2 images come from docker.io although their releases are configured with imageRegistry hub.bktencent.com:
  docker.io/bitnami/redis:7.2
  docker.io/library/busybox:1.36

1 image comes from quay.io although their releases are configured with imageRegistry hub.bktencent.com:
  quay.io/jetstack/cert-manager-controller:v1.14.4
`
	if b.String() != want {
		t.Errorf("-o registries:\n%s\nwant:\n%s", b.String(), want)
	}
	doc, err := Result(l, WriteOptions{IncludeMaybe: true})
	if err != nil {
		t.Fatal(err)
	}
	if doc.Registries[0].Registry != "hub.bktencent.com" || doc.Registries[0].Images != 3 || doc.Registries[0].Maybe != 1 {
		t.Errorf("with maybes, registries = %+v", doc.Registries)
	}
	if s := Summary(doc.Registries); !strings.HasPrefix(s, "7 images from 3 registries: hub.bktencent.com 3, docker.io 2, quay.io 2; 3 escape imageRegistry hub.bktencent.com") {
		t.Errorf("summary = %q", s)
	}

	b.Reset()
	if err := WriteUpstreams(&b, doc.Registries, UpstreamOptions{CacheHost: "10.0.0.5"}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"#   docker bkcache up -f caches.yaml\n",
		"#   kubectl bkcache mirror --registry 10.0.0.5:5500 --upstream hub.bktencent.com\n",
		"#   kubectl bkcache mirror --registry 10.0.0.5:5501 --upstream docker.io\n",
		"#   kubectl bkcache mirror --registry 10.0.0.5:5502 --upstream quay.io\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("--upstreams lacks %q:\n%s", want, out)
		}
	}
	var f cachesFile
	if err := yaml.UnmarshalStrict(b.Bytes(), &f); err != nil {
		t.Fatalf("caches file: %v\n%s", err, out)
	}
	wantCaches := []cacheEntry{
		{"bkhub", "https://hub.bktencent.com", 5500},
		{"docker-io", "https://registry-1.docker.io", 5501},
		{"quay-io", "https://quay.io", 5502},
	}
	if len(f.Caches) != 3 || f.Caches[0] != wantCaches[0] || f.Caches[1] != wantCaches[1] || f.Caches[2] != wantCaches[2] {
		t.Errorf("caches = %+v", f.Caches)
	}
	// Images already routed through a cache on that host need none.
	b.Reset()
	err = WriteUpstreams(&b, []RegistryUse{{Registry: "10.0.0.5:5500", Images: 3}}, UpstreamOptions{CacheHost: "10.0.0.5"})
	if err == nil {
		t.Errorf("only the cache itself: want an error, got\n%s", b.String())
	}
}

func TestRewrites(t *testing.T) {
	l := deploymentList()
	r, err := ParseRewrites([]string{"hub.bktencent.com=10.0.0.5:5500", "docker.io=10.0.0.5:5501"})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := Write(&b, l, WriteOptions{Rewrites: r}); err != nil {
		t.Fatal(err)
	}
	want := "10.0.0.5:5501/bitnami/redis:7.2\n10.0.0.5:5501/library/busybox:1.36\n10.0.0.5:5500/blueking/bk-ci:2.0\n10.0.0.5:5500/blueking/bk-paas:1.2.3\n" +
		"quay.io/jetstack/cert-manager-controller:v1.14.4\nquay.io/library/busybox:1.36\n"
	if b.String() != want {
		t.Errorf("pairs:\n%s\nwant:\n%s", b.String(), want)
	}
	// The bare form sends quay.io/library/busybox and docker.io's busybox to one name: refused.
	r, _ = ParseRewrites([]string{"10.0.0.5:5000"})
	err = Write(&b, l, WriteOptions{Rewrites: r})
	var ce *CollisionError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "10.0.0.5:5000/library/busybox:1.36 <- docker.io/library/busybox:1.36, quay.io/library/busybox:1.36") {
		t.Errorf("collision: %v", err)
	}
	// Pairs with a bare default for the rest.
	r, err = ParseRewrites([]string{"quay.io=10.0.0.5:5502", "10.0.0.5:5000"})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Apply("quay.io/library/busybox:1.36"); got != "10.0.0.5:5502/library/busybox:1.36" {
		t.Errorf("Apply = %s", got)
	}
	if got := r.Apply("docker.io/library/busybox:1.36"); got != "10.0.0.5:5000/library/busybox:1.36" {
		t.Errorf("Apply = %s", got)
	}
	for _, bad := range [][]string{{"a:1", "b:2"}, {"http://x=y"}, {"x=y/z"}, {"x=a:1", "x=b:1"}} {
		if _, err := ParseRewrites(bad); err == nil {
			t.Errorf("ParseRewrites(%q) = nil error", bad)
		}
	}
	if r, _ := ParseRewrites([]string{"index.docker.io=c:1"}); r.Apply("docker.io/library/x:1") != "c:1/library/x:1" {
		t.Error("index.docker.io is docker.io")
	}
}
