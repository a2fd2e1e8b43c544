package front

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// oneBlob pushes a one-layer image of size bytes to repo and returns the
// layer's digest and bytes.
func oneBlob(t *testing.T, e *frontEnv, repo string, size int64) (string, []byte) {
	t.Helper()
	img, err := registrytest.Image(1, size, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	e.push(repo+":1", img)
	layers, _ := img.Layers()
	d, _ := layers[0].Digest()
	rc, _ := layers[0].Compressed()
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return d.String(), b
}

func blobURLPath(repo, d string) string { return "/v2/" + repo + "/blobs/" + d }

// A slow upstream: every client gets its response headers within a second
// of the upstream's, and reads the bytes as they come, long before the blob
// is complete; one that arrives late gets its headers at once too.
func TestSlowUpstreamHeadersAtOnce(t *testing.T) {
	e := newEnv(t)
	const size = 1 << 20
	d, blob := oneBlob(t, e, "lib/slow", size)
	e.relay.SetRate(200 << 10) // the blob takes ~5 s
	type result struct {
		asked, headers, done time.Time
		body                 []byte
		err                  error
	}
	fetch := func(res *result) {
		res.asked = time.Now()
		resp, err := http.Get("http://" + e.host + blobURLPath("lib/slow", d))
		if err != nil {
			res.err = err
			return
		}
		defer resp.Body.Close()
		res.headers = time.Now()
		res.body, res.err = io.ReadAll(resp.Body)
		res.done = time.Now()
	}
	results := make([]result, 5)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == len(results)-1 {
				time.Sleep(2 * time.Second) // joins in the middle of the download
			}
			fetch(&results[i])
		}()
	}
	wg.Wait()
	var upstream registrytest.RelayRequest
	for _, q := range e.relay.Log() {
		if strings.HasSuffix(q.Path, d) && q.Method == http.MethodGet {
			upstream = q
		}
	}
	if upstream.Headers.IsZero() || e.relay.BlobGets(d) != 1 {
		t.Fatalf("upstream blob GETs: %d, %+v", e.relay.BlobGets(d), upstream)
	}
	if upstream.End.Sub(upstream.Headers) < 3*time.Second {
		t.Fatalf("the throttled upstream sent the blob in %s: the test proves nothing", upstream.End.Sub(upstream.Headers))
	}
	for i, r := range results {
		if r.err != nil || !bytes.Equal(r.body, blob) {
			t.Fatalf("client %d: %v, %d bytes", i, r.err, len(r.body))
		}
		// Headers within 1 s of the upstream's, or of asking when it asked later.
		ref := upstream.Headers
		if r.asked.After(ref) {
			ref = r.asked
		}
		lag := r.headers.Sub(ref)
		t.Logf("client %d: headers %s after the upstream's (or its asking), body done %s after them", i, lag, r.done.Sub(upstream.Headers))
		if lag > time.Second {
			t.Errorf("client %d got headers %s after the upstream's (asked %s after them)", i, lag, r.asked.Sub(upstream.Headers))
		}
	}
}

// A connection cut mid-blob is resumed with Range: the client gets the
// whole blob and the upstream sent it about once.
func TestCutMidBlobResumes(t *testing.T) {
	e := newEnv(t)
	d, blob := oneBlob(t, e, "lib/cut", 2<<20)
	size := int64(len(blob))
	e.relay.CutAfter(d, 700<<10, 1)
	resp, body, err := e.get(http.MethodGet, blobURLPath("lib/cut", d), nil)
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, blob) {
		t.Fatalf("get: %v, status %v, %d bytes", err, resp, len(body))
	}
	var ranges []string
	for _, q := range e.relay.Log() {
		if strings.HasSuffix(q.Path, d) {
			ranges = append(ranges, q.Range)
		}
	}
	if len(ranges) != 2 || ranges[0] != "" || !strings.HasPrefix(ranges[1], "bytes=") {
		t.Errorf("upstream requests' Range: %q, want a full GET then one resume", ranges)
	}
	if got := e.relay.BlobBytes(d); got > size+64<<10 {
		t.Errorf("upstream sent %d bytes for a %d-byte blob", got, size)
	}
	e.settle()
	if !e.linked("lib/cut", d) {
		t.Error("the resumed blob was not stored")
	}
	if st := e.status(); st.Counters.Resumes != 1 || st.Counters.UpstreamBytes != e.relay.BlobBytes(d) {
		t.Errorf("counters %+v; relay counted %d bytes", st.Counters, e.relay.BlobBytes(d))
	}
}

// Wrong bytes from the upstream: nothing stored, every client sees an error
// (never a complete wrong blob), and once the upstream is fixed a pull works.
func TestWrongBytesNeverServed(t *testing.T) {
	e := newEnv(t)
	d, blob := oneBlob(t, e, "lib/bad", 300<<10)
	e.relay.Corrupt(d, true)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body, err := e.get(http.MethodGet, blobURLPath("lib/bad", d), nil)
			if err == nil && resp.StatusCode == 200 && int64(len(body)) == resp.ContentLength {
				t.Errorf("client %d read a complete blob (digest %s) from a corrupt upstream", i, digest.FromBytes(body))
			}
		}()
	}
	wg.Wait()
	e.settle()
	if e.srv.store.hasData(d) {
		t.Fatal("a corrupt download was stored")
	}
	if st := e.status(); st.Counters.DigestMismatches == 0 {
		t.Errorf("counters %+v: no digest mismatch counted", st.Counters)
	}
	e.relay.Corrupt(d, false)
	resp, body, err := e.get(http.MethodGet, blobURLPath("lib/bad", d), nil)
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, blob) {
		t.Fatalf("after the fix: %v, %v, %d bytes", err, resp, len(body))
	}
	e.settle()
	if !e.linked("lib/bad", d) {
		t.Error("the good download was not stored")
	}
}

// 8 concurrent Range requests of random sizes on a cold blob, during its
// single upstream fetch, reassemble to the blob.
func TestConcurrentRangesOnColdBlob(t *testing.T) {
	e := newEnv(t)
	d, blob := oneBlob(t, e, "lib/pieces", 1<<20)
	size := len(blob)
	e.relay.SetRate(512 << 10) // ~2 s: the pieces overlap the download
	// Random piece sizes, small ones too: every ranged GET joins the one download.
	weights, sum := make([]int, 8), 0
	for i := range weights {
		weights[i] = 1 + rand.IntN(10)
		sum += weights[i]
	}
	spare := size - 8
	cuts := []int{0}
	for i := range 7 {
		cuts = append(cuts, cuts[i]+1+spare*weights[i]/sum)
	}
	cuts = append(cuts, size)
	out := make([]byte, size)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, b := cuts[i], cuts[i+1]
			if a == b {
				return
			}
			resp, body, err := e.get(http.MethodGet, blobURLPath("lib/pieces", d), http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", a, b-1)}})
			if err != nil || resp.StatusCode != http.StatusPartialContent || len(body) != b-a {
				t.Errorf("piece %d-%d: %v, %v, %d bytes", a, b-1, err, resp, len(body))
				return
			}
			if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", a, b-1, size) {
				t.Errorf("piece %d-%d: Content-Range %q", a, b-1, cr)
			}
			copy(out[a:b], body)
		}()
	}
	wg.Wait()
	if digest.FromBytes(out).String() != d || !bytes.Equal(out, blob) {
		t.Error("the pieces do not reassemble to the blob")
	}
	e.settle()
	if n := e.relay.BlobGets(d); n != 1 {
		t.Errorf("upstream served the blob %d times, want once", n)
	}
	if !e.linked("lib/pieces", d) {
		t.Error("the blob was not stored")
	}
}

// Every Range shape, on a blob still arriving and on a stored one.
func TestRangeShapes(t *testing.T) {
	e := newEnv(t)
	d, blob := oneBlob(t, e, "lib/shapes", 400<<10)
	size := len(blob)
	cr := func(a, b int) string { return fmt.Sprintf("bytes %d-%d/%d", a, b, size) }
	cases := []struct {
		rng     string
		status  int
		want    []byte
		content string
	}{
		{"bytes=100-199", 206, blob[100:200], cr(100, 199)},
		{fmt.Sprintf("bytes=%d-", size-600), 206, blob[size-600:], cr(size-600, size-1)},
		{"bytes=-500", 206, blob[size-500:], cr(size-500, size-1)},
		{fmt.Sprintf("bytes=%d-%d", size-10, size+100), 206, blob[size-10:], cr(size-10, size-1)},
		{fmt.Sprintf("bytes=%d-", size), 416, nil, fmt.Sprintf("bytes */%d", size)},
		{"bytes=0-9,20-29", 200, blob, ""},
		{"bytes=5-", 206, blob[5:], cr(5, size-1)},
		{"", 200, blob, ""},
	}
	check := func(when string) {
		var wg sync.WaitGroup
		for _, c := range cases {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h := http.Header{}
				if c.rng != "" {
					h.Set("Range", c.rng)
				}
				resp, body, err := e.get(http.MethodGet, blobURLPath("lib/shapes", d), h)
				if err != nil {
					t.Errorf("%s %s: %v", when, c.rng, err)
					return
				}
				if resp.StatusCode != c.status || (c.want != nil && !bytes.Equal(body, c.want)) || resp.Header.Get("Content-Range") != c.content {
					t.Errorf("%s %s: status %d, %d bytes, Content-Range %q; want %d, %d bytes, %q",
						when, c.rng, resp.StatusCode, len(body), resp.Header.Get("Content-Range"), c.status, len(c.want), c.content)
				}
			}()
		}
		wg.Wait()
	}
	// In flight: a slow full download runs while the shapes are asked.
	e.relay.SetRate(100 << 10)
	full := make(chan error, 1)
	go func() {
		_, body, err := e.get(http.MethodGet, blobURLPath("lib/shapes", d), nil)
		if err == nil && !bytes.Equal(body, blob) {
			err = errors.New("wrong bytes")
		}
		full <- err
	}()
	waitFor(t, func() bool { return e.srv.flights.len() == 1 })
	check("in flight")
	if err := <-full; err != nil {
		t.Fatal(err)
	}
	e.relay.SetRate(0)
	e.settle()
	if !e.linked("lib/shapes", d) {
		t.Fatal("not stored")
	}
	check("stored")
	if n := e.relay.BlobGets(d); n != 1 {
		t.Errorf("upstream served the blob %d times, want once", n)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatal("condition not met within 30 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
