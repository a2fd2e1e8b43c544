package imageref

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

const dig = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestNormalize(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "nginx", want: "docker.io/library/nginx:latest"},
		{in: "nginx:1.25", want: "docker.io/library/nginx:1.25"},
		{in: "docker.io/bitnami/redis:7", want: "docker.io/bitnami/redis:7"},
		{in: "index.docker.io/library/busybox", want: "docker.io/library/busybox:latest"},
		{in: "hub.bktencent.com/blueking/bk-paas:1.2.3", want: "hub.bktencent.com/blueking/bk-paas:1.2.3"},
		{in: "  127.0.0.1:5000/a/b:c  ", want: "127.0.0.1:5000/a/b:c"},
		{in: "localhost:5000/x", want: "localhost:5000/x:latest"},
		{in: "quay.io/a/b@" + dig, want: "quay.io/a/b@" + dig},
		{in: "quay.io/a/b:v1@" + dig, want: "quay.io/a/b:v1@" + dig},
		{in: "", err: "empty"},
		{in: "Nginx:1", err: "invalid"},
		{in: "{{ .Values.image }}", err: "template braces"},
		{in: "nginx@sha256:short", err: "invalid"},
		{in: "a b", err: "spaces"},
		{in: "nginx:", err: "invalid"},
		// Docker Hub's library/ must not push the name over 255 characters.
		{in: strings.Repeat("a", 237), want: "docker.io/library/" + strings.Repeat("a", 237) + ":latest"},
		{in: strings.Repeat("a", 238), err: "over the 255"},
		{in: "hub.bktencent.com/a/../b:1", err: `path component ".."`},
		{in: "a//b:1", err: "path component"},
	} {
		got, err := Normalize(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Normalize(%q) = %q, %v; want error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestRewrite(t *testing.T) {
	for _, tc := range []struct{ in, reg, want string }{
		{"hub.bktencent.com/blueking/bk-paas:1", "10.0.0.1:5500", "10.0.0.1:5500/blueking/bk-paas:1"},
		{"docker.io/library/nginx:1", "cache:5000", "cache:5000/library/nginx:1"},
		{"quay.io/a/b@" + dig, "c:1/", "c:1/a/b@" + dig},
		{"quay.io/a/b:1", "", "quay.io/a/b:1"},
	} {
		if got := Rewrite(tc.in, tc.reg); got != tc.want {
			t.Errorf("Rewrite(%q, %q) = %q, want %q", tc.in, tc.reg, got, tc.want)
		}
	}
}

func TestValidateRegistry(t *testing.T) {
	for host, ok := range map[string]bool{
		"hub.bktencent.com": true, "10.0.0.5:5500": true, "docker.io": true, "localhost:5000": true,
		"registry-1.docker.io": true, "Registry.Example:443": true, "10.0.0.5": true, "[fd00::1]:5000": true, "[::1]": true,
		"": false, "../etc": false, "a/b": false, "a b": false, "x:99999": false, "x:0": false, "x:": false, "x:05000": false,
		"-x": false, "x-.y": false, "a..b": false, "h\"x": false, "_default": false, "http://x:5000": false, "x:5000/path": false,
		"UPPER CASE": false, "fd00::1": false, "[10.0.0.5]:5000": false, "[fe80::1%eth0]:5000": false, "x:a": false, "a:1:2": false,
	} {
		if err := ValidateRegistry(host); (err == nil) != ok {
			t.Errorf("ValidateRegistry(%q) = %v, want ok=%v", host, err, ok)
		}
	}
}

// FuzzNormalize: never panics; a normalised reference is a fixed point,
// fully qualified (registry, repository, tag or digest), accepted by
// go-containerregistry as the copy commands parse it, and survives a
// rewrite to another registry and back.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"nginx", "a/b:c", "quay.io/a/b:v1@" + dig, "localhost:5000/x", "@", ":", "a:b:c", "docker.io/", strings.Repeat("a", 255)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Normalize(s)
		if err != nil {
			return
		}
		again, err := Normalize(n)
		if err != nil || again != n {
			t.Fatalf("Normalize(%q) = %q, but Normalize(%q) = %q, %v", s, n, n, again, err)
		}
		if _, err := name.ParseReference(n, name.StrictValidation); err != nil {
			t.Fatalf("Normalize(%q) = %q, which go-containerregistry refuses: %v", s, n, err)
		}
		reg := Registry(n)
		if reg == "" || !strings.ContainsAny(n[len(reg):], ":@") {
			t.Fatalf("Normalize(%q) = %q: no registry, or neither tag nor digest", s, n)
		}
		if back := Rewrite(Rewrite(n, "cache.example:5000"), reg); back != n {
			t.Fatalf("Rewrite round trip of %q gave %q", n, back)
		}
	})
}
