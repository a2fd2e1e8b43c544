package front

import (
	"bytes"
	"net/http"
	"strconv"
	"testing"
)

// A small range of an uncached blob (P2P size probes, Spegel's bytes=0-0)
// joins the one download like any GET: the right byte as 206, the blob then
// stored, one upstream GET. A HEAD of another uncached blob starts nothing.
func TestProbeRangeJoinsDownload(t *testing.T) {
	e := newEnv(t)
	d, blob := oneBlob(t, e, "lib/probe", 300<<10)
	resp, body, err := e.get(http.MethodGet, blobURLPath("lib/probe", d), http.Header{"Range": {"bytes=0-0"}})
	if err != nil || resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, blob[:1]) ||
		resp.Header.Get("Content-Range") != "bytes 0-0/"+strconv.Itoa(len(blob)) {
		t.Fatalf("bytes=0-0: %v, %v, %q", err, resp, body)
	}
	e.settle()
	if !e.linked("lib/probe", d) {
		t.Error("the probed blob was not stored")
	}
	if n := e.relay.BlobGets(d); n != 1 {
		t.Errorf("upstream served the blob %d times, want once", n)
	}

	h, other := oneBlob(t, e, "lib/probe", 10<<10)
	resp, _, err = e.get(http.MethodHead, blobURLPath("lib/probe", h), nil)
	if err != nil || resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(other)) {
		t.Fatalf("HEAD: %v, %v", err, resp)
	}
	if e.relay.BlobGets(h) != 0 || e.srv.flights.len() != 0 || e.srv.store.hasData(h) {
		t.Error("a HEAD started a download")
	}
}

// A probe-sized range of an uncached blob whose upstream flips a byte gets
// an error, never a completed 206: its one byte waits for the digest.
func TestProbeRangeOfWrongBlobFails(t *testing.T) {
	e := newEnv(t)
	d, _ := oneBlob(t, e, "lib/probeflip", 300<<10)
	e.relay.Corrupt(d, true)
	for _, rg := range []string{"bytes=0-0", "bytes=-1", "bytes=10-19"} {
		resp, body, err := e.get(http.MethodGet, blobURLPath("lib/probeflip", d), http.Header{"Range": {rg}})
		if err == nil && resp.StatusCode/100 == 2 && int64(len(body)) == resp.ContentLength {
			t.Errorf("%s: a complete %d with %d bytes of a wrong blob", rg, resp.StatusCode, len(body))
		}
		e.settle()
	}
	if e.srv.store.hasData(d) {
		t.Error("a wrong blob was stored")
	}
	if e.status().Counters.DigestMismatches == 0 {
		t.Error("no digest mismatch counted")
	}
}
