package registrytest

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// Relay is an HTTP reverse proxy on 127.0.0.1 in front of an upstream
// registry, for tests and benchmarks of what a cache asks its upstream: it
// logs and counts every request and its body bytes, and on demand caps the
// total rate, delays response headers, cuts blob bodies mid-way, serves wrong
// bytes for a digest, lies about a blob's size (more bytes than it has, or an
// endless body), goes down (refuses connections) and comes back, or turns
// into a black hole (accepts connections and never answers, also on
// connections already open, until it is lifted).
type Relay struct {
	// Addr is host:port (127.0.0.1:PORT); it stays the same across Down/Up.
	Addr string
	// URL is http://Addr.
	URL string

	target    *url.URL
	transport *http.Transport

	mu          sync.Mutex
	ln          net.Listener
	srv         *http.Server
	conns       map[net.Conn]struct{}
	limiter     *rate.Limiter
	headerDelay time.Duration
	cuts        []*cutRule
	corrupt     map[string]bool // digest -> serve wrong bytes
	bodies      map[string]BodyLie
	hole        chan struct{} // non-nil while a black hole: closed when lifted
	// log holds requests from their arrival, kept up to date as they run, so a
	// test that reads it the moment its client is done sees the last bytes too.
	log []*RelayRequest
}

// RelayRequest is one request the relay passed on, with what went back.
type RelayRequest struct {
	Method, Path, Query, Range string
	Status                     int
	// Bytes is the response body bytes sent to the client.
	Bytes int64
	// Start is when the request arrived; Headers when the upstream's response
	// headers arrived at the relay (zero when it never answered); End when the
	// body was done or cut.
	Start, Headers, End time.Time
	// Cut is true when the relay dropped the connection mid-body.
	Cut bool
}

type cutRule struct {
	path  string // "" = any blob GET
	after int64
	times int // < 0: every time
}

// StartRelay runs a relay to upstream (a base URL, e.g. reg.URL) until the test ends.
func StartRelay(t testing.TB, upstream string) *Relay {
	t.Helper()
	r, err := NewRelay(upstream)
	if err != nil {
		t.Fatalf("start relay: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// NewRelay runs a relay to upstream until Close; for benchmarks outside a test.
func NewRelay(upstream string) (*Relay, error) {
	u, err := url.Parse(upstream)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("relay upstream %q: not a base URL", upstream)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Relay{
		Addr:      ln.Addr().String(),
		target:    u,
		transport: &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 256, ForceAttemptHTTP2: false},
		conns:     map[net.Conn]struct{}{},
		corrupt:   map[string]bool{},
		bodies:    map[string]BodyLie{},
	}
	r.URL = "http://" + r.Addr
	r.serve(ln)
	return r, nil
}

func (r *Relay) serve(ln net.Listener) {
	srv := &http.Server{
		Handler: http.HandlerFunc(r.handle),
		ConnState: func(c net.Conn, s http.ConnState) {
			r.mu.Lock()
			defer r.mu.Unlock()
			switch s {
			case http.StateNew:
				r.conns[c] = struct{}{}
			case http.StateClosed, http.StateHijacked:
				delete(r.conns, c)
			}
		},
		ErrorLog: discardLogger,
	}
	r.ln, r.srv = ln, srv
	go srv.Serve(ln) //nolint:errcheck // ends with Down or Close
}

// Close stops the relay for good.
func (r *Relay) Close() {
	r.Down()
	r.transport.CloseIdleConnections()
}

// Down closes the listener and every open connection: new connections are
// refused until Up, as when a link or the upstream goes away.
func (r *Relay) Down() {
	r.mu.Lock()
	srv := r.srv
	r.srv, r.ln = nil, nil
	r.mu.Unlock()
	if srv != nil {
		srv.Close() // closes the listener and all connections
	}
}

// Up listens again on the same address after Down.
func (r *Relay) Up() error {
	r.mu.Lock()
	up := r.srv != nil
	r.mu.Unlock()
	if up {
		return nil
	}
	var ln net.Listener
	var err error
	for range 50 { // the port may linger for a moment after Close
		if ln, err = net.Listen("tcp", r.Addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("relay up on %s: %w", r.Addr, err)
	}
	r.mu.Lock()
	r.serve(ln)
	r.mu.Unlock()
	return nil
}

// SetRate caps the total body bytes per second sent to all clients together; 0 lifts the cap.
func (r *Relay) SetRate(bytesPerSecond int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if bytesPerSecond <= 0 {
		r.limiter = nil
		return
	}
	burst := int(min(max(bytesPerSecond/20, 1024), 32<<10))
	r.limiter = rate.NewLimiter(rate.Limit(bytesPerSecond), burst)
}

// SetHeaderDelay holds every response's headers for d after the upstream's arrive.
func (r *Relay) SetHeaderDelay(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.headerDelay = d
}

// CutAfter drops the connection of the next times blob GET responses whose
// path ends with path ("" = any blob) after n body bytes; times < 0 = every one.
func (r *Relay) CutAfter(path string, n int64, times int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cuts = append(r.cuts, &cutRule{path: path, after: n, times: times})
}

// ClearCuts removes every CutAfter rule.
func (r *Relay) ClearCuts() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cuts = nil
}

// Corrupt makes blob GETs of digest (sha256:…) get wrong bytes (same length) while on.
func (r *Relay) Corrupt(digest string, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.corrupt[digest] = on
}

// BodyLie is how the relay lies about a blob's body.
type BodyLie int

const (
	// BodyTrue sends the upstream's body as it is.
	BodyTrue BodyLie = iota
	// BodyOversize announces and sends 1 MiB more than the blob has.
	BodyOversize
	// BodyEndless sends no Content-Length and, after the blob, bytes without end.
	BodyEndless
)

// LieAbout makes blob GETs of digest get the body lie describes.
func (r *Relay) LieAbout(digest string, lie BodyLie) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bodies[digest] = lie
}

// BlackHole turns the relay into a black hole (on) or back (off): while on,
// connections are accepted and requests read, but nothing is answered, and
// responses already under way send no further byte. Requests held then go
// on when it is lifted, as a link that comes back delivers what it held.
func (r *Relay) BlackHole(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case on && r.hole == nil:
		r.hole = make(chan struct{})
	case !on && r.hole != nil:
		close(r.hole)
		r.hole = nil
	}
}

// silence waits while the relay is a black hole; false when the client left.
func (r *Relay) silence(ctx context.Context) bool {
	r.mu.Lock()
	hole := r.hole
	r.mu.Unlock()
	if hole == nil {
		return true
	}
	select {
	case <-hole:
		return true
	case <-ctx.Done():
		return false
	}
}

// Log is every request so far, in arrival order, those still running included
// (End is zero until they are done).
func (r *Relay) Log() []RelayRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]RelayRequest, len(r.log))
	for i, q := range r.log {
		out[i] = *q
	}
	return out
}

// ResetLog forgets the requests so far (counters start again from zero).
func (r *Relay) ResetLog() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = nil
}

// BlobGets is how many GETs of blob digest (any repository) the relay passed on; "" counts all blobs.
func (r *Relay) BlobGets(digest string) int {
	n := 0
	for _, q := range r.Log() {
		if d, ok := blobOf(q.Path); ok && q.Method == http.MethodGet && (digest == "" || d == digest) {
			n++
		}
	}
	return n
}

// BlobBytes is the body bytes of blob GETs sent to clients; with digest "" of all blobs.
func (r *Relay) BlobBytes(digest string) int64 {
	var n int64
	for _, q := range r.Log() {
		if d, ok := blobOf(q.Path); ok && q.Method == http.MethodGet && (digest == "" || d == digest) {
			n += q.Bytes
		}
	}
	return n
}

// BlobGetsByDigest counts blob GETs per digest.
func (r *Relay) BlobGetsByDigest() map[string]int {
	m := map[string]int{}
	for _, q := range r.Log() {
		if d, ok := blobOf(q.Path); ok && q.Method == http.MethodGet {
			m[d]++
		}
	}
	return m
}

// TotalBytes is the body bytes of every response sent so far.
func (r *Relay) TotalBytes() int64 {
	var n int64
	for _, q := range r.Log() {
		n += q.Bytes
	}
	return n
}

func blobOf(path string) (string, bool) {
	i := strings.LastIndex(path, "/blobs/")
	if i < 0 || !strings.HasPrefix(path, "/v2/") {
		return "", false
	}
	d := path[i+len("/blobs/"):]
	return d, strings.HasPrefix(d, "sha256:")
}

// arrive logs a request as it arrives; publish brings its entry up to date.
func (r *Relay) arrive(q RelayRequest) *RelayRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := &q
	r.log = append(r.log, e)
	return e
}

func (r *Relay) publish(e *RelayRequest, q RelayRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*e = q
}

func (r *Relay) handle(w http.ResponseWriter, req *http.Request) {
	q := RelayRequest{Method: req.Method, Path: req.URL.Path, Query: req.URL.RawQuery, Range: req.Header.Get("Range"), Start: time.Now()}
	entry := r.arrive(q)
	defer func() {
		q.End = time.Now()
		r.publish(entry, q)
	}()
	if !r.silence(req.Context()) {
		return
	}
	out := req.Clone(req.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = r.target.Scheme, r.target.Host
	out.Host = req.Host // the upstream names us in its Location and token realm
	out.Header.Del("Connection")
	resp, err := r.transport.RoundTrip(out)
	if err != nil {
		q.Status = http.StatusBadGateway
		http.Error(w, "relay: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	q.Headers = time.Now()

	delay, limiter, corrupt, lie, cutAt := r.faults(req, resp)

	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-req.Context().Done():
			return
		}
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	var extra io.Reader
	switch lie {
	case BodyOversize:
		extra = io.LimitReader(endless{}, 1<<20)
		if resp.ContentLength >= 0 {
			w.Header().Set("Content-Length", strconv.FormatInt(resp.ContentLength+1<<20, 10))
		}
	case BodyEndless:
		extra = endless{}
		w.Header().Del("Content-Length")
	}
	if !r.silence(req.Context()) {
		return
	}
	q.Status = resp.StatusCode
	r.publish(entry, q)
	w.WriteHeader(resp.StatusCode)
	http.NewResponseController(w).Flush() //nolint:errcheck // the client may be gone
	buf := make([]byte, 32<<10)
	body := io.Reader(resp.Body)
	if extra != nil {
		body = io.MultiReader(resp.Body, extra)
	}
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			p := buf[:n]
			if corrupt {
				p[0] ^= 0xff
			}
			if cutAt >= 0 && q.Bytes+int64(len(p)) > cutAt {
				p = p[:cutAt-q.Bytes]
			}
			if err := wait(req.Context(), limiter, len(p)); err != nil {
				return
			}
			if !r.silence(req.Context()) {
				return
			}
			// Counted before they can reach the client, so the count is never behind what a client has.
			q.Bytes += int64(len(p))
			r.publish(entry, q)
			m, werr := w.Write(p)
			if werr != nil {
				q.Bytes -= int64(len(p) - m)
				return
			}
			http.NewResponseController(w).Flush() //nolint:errcheck
			if cutAt >= 0 && q.Bytes >= cutAt {
				q.Cut = true
				panic(http.ErrAbortHandler) // the client sees the connection drop; the deferred publish still runs
			}
		}
		if rerr != nil {
			return
		}
	}
}

// faults are what the relay does to this response: the header delay, the
// rate limiter, a corrupted blob, a lying body, a cut after so many bytes (-1:
// none; a cut with a count is used up).
func (r *Relay) faults(req *http.Request, resp *http.Response) (delay time.Duration, limiter *rate.Limiter, corrupt bool, lie BodyLie, cutAt int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delay, limiter = r.headerDelay, r.limiter
	digest, isBlob := blobOf(req.URL.Path)
	isBlob = isBlob && req.Method == http.MethodGet
	corrupt = isBlob && r.corrupt[digest]
	lie = BodyTrue
	if isBlob && resp.StatusCode == http.StatusOK {
		lie = r.bodies[digest]
	}
	cutAt = -1
	if isBlob && resp.StatusCode/100 == 2 {
		for _, c := range r.cuts {
			if c.times != 0 && (c.path == "" || strings.HasSuffix(req.URL.Path, c.path)) {
				cutAt = c.after
				if c.times > 0 {
					c.times--
				}
				break
			}
		}
	}
	return delay, limiter, corrupt, lie, cutAt
}

func wait(ctx context.Context, l *rate.Limiter, n int) error {
	if l == nil {
		return nil
	}
	for n > 0 {
		k := min(n, l.Burst())
		if err := l.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

var discardLogger = log.New(io.Discard, "", 0)

// endless reads as bytes without end.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}
