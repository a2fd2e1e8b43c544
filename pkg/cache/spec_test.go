package cache

import (
	"os"
	"strings"
	"testing"
)

func TestWithDefaultsFollowsTheGuide(t *testing.T) {
	s := Spec{}.WithDefaults()
	want(t, "name", s.Name, "bkhub")
	want(t, "upstream", s.Upstream, "https://hub.bktencent.com")
	want(t, "port", s.Port, 5500)
	want(t, "config", s.ConfigPath(), "/etc/docker/registry/bkhub.yaml")
	want(t, "data", s.DataDir, "/var/lib/registry-bkhub")
	want(t, "container", s.ContainerName(), "proxy-bkhub")
	want(t, "image", s.Image, "hub.bktencent.com/library/registry:2")
	want(t, "restart", s.Restart, "always")
	want(t, "network", s.Network, "bridge")
	want(t, "layout", s.Layout, "front")
	want(t, "front binary", s.FrontPath(), "/etc/docker/registry/bkhub.front")
	want(t, "address", s.LocalAddress(), "127.0.0.1:5500")
	named := Spec{Name: "dockerio", Upstream: "https://registry-1.docker.io/"}.WithDefaults()
	want(t, "named data", named.DataDir, "/var/lib/registry-dockerio")
	want(t, "trailing slash", named.Upstream, "https://registry-1.docker.io")
}

func TestValidateNamesTheFlag(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		want string // substring of the error; "" means valid
	}{
		{"defaults", Spec{}, ""},
		{"host network loopback upstream", Spec{Network: NetworkHost, Upstream: "http://127.0.0.1:5000"}, ""},
		{"bad name", Spec{Name: "Bad Name"}, "--name"},
		{"ftp upstream", Spec{Upstream: "ftp://x"}, "--upstream"},
		{"upstream path", Spec{Upstream: "https://hub.bktencent.com/blueking"}, "ignores a path"},
		{"credentials in URL", Spec{Upstream: "https://u:p@hub.bktencent.com"}, "--password-stdin"},
		{"port zero after defaults", Spec{Port: 70000}, "--port"},
		{"bad bind", Spec{Bind: "example.com"}, "--bind"},
		{"bad network", Spec{Network: "overlay"}, "--network"},
		{"bridge cannot reach loopback", Spec{Upstream: "http://localhost:5000"}, "--network host"},
		{"bad restart", Spec{Restart: "sometimes"}, "--restart"},
		{"relative data dir", Spec{DataDir: "data"}, "absolute"},
		{"cert without key", Spec{TLSCert: "/c.pem"}, "--tls-key"},
		{"password without user", Spec{Password: "x"}, "--username"},
		{"user without password", Spec{Username: "x"}, "--password-stdin"},
		{"metrics on the cache port", Spec{Network: NetworkHost, Port: 5500, MetricsPort: 5500}, "--metrics-port"},
		{"plain layout", Spec{Layout: LayoutPlain}, ""},
		{"bad layout", Spec{Layout: "sidecar"}, "--plain"},
		{"negative rate", Spec{UpstreamRate: -1}, "--upstream-rate"},
		{"rate needs the front", Spec{Layout: LayoutPlain, UpstreamRate: 1 << 20}, "--upstream-rate"},
		{"budget", Spec{MaxSize: 40 << 20}, ""},
		{"negative budget", Spec{MaxSize: -1}, "--max-size"},
		{"budget needs the front", Spec{Layout: LayoutPlain, MaxSize: 40 << 20}, "--max-size"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.spec.WithDefaults().Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.want != "" && err == nil:
				t.Errorf("no error, want one mentioning %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestDiffSpecs(t *testing.T) {
	a := Spec{}.WithDefaults()
	b := a
	b.Port, b.Restart = 5501, "no"
	b.Password = "never shown"
	got := strings.Join(DiffSpecs(a, b), "; ")
	want(t, "diff", got, "port: 5500 -> 5501; restart: always -> no")
	if len(DiffSpecs(a, a)) != 0 {
		t.Errorf("equal specs differ: %v", DiffSpecs(a, a))
	}
}

func TestLabelsNeverHoldThePassword(t *testing.T) {
	s := Spec{Username: "bk", Password: "hunter2-secret"}.WithDefaults()
	cfg, _ := RenderConfig(s, "x")
	labels, err := specLabels(s, cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range labels {
		if strings.Contains(v, "hunter2-secret") {
			t.Errorf("label %s holds the password", k)
		}
	}
	back, ok := specFromLabels(labels)
	if !ok || back.Username != "bk" || back.Port != 5500 {
		t.Errorf("spec does not round-trip through labels: %+v", back)
	}
	s2 := s
	s2.Password = "other"
	cfg2, _ := RenderConfig(s2, "x")
	labels2, _ := specLabels(s2, cfg2, "")
	if labels[LabelHash] == labels2[LabelHash] {
		t.Errorf("a changed password does not change the spec hash, so the container would keep the old one")
	}
	labels3, _ := specLabels(s, cfg, "0123456789abcdef")
	if labels[LabelHash] == labels3[LabelHash] || labels3[LabelFront] != "0123456789abcdef" || labels3[LabelLayout] != LayoutFront {
		t.Errorf("a new front binary does not change the spec hash, or the labels miss it: %v", labels3)
	}
}

func TestCacheReference(t *testing.T) {
	hub := Spec{}.WithDefaults()
	dockerio := Spec{Name: "dockerio", Upstream: "https://registry-1.docker.io", Port: 5501}.WithDefaults()
	tests := []struct {
		spec    Spec
		image   string
		want    string
		wantErr string
	}{
		{hub, "blueking/slug-app:v1.1.0-beta.27", "127.0.0.1:5500/blueking/slug-app:v1.1.0-beta.27", ""},
		{hub, "hub.bktencent.com/blueking/bk-paas:1.2.3", "127.0.0.1:5500/blueking/bk-paas:1.2.3", ""},
		{hub, "127.0.0.1:5500/blueking/x@sha256:" + strings.Repeat("a", 64), "127.0.0.1:5500/blueking/x@sha256:" + strings.Repeat("a", 64), ""},
		{hub, "quay.io/x/y:1", "", "proxies hub.bktencent.com"},
		{dockerio, "busybox:1.36", "127.0.0.1:5501/library/busybox:1.36", ""},
		{dockerio, "docker.io/library/nginx:1", "127.0.0.1:5501/library/nginx:1", ""},
		{hub, "Bad Ref", "", "invalid image reference"},
	}
	for _, tc := range tests {
		ref, err := CacheReference(tc.spec, tc.image)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("CacheReference(%s) error = %v, want %q", tc.image, err, tc.wantErr)
			}
			continue
		}
		if err != nil || ref.String() != tc.want {
			t.Errorf("CacheReference(%s) = %v, %v; want %s", tc.image, ref, err, tc.want)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
