package front

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// The front terminates TLS and checks htpasswd credentials itself, answering
// as registry:2 does; the children get neither.
func TestTLSAndHtpasswd(t *testing.T) {
	certPath, keyPath, pool := registrytest.SelfSigned(t, t.TempDir())
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600)
	e := newEnv(t, withExtraConfig(fmt.Sprintf(`auth: {htpasswd: {realm: bkcache-test, path: %s}}
`, htpasswd)), withTLS(certPath, keyPath))
	img, _ := registrytest.Image(2, 50<<10, "amd64")
	e.push("lib/secure:1", img)

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, path := range []string{"/v2/", "/v2/lib/secure/manifests/1", "/v2/lib/secure/blobs/" + blobDigests(t, img)[1]} {
		resp, err := client.Get("https://" + e.host + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Basic realm="bkcache-test"` {
			t.Errorf("%s without credentials: %d %q", path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		req, _ := http.NewRequest(http.MethodGet, "https://"+e.host+path, nil)
		req.SetBasicAuth("alice", "wrong")
		resp, err = client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("%s with a wrong password: %d", path, resp.StatusCode)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ref, _ := name.ParseReference(e.host + "/lib/secure:1")
	got, err := pullRef(ctx, ref, basicAuth("alice", "s3cret"), remote.WithTransport(client.Transport))
	if err != nil || len(got) != 3 {
		t.Fatalf("pull over TLS with credentials: %v", err)
	}
	// Plain HTTP on a TLS listener gets nothing useful.
	if resp, err := http.Get("http://" + e.host + "/v2/"); err == nil && resp.StatusCode == 200 {
		t.Error("plain HTTP served on the TLS listener")
	}
	// The children's configs carry neither TLS nor auth, and only their owner reads them.
	for _, kind := range []string{"proxy", "local"} {
		p := filepath.Join(e.srv.opts.RunDir, kind+".yml")
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(p)
		if info.Mode().Perm() != 0o600 || strings.Contains(string(data), "htpasswd") || strings.Contains(string(data), "tls") {
			t.Errorf("%s: mode %v\n%s", p, info.Mode().Perm(), data)
		}
	}
}

// An upstream that wants a token (as Harbor and Docker Hub do): the front
// logs in with the proxy credentials of the registry config.
func TestTokenAuthUpstream(t *testing.T) {
	e := newEnv(t, withUpstream(registrytest.WithTokenAuth("bk", "pw")), withProxyCreds("bk:pw"))
	img, _ := registrytest.Image(2, 50<<10, "amd64")
	e.push("lib/private:1", img)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.pull(ctx, "lib/private:1"); err != nil {
		t.Fatal(err)
	}
	if n := e.relay.BlobGets(""); n != 3 {
		t.Errorf("upstream blob GETs %d, want 3", n)
	}
}
