package blobfetch

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/time/rate"
)

// flakySource serves one blob and misbehaves as told, request by request.
type flakySource struct {
	flaky
	mu     sync.Mutex
	ranges []string // Range header of each request
	sent   int64
}

type flaky struct {
	blob        []byte
	cutAfter    []int64 // per request: send this many body bytes, then drop the connection (-1: no cut)
	status      []int   // per request: answer this status instead (0: normal)
	stallAfter  int64   // first request: send this many bytes, then send nothing more (0: no stall)
	ignoreRange bool
	wrong       bool // flip a byte in the middle
	release     chan struct{}
}

func (s *flakySource) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	i := len(s.ranges)
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	s.mu.Unlock()
	if i < len(s.status) && s.status[i] != 0 {
		http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, s.status[i])
		return
	}
	body := s.blob
	if s.wrong {
		body = bytes.Clone(body)
		body[len(body)/2] ^= 0xff
	}
	start := int64(0)
	if rg := r.Header.Get("Range"); rg != "" && !s.ignoreRange {
		first, _, _ := strings.Cut(strings.TrimPrefix(rg, "bytes="), "-")
		n, err := strconv.ParseInt(first, 10, 64)
		if err != nil {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
		start = n
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", n, len(body)-1, len(body)))
	}
	body = body[start:]
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Docker-Content-Digest", digest.FromBytes(s.blob).String())
	if start > 0 {
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	w.(http.Flusher).Flush()
	if s.release != nil && i == 0 {
		<-s.release
	}
	limit := int64(len(body))
	if i < len(s.cutAfter) && s.cutAfter[i] >= 0 {
		limit = min(limit, s.cutAfter[i])
	}
	if i == 0 && s.stallAfter > 0 {
		limit = min(limit, s.stallAfter)
	}
	n, _ := w.Write(body[:limit])
	s.mu.Lock()
	s.sent += int64(n)
	s.mu.Unlock()
	if limit < int64(len(body)) {
		w.(http.Flusher).Flush()
		if i == 0 && s.stallAfter > 0 {
			<-r.Context().Done()
		}
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
}

func (s *flakySource) Ranges() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

func randomBlob(t *testing.T, n int) ([]byte, string) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b, digest.FromBytes(b).String()
}

func TestFetch(t *testing.T) {
	const size = 300 << 10
	tests := []struct {
		name        string
		src         flaky
		wantRanges  []string
		wantErr     error // errors.Is
		wantUpErr   int   // an *UpstreamError with this status
		wantCounted int64 // bytes read from the source; 0: size
	}{
		{name: "plain", wantRanges: []string{""}},
		{name: "cut once, resumed with Range",
			src:         flaky{cutAfter: []int64{100 << 10}},
			wantRanges:  []string{"", "bytes=102400-307199"},
			wantCounted: size},
		{name: "cut twice",
			src:        flaky{cutAfter: []int64{10 << 10, 50 << 10}},
			wantRanges: []string{"", "bytes=10240-307199", "bytes=61440-307199"}},
		{name: "source ignores Range: what arrived again is skipped",
			src:         flaky{cutAfter: []int64{100 << 10}, ignoreRange: true},
			wantRanges:  []string{"", "bytes=102400-307199"},
			wantCounted: size + 100<<10},
		{name: "503 on a resume is retried",
			src:        flaky{cutAfter: []int64{1000}, status: []int{0, 503}},
			wantRanges: []string{"", "bytes=1000-307199", "bytes=1000-307199"}},
		{name: "wrong bytes",
			src:        flaky{wrong: true},
			wantRanges: []string{""},
			wantErr:    ErrDigestMismatch},
		{name: "404 is not retried",
			src:        flaky{status: []int{404}},
			wantRanges: []string{""},
			wantUpErr:  404},
		{name: "404 on a resume is not retried",
			src:        flaky{cutAfter: []int64{1000}, status: []int{0, 404}},
			wantRanges: []string{"", "bytes=1000-307199"},
			wantUpErr:  404},
		{name: "gives up when no attempt makes progress",
			src:        flaky{cutAfter: []int64{1000, 0, 0, 0}},
			wantRanges: []string{"", "bytes=1000-307199", "bytes=1000-307199"},
			wantErr:    errGaveUp},
		{name: "stalled read is resumed",
			src:        flaky{stallAfter: 5000},
			wantRanges: []string{"", "bytes=5000-307199"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blob, dgst := randomBlob(t, size)
			src := &flakySource{flaky: tt.src}
			src.blob = blob
			srv := httptest.NewServer(src)
			defer srv.Close()
			var counter atomic.Int64
			var resumedAt []int64
			f := &Fetcher{Counter: &counter, Backoff: time.Millisecond, Retries: 2, IdleTimeout: 300 * time.Millisecond,
				OnResume: func(off int64, err error) { resumedAt = append(resumedAt, off) }}
			var out bytes.Buffer
			n, err := f.Fetch(context.Background(), srv.URL+"/v2/r/blobs/"+dgst, dgst, &out)
			switch {
			case tt.wantUpErr != 0:
				var ue *UpstreamError
				if !errors.As(err, &ue) || ue.StatusCode != tt.wantUpErr {
					t.Fatalf("err = %v, want an UpstreamError %d", err, tt.wantUpErr)
				}
			case tt.wantErr == errGaveUp:
				if err == nil || !strings.Contains(err.Error(), "gave up") {
					t.Fatalf("err = %v, want gave up", err)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if n != size || !bytes.Equal(out.Bytes(), blob) {
					t.Fatalf("got %d bytes, equal=%v", n, bytes.Equal(out.Bytes(), blob))
				}
				want := cmpOr(tt.wantCounted, size)
				if counter.Load() != want {
					t.Errorf("counted %d bytes from the source, want %d", counter.Load(), want)
				}
			}
			if got := src.Ranges(); strings.Join(got, ",") != strings.Join(tt.wantRanges, ",") {
				t.Errorf("requests' Range = %q, want %q", got, tt.wantRanges)
			}
			if int64(out.Len()) != n {
				t.Errorf("wrote %d bytes, reported %d", out.Len(), n)
			}
		})
	}
}

var errGaveUp = errors.New("gave up")

func cmpOr(a, b int64) int64 {
	if a != 0 {
		return a
	}
	return b
}

// Open returns with the size as soon as the source's headers arrive, before
// any byte of the body.
func TestFetchOpenReturnsAtHeaders(t *testing.T) {
	blob, dgst := randomBlob(t, 1000)
	src := &flakySource{flaky: flaky{blob: blob, release: make(chan struct{})}}
	srv := httptest.NewServer(src)
	defer srv.Close()
	ctx := context.Background()
	d, err := (&Fetcher{}).Open(ctx, srv.URL+"/b", dgst)
	if err != nil {
		t.Fatal(err)
	}
	if d.Size != 1000 || d.Header.Get("Docker-Content-Digest") != dgst {
		t.Errorf("Size %d, digest header %q", d.Size, d.Header.Get("Docker-Content-Digest"))
	}
	close(src.release)
	var out bytes.Buffer
	if _, err := d.Copy(ctx, &out); err != nil || !bytes.Equal(out.Bytes(), blob) {
		t.Fatalf("copy: %v", err)
	}
}

// The limiter gates every byte: a rate that cannot deliver the blob before
// the deadline fails the fetch instead of letting it through.
func TestFetchLimiter(t *testing.T) {
	blob, dgst := randomBlob(t, 64<<10)
	srv := httptest.NewServer(&flakySource{flaky: flaky{blob: blob}})
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	f := &Fetcher{Limiter: rate.NewLimiter(1024, 1024)}
	_, err := f.Fetch(ctx, srv.URL+"/b", dgst, &bytes.Buffer{})
	if err == nil {
		t.Fatal("a 1 KiB/s limit delivered 64 KiB within 2 s")
	}
	// An ample limit lets it through.
	f.Limiter = rate.NewLimiter(rate.Limit(1<<30), 1<<20)
	var out bytes.Buffer
	if _, err := f.Fetch(context.Background(), srv.URL+"/b", dgst, &out); err != nil || !bytes.Equal(out.Bytes(), blob) {
		t.Fatalf("with an ample limit: %v", err)
	}
}

// Cancelling Copy's context stops a download that would otherwise hang.
func TestFetchCancel(t *testing.T) {
	blob, dgst := randomBlob(t, 10000)
	srv := httptest.NewServer(&flakySource{flaky: flaky{blob: blob, stallAfter: 100}})
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	d, err := (&Fetcher{}).Open(context.Background(), srv.URL+"/b", dgst)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(200*time.Millisecond, cancel)
	_, err = d.Copy(ctx, &bytes.Buffer{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tt := range []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 10-99/100", 10, 100, true},
		{"bytes 0-0/*", 0, -1, true},
		{"bytes */100", 0, 0, false},
		{"items 1-2/3", 0, 0, false},
		{"", 0, 0, false},
	} {
		s, tot, ok := parseContentRange(tt.in)
		if s != tt.start || tot != tt.total || ok != tt.ok {
			t.Errorf("parseContentRange(%q) = %d, %d, %v", tt.in, s, tot, ok)
		}
	}
}

// A download never exceeds the size it may have: the caller's (from the
// manifest), else the source's Content-Length, else MaxSize.
func TestFetchSizeBounds(t *testing.T) {
	blob, dgst := randomBlob(t, 100<<10)
	for _, tc := range []struct {
		name     string
		declared int64 // -1: unknown
		maxSize  int64
		header   string // Content-Length sent; "" = none (chunked)
		extra    int    // bytes sent after the blob
		wantErr  error
	}{
		{"declared, true", int64(len(blob)), 0, strconv.Itoa(len(blob)), 0, nil},
		{"undeclared, chunked, true", -1, 0, "", 0, nil},
		{"declared, chunked, endless", int64(len(blob)), 0, "", 1 << 20, ErrTooLarge},
		{"declared, announces more", int64(len(blob)), 0, strconv.Itoa(len(blob) + 10), 10, ErrTooLarge},
		{"undeclared, announces more than the cap", -1, 50 << 10, strconv.Itoa(len(blob)), 0, ErrTooLarge},
		{"undeclared, chunked beyond the cap", -1, 50 << 10, "", 0, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.header != "" {
					w.Header().Set("Content-Length", tc.header)
				}
				w.WriteHeader(http.StatusOK)
				w.Write(blob)
				w.Write(bytes.Repeat([]byte{'x'}, tc.extra))
			}))
			defer srv.Close()
			f := &Fetcher{MaxSize: tc.maxSize, Retries: 1}
			var out bytes.Buffer
			d, err := f.OpenSized(context.Background(), srv.URL, dgst, tc.declared)
			if err == nil {
				_, err = d.Copy(context.Background(), &out)
			}
			if !errors.Is(err, tc.wantErr) && !(tc.wantErr == nil && err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			limit := int64(len(blob))
			if tc.maxSize > 0 && tc.declared < 0 {
				limit = min(limit, tc.maxSize)
			}
			if int64(out.Len()) > limit {
				t.Errorf("wrote %d bytes, more than %d", out.Len(), limit)
			}
			if tc.wantErr == nil && !bytes.Equal(out.Bytes(), blob) {
				t.Errorf("wrote %d bytes, not the blob", out.Len())
			}
		})
	}
}
