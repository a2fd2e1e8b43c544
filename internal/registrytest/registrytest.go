// Package registrytest runs an upstream registry on 127.0.0.1 for end-to-end
// tests and benchmarks: go-containerregistry's registry, behind a handler that
// counts what a cache asks it for and can require basic auth.
package registrytest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Registry is an upstream registry listening on 127.0.0.1.
type Registry struct {
	// Addr is host:port, e.g. 127.0.0.1:40123.
	Addr string
	// URL is http://Addr.
	URL      string
	username string
	password string
	token    string // set: bearer token auth, as Harbor and Docker Hub do
	srv      *http.Server
	ln       net.Listener

	mu        sync.Mutex
	blobGets  map[string]int
	blobBytes int64
}

// Option configures a Registry.
type Option func(*Registry)

// WithBasicAuth makes the registry refuse requests without these credentials.
func WithBasicAuth(username, password string) Option {
	return func(r *Registry) { r.username, r.password = username, password }
}

// WithTokenAuth makes the registry speak token auth: /v2/ challenges with a
// Bearer realm at /token, which hands a token for these credentials only.
// registry:2's proxy can log in only this way (its proxy credentials are
// keyed by token realm), as with Harbor (hub.bktencent.com) and Docker Hub.
func WithTokenAuth(username, password string) Option {
	return func(r *Registry) {
		r.username, r.password = username, password
		b := make([]byte, 16)
		rand.Read(b)
		r.token = hex.EncodeToString(b)
	}
}

// Start runs a registry until the test ends.
func Start(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	r, err := New(opts...)
	if err != nil {
		t.Fatalf("start upstream registry: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// New runs a registry until Close; for benchmarks outside a test.
func New(opts ...Option) (*Registry, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Registry{Addr: ln.Addr().String(), blobGets: map[string]int{}, ln: ln}
	r.URL = "http://" + r.Addr
	for _, o := range opts {
		o(r)
	}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = &http.Server{Handler: r.wrap(inner)}
	go r.srv.Serve(ln) //nolint:errcheck // ends with Close
	return r, nil
}

// Close stops the registry.
func (r *Registry) Close() { r.srv.Close() }

func (r *Registry) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.token != "" {
			if req.URL.Path == "/token" {
				u, p, ok := req.BasicAuth()
				if !ok || u != r.username || p != r.password {
					http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"token":%q,"access_token":%q,"expires_in":300}`, r.token, r.token)
				return
			}
			if req.Header.Get("Authorization") != "Bearer "+r.token {
				// The realm names the host the client asked, so a relay in front stays in the path.
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="registrytest"`, req.Host))
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
		} else if r.username != "" {
			u, p, ok := req.BasicAuth()
			if !ok || u != r.username || p != r.password {
				w.Header().Set("WWW-Authenticate", `Basic realm="registrytest"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
		}
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") {
			digest := req.URL.Path[strings.LastIndex(req.URL.Path, "/")+1:]
			cw := &countingWriter{ResponseWriter: w}
			next.ServeHTTP(cw, req)
			r.mu.Lock()
			r.blobGets[digest]++
			r.blobBytes += cw.n
			r.mu.Unlock()
			return
		}
		next.ServeHTTP(w, req)
	})
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

// BlobGets is how many times blobs were fetched (GET), in total.
func (r *Registry) BlobGets() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.blobGets {
		n += c
	}
	return n
}

// BlobBytes is how many blob bytes the registry has sent.
func (r *Registry) BlobBytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blobBytes
}

// Image builds a random linux image of layers layers of layerSize bytes each.
func Image(layers int, layerSize int64, arch string) (v1.Image, error) {
	img, err := random.Image(layerSize, int64(layers))
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config.Cmd = []string{"/bin/true"}
	return mutate.ConfigFile(img, cf)
}

// Push writes img to repo:tag (e.g. "blueking/app:1") and returns its digest.
func (r *Registry) Push(repoTag string, img v1.Image) (v1.Hash, error) {
	ref, err := name.ParseReference(r.Addr+"/"+repoTag, name.Insecure)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Write(ref, img, r.remoteOptions()...); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	return img.Digest()
}

// PushIndex writes a multi-platform index (linux/amd64 and linux/arm64) to repo:tag.
func (r *Registry) PushIndex(repoTag string, layers int, layerSize int64) (v1.ImageIndex, error) {
	idx, err := Index(layers, layerSize)
	if err != nil {
		return nil, err
	}
	if err := PushTo(r.Addr, repoTag, idx, r.remoteOptions()...); err != nil {
		return nil, err
	}
	return idx, nil
}

func (r *Registry) remoteOptions() []remote.Option {
	if r.username == "" {
		return nil
	}
	return []remote.Option{remote.WithAuth(&authn.Basic{Username: r.username, Password: r.password})}
}

// PushTo writes img (a v1.Image or v1.ImageIndex) to addr/repoTag over plain HTTP.
func PushTo(addr, repoTag string, t remote.Taggable, opts ...remote.Option) error {
	ref, err := name.ParseReference(addr+"/"+repoTag, name.Insecure)
	if err != nil {
		return err
	}
	switch v := t.(type) {
	case v1.ImageIndex:
		return remote.WriteIndex(ref, v, opts...)
	case v1.Image:
		return remote.Write(ref, v, opts...)
	default:
		return fmt.Errorf("push %s: %T is neither image nor index", ref, t)
	}
}

// Index builds a multi-platform index (linux/amd64 and linux/arm64) of random images.
func Index(layers int, layerSize int64) (v1.ImageIndex, error) {
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := Image(layers, layerSize, arch)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.DockerManifestList), nil
}

// WithBase puts base's layers under img's, as images built FROM one base share them.
func WithBase(base, img v1.Image) (v1.Image, error) {
	bl, err := base.Layers()
	if err != nil {
		return nil, err
	}
	il, err := img.Layers()
	if err != nil {
		return nil, err
	}
	out, err := mutate.AppendLayers(empty.Image, append(bl, il...)...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs = nil
	for _, l := range append(bl, il...) {
		d, err := l.DiffID()
		if err != nil {
			return nil, err
		}
		cf.RootFS.DiffIDs = append(cf.RootFS.DiffIDs, d)
	}
	cf.History = nil
	return mutate.ConfigFile(out, cf)
}
