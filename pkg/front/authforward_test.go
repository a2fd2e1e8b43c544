package front

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// An upstream with Basic auth (an intranet registry, Nexus): manifests,
// tags and blobs pull through the front with the registry config's proxy
// credentials, which registry:2's proxy child alone would not send; the
// child's config holds no credentials.
func TestBasicAuthUpstream(t *testing.T) {
	e := newEnv(t, withUpstream(registrytest.WithBasicAuth("bk", "s3cret-Basic")), withProxyCreds("bk:s3cret-Basic"))
	img, _ := registrytest.Image(2, 50<<10, "amd64")
	e.push("lib/basic:1", img)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.pull(ctx, "lib/basic:1"); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	if _, err := e.pull(ctx, "lib/basic@"+d.String()); err != nil {
		t.Fatalf("by digest: %v", err)
	}
	resp, body, err := e.get(http.MethodGet, "/v2/lib/basic/tags/list", nil)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"1"`) {
		t.Fatalf("tags: %v, %v, %s", err, resp, body)
	}
	if n := e.relay.BlobGets(""); n != 3 {
		t.Errorf("upstream blob GETs %d, want 3", n)
	}
	conf, err := os.ReadFile(filepath.Join(e.srv.opts.RunDir, "proxy.yml"))
	if err != nil {
		matches, _ := filepath.Glob(filepath.Join(e.srv.opts.RunDir, "*"))
		t.Fatalf("proxy child config: %v (run dir: %v)", err, matches)
	}
	if strings.Contains(string(conf), "s3cret-Basic") || !strings.Contains(string(conf), "remoteurl: http://127.0.0.1:") {
		t.Errorf("proxy child config:\n%s", conf)
	}
	if strings.Contains(e.log.String(), "s3cret-Basic") {
		t.Errorf("the password is in the log")
	}
}
