package containerd

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/remotes/docker/config"
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
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

// Generated hosts.toml files are also read by containerd's own loader (v1.7, the code the CRI
// plugin runs on every pull): containerd only logs a file it cannot use and then ignores it
// (containerd 1.7 CRI: the pull goes on without it), so a test must look at the log, not at an error.

// logHook keeps every log entry at info or above (a file ignored is an error, an http host
// with TLS settings an info).
type logHook struct {
	mu      sync.Mutex
	entries []string
}

func (h *logHook) Levels() []logrus.Level { return logrus.AllLevels[:logrus.InfoLevel+1] }

func (h *logHook) Fire(e *logrus.Entry) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	msg := e.Message
	if err, ok := e.Data[logrus.ErrorKey]; ok {
		msg += ": " + strings.TrimSpace(strings.ReplaceAll(errString(err), "\n", " "))
	}
	h.entries = append(h.entries, e.Level.String()+" "+msg)
	return nil
}

func errString(v any) string {
	if err, ok := v.(error); ok {
		return err.Error()
	}
	return ""
}

var caQuoted = regexp.MustCompile(`ca = "(/[^"]+)"`)

// testCA is a PEM certificate: containerd reads every `ca` file and refuses what is not PEM.
func testCA(t testing.TB) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bkcache test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// containerdHosts loads data as certs.d/<registry>/hosts.toml the way containerd does and
// returns the hosts it would try, in order, as URLs ("" path = /v2), with their capabilities.
// Absolute `ca` paths (node paths) are pointed at a real PEM file in the test's directory.
func containerdHosts(t testing.TB, registry string, data []byte) ([]string, []docker.HostCapabilities) {
	t.Helper()
	root := t.TempDir()
	caFile := filepath.Join(root, "ca.pem")
	if err := os.WriteFile(caFile, testCA(t), 0o644); err != nil {
		t.Fatal(err)
	}
	data = caQuoted.ReplaceAll(data, []byte(`ca = "`+caFile+`"`))
	dir := filepath.Join(root, registry)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	lg := logrus.New()
	lg.SetOutput(io.Discard)
	lg.SetLevel(logrus.DebugLevel)
	hook := &logHook{}
	lg.AddHook(hook)
	ctx := log.WithLogger(context.Background(), logrus.NewEntry(lg))
	hosts, err := config.ConfigureHosts(ctx, config.HostOptions{HostDir: config.HostDirFromRoot(root)})(registry)
	if err != nil {
		t.Fatalf("containerd's hosts loader: %v\n%s", err, data)
	}
	if len(hook.entries) > 0 {
		t.Fatalf("containerd's hosts loader logged %q for:\n%s", hook.entries, data)
	}
	var urls []string
	var caps []docker.HostCapabilities
	for _, h := range hosts {
		u := h.Scheme + "://" + h.Host
		if h.Path != "/v2" {
			u += strings.TrimSuffix(h.Path, "/v2")
		}
		urls = append(urls, u)
		caps = append(caps, h.Capabilities)
	}
	return urls, caps
}

// checkContainerd asserts what containerd makes of a generated hosts.toml: the hosts in order,
// the first (ours) with pull+resolve only (never push), then the server as the last host.
// An empty server means containerd's default for the registry.
func checkContainerd(t testing.TB, registry string, data []byte, server string, hosts []string) {
	t.Helper()
	urls, caps := containerdHosts(t, registry, data)
	if server == "" {
		server = UpstreamServer(registry)
	}
	want := append(slices.Clone(hosts), server)
	if !slices.Equal(urls, want) {
		t.Fatalf("containerd tries %v, want %v:\n%s", urls, want, data)
	}
	if len(hosts) > 0 && caps[0] != docker.HostCapabilityPull|docker.HostCapabilityResolve {
		t.Errorf("containerd gives host %s capabilities %b, want pull+resolve:\n%s", urls[0], caps[0], data)
	}
}

// TestContainerdParserCatchesBadFiles shows the check can fail: files containerd ignores or
// reads differently are caught.
func TestContainerdParserCatchesBadFiles(t *testing.T) {
	for name, data := range map[string]string{
		"syntax error":       "server = \"https://x\n",
		"http host with TLS": "[host.\"http://a:1\"]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n",
		"unknown capability": "[host.\"http://a:1\"]\n  capabilities = [\"pull\", \"fetch\"]\n",
	} {
		ft := &fakeT{TB: t}
		func() {
			defer func() { _ = recover() }()
			checkContainerd(ft, "hub.bktencent.com", []byte(data), "", []string{"http://a:1"})
		}()
		if !ft.failed {
			t.Errorf("%s: not caught:\n%s", name, data)
		}
	}
}

// fakeT records a failure instead of failing the real test.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Helper() {}

func (f *fakeT) Fatalf(string, ...any) { f.failed = true; panic("fatal") }

func (f *fakeT) Errorf(string, ...any) { f.failed = true }

func (f *fakeT) Fatal(...any) { f.failed = true; panic("fatal") }
