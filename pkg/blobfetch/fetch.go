package blobfetch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/time/rate"
)

// Fetcher downloads blobs: resumable, rate-limited, digest-checked. Its zero
// value works; one Fetcher may serve many downloads at once.
type Fetcher struct {
	// Client sends the requests (redirects followed); nil means http.DefaultClient.
	// For an authenticated source, give it go-containerregistry's transport.
	Client *http.Client
	// Header is added to every request (e.g. User-Agent).
	Header http.Header
	// Limiter, when set, is shared by every download: the bytes read from the
	// source, together, do not exceed its rate. A *rate.Limiter is one.
	Limiter Limiter
	// Counter, when set, gets every byte read from the source added to it.
	Counter *atomic.Int64
	// Retries is how many attempts in a row may fail without one byte of
	// progress before the download gives up; 0 means 5.
	Retries int
	// Backoff is the first pause before a resume; it doubles up to 30 s. 0 means 500 ms.
	Backoff time.Duration
	// IdleTimeout: a read that gets no byte for this long counts as broken and
	// is resumed; 0 means 60 s.
	IdleTimeout time.Duration
	// OnResume, when set, is called before each resume with the offset it
	// resumes from and the error that broke the previous read.
	OnResume func(offset int64, err error)
	// MaxSize caps a download whose size neither the caller (OpenSized) nor
	// the source (Content-Length) declared; 0 means DefaultMaxSize.
	MaxSize int64
}

// Limiter takes bytes from a shared rate: WaitN blocks until n bytes (at
// most Burst) may be read.
type Limiter interface {
	WaitN(ctx context.Context, n int) error
	Burst() int
}

// unlimited: no limiter, or a *rate.Limiter without a limit.
func unlimited(l Limiter) bool {
	if l == nil {
		return true
	}
	rl, ok := l.(*rate.Limiter)
	return ok && (rl == nil || rl.Limit() == rate.Inf)
}

// DefaultMaxSize caps a blob of unknown size: larger than any layer a
// registry:2 upstream serves in practice, small enough that an endless body
// stops long before it fills a disk.
const DefaultMaxSize = 16 << 30

// Download is one blob being fetched. Open returns it as soon as the source's
// response headers arrive; Copy then streams the bytes.
type Download struct {
	// Size is the blob's size from the source's headers, -1 when it sent none.
	Size int64
	// Header is the source's first answer's headers.
	Header http.Header

	f       *Fetcher
	url     string
	want    digest.Digest
	limit   int64           // bytes the blob may have at most
	ctx     context.Context // Open's: every attempt lives inside it
	body    io.ReadCloser
	mu      sync.Mutex         // guards cancel: Copy's context may fire any time
	actx    context.Context    // the current attempt's
	cancel  context.CancelFunc // of the current attempt
	resumes int
}

const maxErrorBody = 64 << 10

// Fetch downloads the blob at url into w and checks it against dgst: Open then Copy.
func (f *Fetcher) Fetch(ctx context.Context, url string, dgst string, w io.Writer) (int64, error) {
	d, err := f.Open(ctx, url, dgst)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	return d.Copy(ctx, w)
}

// Open sends GET url and returns when the source's response headers have
// arrived. A non-2xx answer is an *UpstreamError; a failure to reach the
// source is returned as it is (no retry: the caller decides whether the source
// is down). ctx must outlive Copy: every resume is made inside it.
func (f *Fetcher) Open(ctx context.Context, url string, dgst string) (*Download, error) {
	return f.OpenSized(ctx, url, dgst, -1)
}

// OpenSized is Open for a blob whose size the caller knows (from the
// manifest that named it; -1: unknown). The download never exceeds it: a
// source announcing another size is refused, one sending more is cut. With
// neither size known, MaxSize bounds it.
func (f *Fetcher) OpenSized(ctx context.Context, url string, dgst string, size int64) (*Download, error) {
	want, err := digest.Parse(dgst)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: bad digest %q: %w", url, dgst, err)
	}
	if !want.Algorithm().Available() {
		return nil, fmt.Errorf("fetch %s: digest algorithm %s is not supported", url, want.Algorithm())
	}
	d := &Download{Size: -1, f: f, url: url, want: want, ctx: ctx}
	resp, err := d.request(0)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		// A 206 to a request without Range is as wrong as a 404.
		d.cancelAttempt()
		return nil, upstreamError(url, resp)
	}
	d.Header = resp.Header
	d.Size = resp.ContentLength
	d.limit = cmp.Or(f.MaxSize, DefaultMaxSize)
	switch {
	case size >= 0 && d.Size >= 0 && d.Size != size:
		d.cancelAttempt()
		resp.Body.Close()
		return nil, &SizeError{URL: url, Limit: size, What: fmt.Sprintf("announced %d bytes, other", d.Size)}
	case size >= 0:
		d.Size, d.limit = size, size
	case d.Size > d.limit:
		d.cancelAttempt()
		resp.Body.Close()
		return nil, &SizeError{URL: url, Limit: d.limit, What: fmt.Sprintf("announced %d bytes, more", d.Size)}
	case d.Size >= 0:
		d.limit = d.Size
	}
	d.body = resp.Body
	return d, nil
}

// request sends one GET, from offset when it is > 0, in an attempt context
// that an idle read can cancel.
func (d *Download) request(offset int64) (*http.Response, error) {
	actx, cancel := context.WithCancel(d.ctx)
	req, err := http.NewRequestWithContext(actx, http.MethodGet, d.url, nil)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("fetch %s: %w", d.url, err)
	}
	for k, vs := range d.f.Header {
		req.Header[k] = append([]string(nil), vs...)
	}
	// Blobs are compressed already; a transparently gunzipped answer would be wrong bytes.
	req.Header.Set("Accept-Encoding", "identity")
	if offset > 0 {
		// With the size known, a closed range: some registries (go-containerregistry's)
		// understand only bytes=A-B.
		last := ""
		if d.Size > 0 {
			last = strconv.FormatInt(d.Size-1, 10)
		}
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-"+last)
	}
	client := d.f.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("fetch %s: %w", d.url, err)
	}
	d.mu.Lock()
	d.actx, d.cancel = actx, cancel
	d.mu.Unlock()
	return resp, nil
}

func upstreamError(url string, resp *http.Response) *UpstreamError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	return &UpstreamError{URL: url, StatusCode: resp.StatusCode, Header: resp.Header, Body: body}
}

// Resumes is how many times the download was resumed so far.
func (d *Download) Resumes() int { return d.resumes }

// Close releases the connection; safe after Copy and twice.
func (d *Download) Close() error {
	if d.body != nil {
		d.body.Close()
		d.body = nil
	}
	d.cancelAttempt()
	return nil
}

// Copy writes the blob into w as its bytes arrive and returns how many it
// wrote. A broken or stalled read is resumed with Range (bytes=N-LAST, or
// bytes=N- when the size is unknown) from the first byte
// not yet received (bytes are never written twice; when the source ignores
// Range, the bytes already written are read again and skipped). It returns nil
// only when all bytes arrived and match the digest; a mismatch is a
// *DigestError (errors.Is ErrDigestMismatch). w has seen every byte by then:
// the caller must not use them before Copy returns nil. Copy closes d.
func (d *Download) Copy(ctx context.Context, w io.Writer) (int64, error) {
	defer d.Close()
	stop := context.AfterFunc(ctx, d.cancelAttempt)
	defer stop()
	c := blobReader{d: d, w: w, hash: d.want.Algorithm().Hash(), buf: make([]byte, 64<<10)}
	maxFailures := cmp.Or(d.f.Retries, 5)
	failures := 0
	var lastErr error
	for {
		if d.body == nil {
			if failures > maxFailures {
				return c.written, fmt.Errorf("fetch %s: gave up after %d failed attempts at byte %d of %d: %w", d.url, failures, c.written, d.Size, lastErr)
			}
			if d.f.OnResume != nil {
				d.f.OnResume(c.written, lastErr)
			}
			if err := sleep(ctx, d.ctx, backoff(cmp.Or(d.f.Backoff, 500*time.Millisecond), failures)); err != nil {
				return c.written, fmt.Errorf("fetch %s: %w", d.url, err)
			}
			d.resumes++
			if err := d.resume(&c); err != nil {
				if e := ctxErr(ctx, d.ctx); e != nil {
					return c.written, fmt.Errorf("fetch %s: %w", d.url, e)
				}
				if !retryable(err) {
					return c.written, err
				}
				failures++
				lastErr = err
				continue
			}
		}
		progressed, err := c.drain()
		if err == nil {
			break
		}
		if e := ctxErr(ctx, d.ctx); e != nil {
			return c.written, fmt.Errorf("fetch %s: %w", d.url, e)
		}
		if !retryable(err) {
			return c.written, err
		}
		if progressed {
			failures = 0
		}
		failures++
		lastErr = err
	}
	if d.Size >= 0 && c.written != d.Size {
		return c.written, fmt.Errorf("fetch %s: got %d bytes, the source announced %d", d.url, c.written, d.Size)
	}
	if got := digest.NewDigest(d.want.Algorithm(), c.hash); got != d.want {
		return c.written, &DigestError{URL: d.url, Want: d.want, Got: got, Size: c.written}
	}
	return c.written, nil
}

func (d *Download) cancelAttempt() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cancel != nil {
		d.cancel()
	}
}

// resume asks for the bytes from c.written on and sets c.skip when the source
// answers with more than that.
func (d *Download) resume(c *blobReader) error {
	resp, err := d.request(c.written)
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		// The source ignores Range: read it all again, skip what w has.
		c.skip = c.written
		if d.Size < 0 {
			d.Size = resp.ContentLength
		}
	case http.StatusPartialContent:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start > c.written {
			d.cancelAttempt()
			resp.Body.Close()
			return fmt.Errorf("fetch %s: asked for bytes from %d, the source answered Content-Range %q", d.url, c.written, resp.Header.Get("Content-Range"))
		}
		c.skip = c.written - start
		if d.Size < 0 && total >= 0 {
			d.Size = total
		}
	default:
		d.cancelAttempt()
		return upstreamError(d.url, resp)
	}
	d.body = resp.Body
	return nil
}

// parseContentRange reads "bytes START-END/TOTAL" (TOTAL may be "*": -1).
func parseContentRange(v string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	first, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return start, total, true
}

// blobReader moves the bytes of the current answer into w and the hash.
type blobReader struct {
	d       *Download
	w       io.Writer
	hash    hash.Hash
	buf     []byte
	written int64
	skip    int64
}

// errIdle marks a read cancelled because no byte arrived for IdleTimeout.
var errIdle = errors.New("no data from the source")

// writeError is a failure of the destination, never retried.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write blob: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// drain reads the current answer to its end. It returns nil at a clean end,
// else the error that broke it (the body is closed either way) and whether
// any byte arrived.
func (c *blobReader) drain() (progressed bool, err error) {
	d := c.d
	idle := cmp.Or(d.f.IdleTimeout, 60*time.Second)
	var stalled atomic.Bool
	d.mu.Lock()
	cancel := d.cancel // this attempt's, not a later one's
	d.mu.Unlock()
	timer := time.AfterFunc(idle, func() { stalled.Store(true); cancel() })
	defer func() {
		timer.Stop()
		d.body.Close()
		d.body = nil
		d.cancelAttempt()
	}()
	buf := c.buf
	if !unlimited(d.f.Limiter) {
		buf = buf[:min(len(buf), max(d.f.Limiter.Burst(), 1))]
	}
	for {
		n, rerr := d.body.Read(buf)
		if n > 0 {
			progressed = true
			timer.Stop() // time spent waiting for the limiter is not a stall
			if d.f.Counter != nil {
				d.f.Counter.Add(int64(n))
			}
			if err := d.f.wait(d.actx, n); err != nil {
				return progressed, fmt.Errorf("read %s at byte %d: %w", d.url, c.written, err)
			}
			timer.Reset(idle)
			p := buf[:n]
			if c.skip > 0 {
				k := min(c.skip, int64(len(p)))
				c.skip -= k
				p = p[k:]
			}
			if len(p) > 0 {
				if c.written+int64(len(p)) > d.limit {
					return progressed, &SizeError{URL: d.url, Limit: d.limit, What: "sent more bytes"}
				}
				c.hash.Write(p)
				if _, err := c.w.Write(p); err != nil {
					return progressed, &writeError{err}
				}
				c.written += int64(len(p))
			}
		}
		if rerr == io.EOF {
			if d.Size >= 0 && c.written < d.Size {
				return progressed, io.ErrUnexpectedEOF
			}
			return progressed, nil
		}
		if rerr != nil {
			if stalled.Load() {
				rerr = fmt.Errorf("%w for %s", errIdle, idle)
			}
			return progressed, fmt.Errorf("read %s at byte %d: %w", d.url, c.written, rerr)
		}
	}
}

// wait takes n bytes from the shared limiter, in pieces it can grant.
func (f *Fetcher) wait(ctx context.Context, n int) error {
	if unlimited(f.Limiter) {
		return nil
	}
	burst := max(f.Limiter.Burst(), 1)
	for n > 0 {
		k := min(n, burst)
		if err := f.Limiter.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// retryable: broken connections, stalls and 408/429/5xx answers are; answers
// the source means (404, 401, ...), a cache's outage answer (OutageHeader),
// digest mismatches and write failures are not.
func retryable(err error) bool {
	var ue *UpstreamError
	if errors.As(err, &ue) {
		return !Outage(ue.StatusCode, ue.Header) && ue.StatusCode == http.StatusRequestTimeout || ue.StatusCode == http.StatusTooManyRequests || ue.StatusCode >= 500
	}
	var we *writeError
	return !errors.As(err, &we) && !errors.Is(err, ErrDigestMismatch) && !errors.Is(err, ErrTooLarge)
}

func ctxErr(ctxs ...context.Context) error {
	for _, c := range ctxs {
		if c.Err() != nil {
			return context.Cause(c)
		}
	}
	return nil
}

func backoff(first time.Duration, failures int) time.Duration {
	d := first
	for i := 1; i < failures && d < 30*time.Second; i++ {
		d *= 2
	}
	return min(d, 30*time.Second)
}

func sleep(ctx, ctx2 context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-ctx2.Done():
		return context.Cause(ctx2)
	}
}
