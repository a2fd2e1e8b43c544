package front

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
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

// selfSigned writes a certificate for 127.0.0.1 and its key; it returns
// their paths and a pool trusting the certificate.
func selfSigned(t *testing.T) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bkcache test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

// The front terminates TLS and checks htpasswd credentials itself, answering
// as registry:2 does; the children get neither.
func TestTLSAndHtpasswd(t *testing.T) {
	certPath, keyPath, pool := selfSigned(t)
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
