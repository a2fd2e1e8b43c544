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

func (f *fakeT) Helper()               {}
func (f *fakeT) Fatalf(string, ...any) { f.failed = true; panic("fatal") }
func (f *fakeT) Errorf(string, ...any) { f.failed = true }
func (f *fakeT) Fatal(...any)          { f.failed = true; panic("fatal") }
