package transfer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bkcache/bkcache/pkg/blobfetch"
)

// BlobCache is an http.RoundTripper in front of a source registry that fetches
// each blob once: a GET for a blob it holds is answered from disk, and
// concurrent GETs of one digest wait for the single fetch in flight. Every
// byte it stores is checked against its digest before anyone reads it, and a
// broken download resumes where it stopped (blobfetch.Fetcher).
//
// go-containerregistry fetches a blob again for every repository it is pushed
// to and for every image that shares it; this makes a list copy cost the
// upstream link each blob once.
type BlobCache struct {
	// Meter, when set, gets the bytes of each blob as they arrive.
	Meter *Meter

	dir  string
	next http.RoundTripper

	mu       sync.Mutex
	inflight map[string]*sync.WaitGroup

	fetched    atomic.Int64 // blob bytes fetched from the source
	fetchCount atomic.Int64
	resumes    atomic.Int64 // broken reads continued with Range
	served     atomic.Int64 // blob bytes answered from disk
}

// NewBlobCache keeps blobs in dir (which it creates) and fetches through next.
func NewBlobCache(dir string, next http.RoundTripper) (*BlobCache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob cache %s: %w", dir, err)
	}
	if next == nil {
		next = http.DefaultTransport
	}
	return &BlobCache{dir: dir, next: next, inflight: map[string]*sync.WaitGroup{}}, nil
}

// FetchedBytes is the blob bytes fetched from the source so far.
func (c *BlobCache) FetchedBytes() int64 { return c.fetched.Load() }

// FetchedBlobs is how many blobs were fetched from the source so far.
func (c *BlobCache) FetchedBlobs() int64 { return c.fetchCount.Load() }

// Resumes is how many broken blob reads were continued with Range.
func (c *BlobCache) Resumes() int64 { return c.resumes.Load() }

// ServedBytes is the blob bytes answered from disk instead of the source.
func (c *BlobCache) ServedBytes() int64 { return c.served.Load() }

// RoundTrip implements http.RoundTripper.
func (c *BlobCache) RoundTrip(req *http.Request) (*http.Response, error) {
	digest, ok := blobDigest(req)
	if !ok {
		return c.next.RoundTrip(req)
	}
	for {
		if resp, ok := c.fromDisk(req, digest); ok {
			return resp, nil
		}
		c.mu.Lock()
		if wg, busy := c.inflight[digest]; busy {
			c.mu.Unlock()
			wg.Wait() // the fetch in flight may have stored it; look again
			if resp, ok := c.fromDisk(req, digest); ok {
				return resp, nil
			}
			// It failed: this request fetches (or waits for the next one).
			continue
		}
		wg := &sync.WaitGroup{}
		wg.Add(1)
		c.inflight[digest] = wg
		c.mu.Unlock()
		resp, err := c.fetch(req, digest)
		c.mu.Lock()
		delete(c.inflight, digest)
		c.mu.Unlock()
		wg.Done()
		return resp, err
	}
}

// blobDigest recognises GET /v2/<repo>/blobs/sha256:<hex> without a Range.
func blobDigest(req *http.Request) (string, bool) {
	if req.Method != http.MethodGet || req.Header.Get("Range") != "" {
		return "", false
	}
	i := strings.LastIndex(req.URL.Path, "/blobs/sha256:")
	if i < 0 {
		return "", false
	}
	d := req.URL.Path[i+len("/blobs/"):]
	if len(d) != len("sha256:")+64 {
		return "", false
	}
	return d, true
}

func (c *BlobCache) path(digest string) string {
	return filepath.Join(c.dir, strings.TrimPrefix(digest, "sha256:"))
}

func (c *BlobCache) fromDisk(req *http.Request, digest string) (*http.Response, bool) {
	f, err := os.Open(c.path(digest))
	if err != nil {
		return nil, false
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, false
	}
	c.served.Add(info.Size())
	return &http.Response{
		Status: "200 OK", StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{
			"Content-Length":        {strconv.FormatInt(info.Size(), 10)},
			"Docker-Content-Digest": {digest},
			"Content-Type":          {"application/octet-stream"},
		},
		Body: f, ContentLength: info.Size(), Request: req,
	}, true
}

// fetch gets the blob from the source into a temp file with the resumable,
// digest-checked Fetcher (a broken read continues with Range from where it
// stopped), moves it into place and answers from it. An error answer of the
// source is handed back as it came, so go-containerregistry's transports
// (token refresh, retries) see it.
func (c *BlobCache) fetch(req *http.Request, digest string) (*http.Response, error) {
	f := &blobfetch.Fetcher{
		Client:   &http.Client{Transport: c.next},
		Header:   req.Header.Clone(),
		Counter:  &c.fetched,
		OnResume: func(int64, error) { c.resumes.Add(1) },
	}
	dl, err := f.Open(req.Context(), req.URL.String(), digest)
	if err != nil {
		var ue *blobfetch.UpstreamError
		if errors.As(err, &ue) {
			return &http.Response{
				Status: fmt.Sprintf("%d %s", ue.StatusCode, http.StatusText(ue.StatusCode)), StatusCode: ue.StatusCode,
				Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: ue.Header,
				Body: io.NopCloser(bytes.NewReader(ue.Body)), ContentLength: int64(len(ue.Body)), Request: req,
			}, nil
		}
		return nil, err
	}
	defer dl.Close()
	tmp, err := os.CreateTemp(c.dir, ".fetch-*")
	if err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	d, _ := v1.NewHash(digest)
	n, err := dl.Copy(req.Context(), io.MultiWriter(tmp, c.Meter.Writer(d)))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("fetch blob %s: %w", digest, err)
	}
	c.fetchCount.Add(1)
	if err := os.Rename(tmp.Name(), c.path(digest)); err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	if out, ok := c.fromDisk(req, digest); ok {
		c.served.Add(-n) // this read is the fetch itself, not a saving
		return out, nil
	}
	return &http.Response{StatusCode: http.StatusInternalServerError, Body: io.NopCloser(bytes.NewReader(nil)), Request: req}, fmt.Errorf("blob cache lost %s", digest)
}
