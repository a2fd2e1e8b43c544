package front

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// askLocalChild sends a request straight to the local registry:2 child: what
// registry:2 itself answers for the stored blob.
func askLocalChild(t *testing.T, e *frontEnv, method, path string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://registry-local"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := e.srv.local.transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// blobHeaderNames are the headers registry:2 gives a blob answer, which the
// front's own answer from storage must repeat.
var blobHeaderNames = []string{"Content-Type", "Docker-Content-Digest", "Etag", "Content-Length", "Accept-Ranges",
	"Cache-Control", "Content-Range", "Docker-Distribution-Api-Version", "X-Content-Type-Options"}

// A stored blob is served by the front from the storage file, byte-exact and
// with registry:2's status and headers, for GET, HEAD, ranges and
// conditional requests; shapes registry:2 gets wrong follow the front's
// rules (bad or multiple ranges: 200 whole; past the end: 416).
func TestStoredBlobFromFile(t *testing.T) {
	e := newEnv(t)
	const repo = "lib/file"
	d, blob := oneBlob(t, e, repo, 300<<10)
	size := len(blob)
	if _, body, err := e.get(http.MethodGet, blobURLPath(repo, d), nil); err != nil || !bytes.Equal(body, blob) {
		t.Fatalf("cold GET: %v, %d bytes", err, len(body))
	}
	e.settle()
	if !e.linked(repo, d) {
		t.Fatal("not stored")
	}
	before := e.srv.counters.blobFileServes.Load()
	// Shapes both answer alike.
	same := []struct {
		method, rng, ifNoneMatch string
		status                   int
		want                     []byte
	}{
		{http.MethodGet, "", "", 200, blob},
		{http.MethodHead, "", "", 200, nil},
		{http.MethodGet, "bytes=100-199", "", 206, blob[100:200]},
		{http.MethodGet, "bytes=-500", "", 206, blob[size-500:]},
		{http.MethodGet, "bytes=5-", "", 206, blob[5:]},
		{http.MethodGet, fmt.Sprintf("bytes=%d-%d", size-10, size+100), "", 206, blob[size-10:]},
		{http.MethodHead, "bytes=0-9", "", 206, nil},
		{http.MethodGet, "", `"` + d + `"`, 304, nil},
		{http.MethodGet, "", `"sha256:0000"`, 200, blob},
	}
	for _, c := range same {
		h := http.Header{}
		if c.rng != "" {
			h.Set("Range", c.rng)
		}
		if c.ifNoneMatch != "" {
			h.Set("If-None-Match", c.ifNoneMatch)
		}
		what := c.method + " Range " + c.rng + " If-None-Match " + c.ifNoneMatch
		resp, body, err := e.get(c.method, blobURLPath(repo, d), h)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		ref, refBody := askLocalChild(t, e, c.method, blobURLPath(repo, d), h)
		if resp.StatusCode != c.status || ref.StatusCode != c.status {
			t.Errorf("%s: front %d, registry:2 %d; want %d", what, resp.StatusCode, ref.StatusCode, c.status)
		}
		if !bytes.Equal(body, refBody) || (c.want != nil && !bytes.Equal(body, c.want)) {
			t.Errorf("%s: front sent %d bytes, registry:2 %d, want %d", what, len(body), len(refBody), len(c.want))
		}
		for _, k := range blobHeaderNames {
			if got, want := resp.Header.Values(k), ref.Header.Values(k); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: header %s: front %q, registry:2 %q", what, k, got, want)
			}
		}
	}
	// Shapes the front answers by its own rules.
	whole, _ := askLocalChild(t, e, http.MethodGet, blobURLPath(repo, d), nil)
	own := []struct {
		rng, contentRange string
		status            int
		want              []byte
	}{
		{"bytes=abc", "", 200, blob},
		{"bytes=9-3", "", 200, blob},
		{"bytes=0-9,20-29", "", 200, blob},
		{fmt.Sprintf("bytes=%d-", size), "bytes */" + strconv.Itoa(size), 416, nil},
		{"bytes=-0", "bytes */" + strconv.Itoa(size), 416, nil},
	}
	for _, c := range own {
		resp, body, err := e.get(http.MethodGet, blobURLPath(repo, d), http.Header{"Range": {c.rng}})
		if err != nil {
			t.Fatalf("%s: %v", c.rng, err)
		}
		if resp.StatusCode != c.status || resp.Header.Get("Content-Range") != c.contentRange || (c.want != nil && !bytes.Equal(body, c.want)) {
			t.Errorf("Range %s: %d, Content-Range %q, %d bytes; want %d, %q, %d bytes", c.rng, resp.StatusCode,
				resp.Header.Get("Content-Range"), len(body), c.status, c.contentRange, len(c.want))
		}
		if c.status == 200 {
			for _, k := range blobHeaderNames {
				if got, want := resp.Header.Values(k), whole.Header.Values(k); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("Range %s: header %s: front %q, registry:2 without Range %q", c.rng, k, got, want)
				}
			}
		}
	}
	if n := e.srv.counters.blobFileServes.Load() - before; n != int64(len(same)+3) {
		t.Errorf("%d answers came from the storage file, want %d (every satisfiable one)", n, len(same)+3)
	}
	if n := e.relay.BlobGets(d); n != 1 {
		t.Errorf("upstream served the blob %d times, want once", n)
	}
}

// A blob deleted from storage behind the front's back (data or link) is not
// served from an old handle or an old look at the storage: the front fetches
// it again while online, and refuses it while offline.
func TestStoredBlobDeletedBehindTheBack(t *testing.T) {
	e := newEnv(t)
	const repo = "lib/gone"
	d, blob := oneBlob(t, e, repo, 200<<10)
	get := func() (*http.Response, []byte) {
		t.Helper()
		resp, body, err := e.get(http.MethodGet, blobURLPath(repo, d), nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp, body
	}
	if _, body := get(); !bytes.Equal(body, blob) {
		t.Fatal("cold GET: wrong bytes")
	}
	e.settle()
	if _, body := get(); !bytes.Equal(body, blob) {
		t.Fatal("stored GET: wrong bytes")
	}
	// Data gone, link left: fetched again.
	dataDir := filepath.Dir(e.srv.store.dataPath(d))
	if err := os.RemoveAll(dataDir); err != nil {
		t.Fatal(err)
	}
	if resp, body := get(); resp.StatusCode != 200 || !bytes.Equal(body, blob) {
		t.Fatalf("after deleting the data: %d, %d bytes", resp.StatusCode, len(body))
	}
	if n := e.relay.BlobGets(d); n != 2 {
		t.Errorf("upstream served the blob %d times, want twice (once more after the deletion)", n)
	}
	e.settle()
	// Both gone while offline: refused, never served.
	if err := os.RemoveAll(dataDir); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Dir(e.srv.store.linkPath(repo, d))); err != nil {
		t.Fatal(err)
	}
	e.relay.Down()
	e.get(http.MethodGet, "/v2/lib/nothing/manifests/1", nil) //nolint:errcheck // the failure that turns it offline
	e.waitMode("offline")
	resp, body := get()
	if resp.StatusCode != http.StatusServiceUnavailable || bytes.Contains(body, blob[:64]) {
		t.Fatalf("deleted blob while offline: %d, %q", resp.StatusCode, body)
	}
	resp, _, err := e.get(http.MethodHead, blobURLPath(repo, d), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("HEAD of the deleted blob while offline: %v, %v", err, resp)
	}
}
