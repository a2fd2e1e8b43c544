package containerd

import (
	"slices"
	"strings"
	"testing"
)

var cache = Cache{Host: "10.0.0.5:5500"}

func TestRenderHosts(t *testing.T) {
	for _, tc := range []struct {
		name       string
		spec       HostsSpec
		want       string
		notWant    string
		wantServer string
		wantHosts  []string
	}{
		{
			name: "bkhub plain http",
			spec: HostsSpec{Upstream: "hub.bktencent.com", Cache: cache},
			want: "# Written by kubectl bkcache mirror: pulls of hub.bktencent.com try the cache first.\n" +
				"server = \"https://hub.bktencent.com\"\n\n" +
				"[host.\"http://10.0.0.5:5500\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
			wantServer: "https://hub.bktencent.com", wantHosts: []string{"http://10.0.0.5:5500"},
		},
		{
			name:       "docker.io goes to registry-1",
			spec:       HostsSpec{Upstream: "docker.io", Cache: cache},
			wantServer: "https://registry-1.docker.io", wantHosts: []string{"http://10.0.0.5:5500"},
		},
		{
			name:       "tls",
			spec:       HostsSpec{Upstream: "registry.k8s.io", Cache: Cache{Host: "cache.example:443", TLS: true}},
			wantServer: "https://registry.k8s.io", wantHosts: []string{"https://cache.example:443"},
		},
		{
			name:       "ca file implies https and references the CA",
			spec:       HostsSpec{Upstream: "quay.io", Cache: Cache{Host: "cache:5500", CAPath: "/etc/containerd/certs.d/cache:5500/bkcache-ca.crt"}},
			want:       "ca = \"/etc/containerd/certs.d/cache:5500/bkcache-ca.crt\"",
			wantServer: "https://quay.io", wantHosts: []string{"https://cache:5500"},
		},
		{
			name:       "no fallback: server is the cache",
			spec:       HostsSpec{Upstream: "hub.bktencent.com", Cache: cache, NoFallback: true},
			wantServer: "http://10.0.0.5:5500", wantHosts: []string{"http://10.0.0.5:5500"},
		},
		{
			name:       "the cache by its own name",
			spec:       CacheSpec(cache),
			notWant:    "dial_timeout",
			wantServer: "http://10.0.0.5:5500", wantHosts: []string{"http://10.0.0.5:5500"},
		},
		{
			// The key and duration syntax containerd 2.1's hosts.go reads (time.ParseDuration).
			name:       "dial timeout for the cache host",
			spec:       HostsSpec{Upstream: "hub.bktencent.com", Cache: cache, DialTimeout: DialTimeout},
			want:       "[host.\"http://10.0.0.5:5500\"]\n  capabilities = [\"pull\", \"resolve\"]\n  dial_timeout = \"2s\"\n",
			wantServer: "https://hub.bktencent.com", wantHosts: []string{"http://10.0.0.5:5500"},
		},
		{
			name:       "no dial timeout when there is nothing to fall back to",
			spec:       HostsSpec{Upstream: "hub.bktencent.com", Cache: cache, NoFallback: true, DialTimeout: DialTimeout},
			notWant:    "dial_timeout",
			wantServer: "http://10.0.0.5:5500", wantHosts: []string{"http://10.0.0.5:5500"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := RenderHosts(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != "" && !strings.Contains(string(out), tc.want) {
				t.Errorf("output lacks %q:\n%s", tc.want, out)
			}
			if tc.notWant != "" && strings.Contains(string(out), tc.notWant) {
				t.Errorf("output has %q:\n%s", tc.notWant, out)
			}
			hf, err := ParseHosts(out)
			if err != nil {
				t.Fatalf("parse: %v\n%s", err, out)
			}
			if hf.Server != tc.wantServer || !slices.Equal(hf.Hosts, tc.wantHosts) {
				t.Errorf("got server %q hosts %v, want %q %v\n%s", hf.Server, hf.Hosts, tc.wantServer, tc.wantHosts, out)
			}
			checkContainerd(t, tc.spec.Upstream, out, tc.wantServer, tc.wantHosts)
			if !strings.Contains(string(out), `capabilities = ["pull", "resolve"]`) {
				t.Errorf("no pull+resolve capabilities:\n%s", out)
			}
			again, err := MergeHosts(out, tc.spec)
			if err != nil || string(again) != string(out) {
				t.Errorf("merge of own output not idempotent (err %v):\n%s\n---\n%s", err, out, again)
			}
		})
	}
}

func TestMergeHosts(t *testing.T) {
	spec := HostsSpec{Upstream: "hub.bktencent.com", Cache: cache}
	for _, tc := range []struct {
		name      string
		existing  string
		want      string // exact, when set
		wantHosts []string
		contains  []string
		wantErr   string
	}{
		{
			name: "other mirror and cert keys kept, ours first",
			existing: `# site mirror, do not remove
server = "https://hub.bktencent.com"
ca = "/etc/pki/site-ca.pem"

[host."https://mirror.site:443"]
  capabilities = ["pull", "resolve"]
  ca = "/etc/pki/site-ca.pem" # the site CA
`,
			want: `# site mirror, do not remove
server = "https://hub.bktencent.com"
ca = "/etc/pki/site-ca.pem"

[host."http://10.0.0.5:5500"]
  capabilities = ["pull", "resolve"]

[host."https://mirror.site:443"]
  capabilities = ["pull", "resolve"]
  ca = "/etc/pki/site-ca.pem" # the site CA
`,
			wantHosts: []string{"http://10.0.0.5:5500", "https://mirror.site:443"},
		},
		{
			name: "our host not first is moved first; its sub-table replaced",
			existing: `server = "https://hub.bktencent.com"

[host."https://a:1"]
  capabilities = ["pull"]

[host."http://10.0.0.5:5500"]
  capabilities = ["pull", "resolve", "push"]
  skip_verify = true
[host."http://10.0.0.5:5500".header]
  x = ["y"]

[host."https://b:2"]
  capabilities = ["pull"]
`,
			wantHosts: []string{"http://10.0.0.5:5500", "https://a:1", "https://b:2"},
			contains:  []string{"[host.\"https://b:2\"]\n  capabilities = [\"pull\"]\n"},
		},
		{
			name:      "insecure_registry.sh style without server",
			existing:  "[host.\"http://10.0.0.5:5500\"]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n  skip_verify = true\n",
			wantHosts: []string{"http://10.0.0.5:5500"},
			contains:  []string{"server = \"https://hub.bktencent.com\"\n"},
		},
		{
			name:      "server rewritten, quoted key form",
			existing:  "\"server\" = \"https://elsewhere\"\n",
			wantHosts: []string{"http://10.0.0.5:5500"},
			contains:  []string{"server = \"https://hub.bktencent.com\"\n"},
		},
		{
			name:      "no trailing newline",
			existing:  "server = \"https://hub.bktencent.com\"",
			wantHosts: []string{"http://10.0.0.5:5500"},
		},
		{
			name:     "broken file refused",
			existing: "server = \"https://hub.bktencent.com\n[host.\n",
			wantErr:  "does not parse",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := MergeHosts([]byte(tc.existing), spec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want != "" && string(out) != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", out, tc.want)
			}
			hf, err := ParseHosts(out)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(hf.Hosts, tc.wantHosts) || hf.Server != "https://hub.bktencent.com" {
				t.Errorf("server %q hosts %v, want hosts %v\n%s", hf.Server, hf.Hosts, tc.wantHosts, out)
			}
			checkContainerd(t, "hub.bktencent.com", out, "https://hub.bktencent.com", tc.wantHosts)
			for _, c := range tc.contains {
				if !strings.Contains(string(out), c) {
					t.Errorf("output lacks %q:\n%s", c, out)
				}
			}
			again, err := MergeHosts(out, spec)
			if err != nil || string(again) != string(out) {
				t.Errorf("second merge changed the file (err %v):\n%s\n---\n%s", err, out, again)
			}
		})
	}
}

func TestDialTimeoutSupported(t *testing.T) {
	for v, want := range map[string]bool{
		"containerd://1.6.20~ds1":  false,
		"containerd://1.7.35":      false,
		"containerd://2.0.5-k3s1":  false,
		"containerd://2.1.0":       true,
		"containerd://v2.1.3-k3s1": true,
		"containerd://2.3.1":       true,
		"containerd://3.0.0":       true,
		"docker://20.10.24":        false,
		"":                         false,
	} {
		if got := DialTimeoutSupported(v); got != want {
			t.Errorf("DialTimeoutSupported(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestRenderLegacyHosts(t *testing.T) {
	out, err := RenderLegacyHosts("docker.io", []string{"http://mirror.local:5000", "https://registry-1.docker.io"})
	if err != nil {
		t.Fatal(err)
	}
	hf, err := ParseHosts(out)
	if err != nil || hf.Server != "https://registry-1.docker.io" || !slices.Equal(hf.Hosts, []string{"http://mirror.local:5000"}) {
		t.Fatalf("got %+v %v\n%s", hf, err, out)
	}
	checkContainerd(t, "docker.io", out, "https://registry-1.docker.io", []string{"http://mirror.local:5000"})
	star, err := RenderLegacyHosts("*", []string{"http://any.local:5000"})
	if err != nil {
		t.Fatal(err)
	}
	// _default has no server line: containerd falls back to the registry itself.
	checkContainerd(t, "_default", star, "https://_default", []string{"http://any.local:5000"})
	if _, err := RenderLegacyHosts("x", []string{"ftp://x"}); err == nil {
		t.Fatal("ftp endpoint accepted")
	}
	if LegacyHostsDir("*") != "_default" {
		t.Fatal("* is not _default")
	}
}

func TestUnifiedDiff(t *testing.T) {
	got := UnifiedDiff("/c/hosts.toml", nil, []byte("a\nb\n"))
	want := "--- /dev/null\n+++ /c/hosts.toml\n@@ -0,0 +1,2 @@\n+a\n+b\n"
	if got != want {
		t.Errorf("got:\n%q\nwant:\n%q", got, want)
	}
	if d := UnifiedDiff("x", []byte("a\n"), []byte("a\n")); d != "" {
		t.Errorf("diff of equal files = %q", d)
	}
}
