package front

import (
	"strings"
	"testing"

	"encoding/json"
	"net/http"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// ?ns= naming another registry is refused with a registry error naming
// both; the proxied registry's own name is served.
func TestNamespaceCheck(t *testing.T) {
	e := newEnv(t)
	img, _ := registrytest.Image(1, 1000, "amd64")
	e.push("library/busybox:1", img)
	resp, body, err := e.get(http.MethodGet, "/v2/library/busybox/manifests/1?ns=docker.io", nil)
	if err != nil {
		t.Fatal(err)
	}
	var rerr struct {
		Errors []registryError `json:"errors"`
	}
	json.Unmarshal(body, &rerr)
	if resp.StatusCode != 404 || len(rerr.Errors) != 1 || rerr.Errors[0].Code != "NAME_UNKNOWN" ||
		!strings.Contains(rerr.Errors[0].Message, "docker.io") || !strings.Contains(rerr.Errors[0].Message, e.relay.Addr) {
		t.Fatalf("ns=docker.io: %d %s", resp.StatusCode, body)
	}
	for _, ns := range []string{e.relay.Addr, strings.ToUpper(e.relay.Addr)} {
		resp, _, err = e.get(http.MethodGet, "/v2/library/busybox/manifests/1?ns="+ns, http.Header{"Accept": {"application/vnd.docker.distribution.manifest.v2+json"}})
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("ns=%s: %v %v", ns, err, resp)
		}
	}
	d := blobDigests(t, img)[1]
	resp, _, _ = e.get(http.MethodGet, "/v2/library/busybox/blobs/"+d+"?ns=registry-1.docker.io", nil)
	if resp.StatusCode != 404 {
		t.Errorf("blob with ns=registry-1.docker.io: %d", resp.StatusCode)
	}
	if st := e.status(); st.Counters.NsRejected != 2 {
		t.Errorf("nsRejected = %d, want 2", st.Counters.NsRejected)
	}
}

func TestSameRegistry(t *testing.T) {
	for _, tt := range []struct {
		ns, host, scheme string
		same             bool
	}{
		{"docker.io", "registry-1.docker.io", "https", true},
		{"index.docker.io", "docker.io", "https", true},
		{"docker.io", "hub.bktencent.com", "https", false},
		{"hub.bktencent.com", "hub.bktencent.com:443", "https", true},
		{"hub.bktencent.com:5000", "hub.bktencent.com", "https", false},
		{"127.0.0.1:5000", "127.0.0.1:5000", "http", true},
		{"127.0.0.1:5001", "127.0.0.1:5000", "http", false},
		{"HUB.bktencent.com", "hub.bktencent.com", "https", true},
	} {
		if got := sameRegistry(tt.ns, tt.host, tt.scheme); got != tt.same {
			t.Errorf("sameRegistry(%q, %q) = %v", tt.ns, tt.host, got)
		}
	}
}

func TestParseRoute(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	for _, tt := range []struct {
		path string
		want route
	}{
		{"/v2/", route{kind: "base"}},
		{"/v2/_catalog", route{kind: "catalog"}},
		{"/v2/library/busybox/blobs/" + d, route{kind: "blob", repo: "library/busybox", ref: d}},
		{"/v2/a/blobs/b/blobs/" + d, route{kind: "blob", repo: "a/blobs/b", ref: d}},
		{"/v2/a/b/c/manifests/v1.2", route{kind: "manifest", repo: "a/b/c", ref: "v1.2"}},
		{"/v2/a/blobs/uploads/", route{kind: "upload", repo: "a"}},
		{"/v2/a/tags/list", route{kind: "tags", repo: "a"}},
		{"/v2/../etc/blobs/" + d, route{}},
		{"/v2/UPPER/blobs/" + d, route{}},
	} {
		if got := parseRoute(tt.path); got != tt.want {
			t.Errorf("parseRoute(%q) = %+v, want %+v", tt.path, got, tt.want)
		}
	}
}
