package front

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// frontEnv is a front under test: an upstream registry behind a relay, the
// front with Debian's registry:2 as its children, storage in a temp dir.
type frontEnv struct {
	t        *testing.T
	upstream *registrytest.Registry
	relay    *registrytest.Relay
	root     string // the registry's storage rootdirectory
	config   string // the registry config path
	srv      *Server
	host     string // front host:port
	log      *syncBuffer
	knobs    envConfig
}

type envOption func(*envConfig)

type envConfig struct {
	upstreamOpts []registrytest.Option
	extraConfig  string // appended to the registry config
	proxyCreds   string // "user:pass" for proxy.username/password
	rate         int64
	tlsCert      string
	tlsKey       string
	// realProbes: the front's own probe defaults, not the fast test ones.
	realProbes  bool
	maxBlobSize int64
}

func withRealProbes() envOption         { return func(c *envConfig) { c.realProbes = true } }
func withMaxBlobSize(n int64) envOption { return func(c *envConfig) { c.maxBlobSize = n } }

func withUpstream(opts ...registrytest.Option) envOption {
	return func(c *envConfig) { c.upstreamOpts = opts }
}
func withExtraConfig(yaml string) envOption { return func(c *envConfig) { c.extraConfig += yaml } }
func withProxyCreds(userPass string) envOption {
	return func(c *envConfig) { c.proxyCreds = userPass }
}
func withRate(r int64) envOption { return func(c *envConfig) { c.rate = r } }
func withTLS(cert, key string) envOption {
	return func(c *envConfig) { c.tlsCert, c.tlsKey = cert, key }
}

// newEnv starts an upstream, a relay and a front on fresh storage.
func newEnv(t *testing.T, opts ...envOption) *frontEnv {
	t.Helper()
	var c envConfig
	for _, o := range opts {
		o(&c)
	}
	e := &frontEnv{t: t, upstream: registrytest.Start(t, c.upstreamOpts...), root: t.TempDir(), log: &syncBuffer{}, knobs: c}
	e.relay = registrytest.StartRelay(t, e.upstream.URL)
	tlsPart := ""
	if c.tlsCert != "" {
		tlsPart = fmt.Sprintf(", tls: {certificate: %s, key: %s}", c.tlsCert, c.tlsKey)
	}
	cfg := fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: true}, fields: {service: registry}}
storage:
  filesystem: {rootdirectory: %s}
  delete: {enabled: true}
  redirect: {disable: true}
  cache: {blobdescriptor: inmemory}
http: {addr: ":5000", secret: test-secret, headers: {X-Content-Type-Options: [nosniff]}%s}
health: {storagedriver: {enabled: true, interval: 10s, threshold: 3}}
proxy:
  remoteurl: %s
`, e.root, tlsPart, e.relay.URL)
	if c.proxyCreds != "" {
		u, p, _ := strings.Cut(c.proxyCreds, ":")
		cfg += fmt.Sprintf("  username: %s\n  password: %s\n", u, p)
	}
	cfg += c.extraConfig
	e.config = filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("front log:\n%s", e.log.String())
		}
	})
	e.start(c.rate)
	return e
}

// start runs a new front process on the env's storage (again after stop).
func (e *frontEnv) start(rate int64) {
	e.t.Helper()
	if _, err := os.Stat(registrytest.DistributionBinary); err != nil {
		e.t.Fatalf("%s is missing: apt-get install docker-registry", registrytest.DistributionBinary)
	}
	opts := Options{
		RegistryConfig: e.config, Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0",
		RunDir: e.t.TempDir(), RegistryBin: registrytest.DistributionBinary, UpstreamRate: rate,
		ProbeInterval: 200 * time.Millisecond, ProbeMaxInterval: time.Second, ProbeTimeout: 2 * time.Second,
		MaxBlobSize: e.knobs.maxBlobSize, Log: e.log,
	}
	if e.knobs.realProbes {
		opts.ProbeInterval, opts.ProbeMaxInterval, opts.ProbeTimeout = 0, 0, 0
	}
	srv, err := New(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		srv.Close()
		e.t.Fatalf("start front: %v\n%s", err, e.log.String())
	}
	e.t.Cleanup(srv.Close)
	e.srv, e.host = srv, srv.Addr()
}

// stop ends the front as SIGTERM would.
func (e *frontEnv) stop() { e.srv.Close() }

// push puts img at repoTag on the upstream.
func (e *frontEnv) push(repoTag string, img v1.Image) {
	e.t.Helper()
	if _, err := e.upstream.Push(repoTag, img); err != nil {
		e.t.Fatal(err)
	}
}

func (e *frontEnv) status() Status {
	e.t.Helper()
	resp, err := http.Get("http://" + e.srv.MetricsAddr() + "/bkcache/status")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		e.t.Fatal(err)
	}
	return st
}

// settle waits until no blob is being fetched or stored.
func (e *frontEnv) settle() {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for e.srv.flights.len() > 0 {
		if time.Now().After(deadline) {
			e.t.Fatalf("blobs still in flight after a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitMode waits until the front reports mode.
func (e *frontEnv) waitMode(mode string) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for e.status().Mode != mode {
		if time.Now().After(deadline) {
			e.t.Fatalf("front did not turn %s within 30 s: %+v", mode, e.status())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pull reads every blob of repoTag through the front as crane would,
// checking each against its digest, and returns the image's blob digests.
func (e *frontEnv) pull(ctx context.Context, repoTag string, ropts ...remote.Option) ([]string, error) {
	ref, err := name.ParseReference(e.host+"/"+repoTag, name.Insecure)
	if err != nil {
		return nil, err
	}
	return pullRef(ctx, ref, ropts...)
}

func pullRef(ctx context.Context, ref name.Reference, ropts ...remote.Option) ([]string, error) {
	img, err := remote.Image(ref, append([]remote.Option{remote.WithContext(ctx)}, ropts...)...)
	if err != nil {
		return nil, err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	if _, err := img.RawConfigFile(); err != nil {
		return nil, err
	}
	digests := []string{cfgName.String()}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	for _, l := range layers {
		rc, err := l.Compressed() // verifies size and digest as it reads
		if err != nil {
			return nil, err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
		d, _ := l.Digest()
		digests = append(digests, d.String())
	}
	return digests, nil
}

// blobDigests lists an image's config and layer digests.
func blobDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	out := []string{cfg.String()}
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		out = append(out, d.String())
	}
	return out
}

// get sends a raw request to the front.
func (e *frontEnv) get(method, path string, header http.Header) (*http.Response, []byte, error) {
	req, err := http.NewRequest(method, "http://"+e.host+path, nil)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// linked reports whether storage links digest into repo, and holds its data.
func (e *frontEnv) linked(repo, digest string) bool {
	st := storage{root: filepath.Join(e.root, "docker", "registry", "v2")}
	return st.linked(repo, digest) && st.hasData(digest)
}

func basicAuth(user, pass string) remote.Option {
	return remote.WithAuth(&authn.Basic{Username: user, Password: pass})
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
