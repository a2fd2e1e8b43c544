package cache

import (
	"bytes"
	"strings"
	"testing"

	"github.com/docker/distribution/configuration"
)

// The distribution 2.8 configuration parser, the code registry:2 runs, is the
// oracle: what it reads back is what the cache will do.
func TestRenderConfigParsesAsRegistryConfig(t *testing.T) {
	base := Spec{}.WithDefaults()
	host := Spec{Network: NetworkHost, Port: 5501, Upstream: "http://127.0.0.1:5999"}.WithDefaults()
	plain := Spec{Layout: LayoutPlain}.WithDefaults()
	plainHost := Spec{Layout: LayoutPlain, Network: NetworkHost, Port: 5501}.WithDefaults()
	secure := Spec{TLSCert: "/etc/cert.pem", TLSKey: "/etc/key.pem", Htpasswd: "/etc/htpasswd", Username: "bk", Password: "p@ss: word#1"}.WithDefaults()
	tests := []struct {
		name  string
		spec  Spec
		check func(t *testing.T, c *configuration.Configuration)
	}{
		{"guide defaults", base, func(t *testing.T, c *configuration.Configuration) {
			want(t, "proxy.remoteurl", c.Proxy.RemoteURL, "https://hub.bktencent.com")
			want(t, "http.addr", c.HTTP.Addr, ":5000")
			want(t, "http.debug.addr (the front serves the figures on the cache's port)", c.HTTP.Debug.Addr, "")
			want(t, "storage type", c.Storage.Type(), "filesystem")
			want(t, "rootdirectory", c.Storage["filesystem"]["rootdirectory"], "/var/lib/registry")
			want(t, "delete.enabled", c.Storage["delete"]["enabled"], true)
			want(t, "redirect.disable", c.Storage["redirect"]["disable"], true)
			want(t, "blobdescriptor", c.Storage["cache"]["blobdescriptor"], "inmemory")
			want(t, "X-Content-Type-Options", strings.Join(c.HTTP.Headers["X-Content-Type-Options"], ","), "nosniff")
			want(t, "proxy.username", c.Proxy.Username, "")
			want(t, "tls", c.HTTP.TLS.Certificate, "")
			want(t, "auth", len(c.Auth), 0)
		}},
		{"host network", host, func(t *testing.T, c *configuration.Configuration) {
			want(t, "http.addr", c.HTTP.Addr, ":5501")
			want(t, "http.debug.addr", c.HTTP.Debug.Addr, "")
			want(t, "proxy.remoteurl", c.Proxy.RemoteURL, "http://127.0.0.1:5999")
		}},
		{"registry:2 alone keeps its debug listener", plain, func(t *testing.T, c *configuration.Configuration) {
			want(t, "http.debug.addr", c.HTTP.Debug.Addr, ":5001")
			want(t, "prometheus", c.HTTP.Debug.Prometheus.Enabled, true)
		}},
		{"registry:2 alone, host network", plainHost, func(t *testing.T, c *configuration.Configuration) {
			want(t, "http.debug.addr", c.HTTP.Debug.Addr, "127.0.0.1:15501")
		}},
		{"tls, htpasswd and upstream credentials", secure, func(t *testing.T, c *configuration.Configuration) {
			want(t, "tls.certificate", c.HTTP.TLS.Certificate, containerTLSCertPath)
			want(t, "tls.key", c.HTTP.TLS.Key, containerTLSKeyPath)
			want(t, "htpasswd path", c.Auth["htpasswd"]["path"], containerHtpasswdPath)
			want(t, "proxy.username", c.Proxy.Username, "bk")
			want(t, "proxy.password", c.Proxy.Password, "p@ss: word#1")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := RenderConfig(tc.spec, "s3cr3t")
			if err != nil {
				t.Fatal(err)
			}
			c, err := configuration.Parse(bytes.NewReader(out))
			if err != nil {
				t.Fatalf("registry 2.8 cannot parse the config: %v\n%s", err, out)
			}
			want(t, "http.secret", c.HTTP.Secret, "s3cr3t")
			tc.check(t, c)
		})
	}
}

func want[T comparable](t *testing.T, what string, got, expected T) {
	t.Helper()
	if got != expected {
		t.Errorf("%s = %v, want %v", what, got, expected)
	}
}

func TestRenderConfigNeedsSecret(t *testing.T) {
	if _, err := RenderConfig(Spec{}.WithDefaults(), ""); err == nil {
		t.Fatal("an empty http secret was accepted")
	}
}

func TestKeptSecret(t *testing.T) {
	ours, _ := RenderConfig(Spec{}.WithDefaults(), "kept-secret")
	guide := []byte("version: 0.1\nhttp:\n  addr: :5000\n  secret: bkhub-5500\n")
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"written by bkcache", ours, "kept-secret"},
		{"guide's guessable secret is replaced", guide, ""},
		{"no file", nil, ""},
		{"garbage after our header", []byte(configHeader + "{{{"), ""},
	}
	for _, tc := range tests {
		if got := KeptSecret(tc.in); got != tc.want {
			t.Errorf("%s: KeptSecret = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestNewSecretIsRandom(t *testing.T) {
	a, _ := NewSecret()
	b, _ := NewSecret()
	if a == b || len(a) < 32 {
		t.Errorf("secrets %q and %q are not random enough", a, b)
	}
}

func TestListenPort(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/c.yaml"
	writeFile(t, path, "http:\n  addr: :5500\n")
	if got := listenPort(path); got != 5500 {
		t.Errorf("listenPort = %d, want 5500", got)
	}
	if got := listenPort(dir + "/missing.yaml"); got != 0 {
		t.Errorf("listenPort of a missing file = %d, want 0", got)
	}
}
