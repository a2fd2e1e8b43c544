package front

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bkcache/bkcache/pkg/blobfetch"
	"github.com/bkcache/bkcache/pkg/version"
)

// flights holds the one download per digest, across all repositories and
// clients, and which repository is known to hold each stored blob.
type flights struct {
	mu      sync.Mutex
	m       map[string]*flight
	holders map[string]string // digest -> a repository that links it
}

func (fs *flights) len() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return len(fs.m)
}

func (fs *flights) holder(digest string) (string, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	r, ok := fs.holders[digest]
	return r, ok
}

func (fs *flights) setHolder(digest, repo string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.holders[digest] = repo
}

type blobAction int

const (
	joinFlight blobAction = iota
	fromStorage
	refuseOffline
	passThrough
	cannotStart
)

type decision struct {
	action  blobAction
	err     error // cannotStart: why
	flight  *flight
	file    *os.File // the joiner's own handle on the partial file
	started bool     // this request started the flight
}

// decide picks, atomically with respect to flights starting and ending,
// what answers a blob request: a flight in progress (joined), storage, a
// refusal while offline, a pass-through to the upstream (noStart: a HEAD,
// which carries no bytes to verify), or a new flight.
func (fs *flights) decide(s *Server, repo, digest string, noStart bool) decision {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if f := fs.m[digest]; f != nil {
		if file, err := os.Open(f.path); err == nil {
			f.addRepo(repo)
			return decision{action: joinFlight, flight: f, file: file}
		}
	}
	if s.store.hasData(digest) {
		return decision{action: fromStorage}
	}
	if online, _, _ := s.up.Online(); !online {
		return decision{action: refuseOffline}
	}
	if noStart {
		return decision{action: passThrough}
	}
	f, err := newFlight(s, repo, digest)
	if err != nil {
		return decision{action: cannotStart, err: err}
	}
	file, err := os.Open(f.path)
	if err != nil {
		f.file.Close()
		os.Remove(f.path)
		return decision{action: cannotStart, err: err}
	}
	fs.m[digest] = f
	s.counters.blobFetches.Add(1)
	s.goRun(func() { f.run(s.fetchCtx, s.ctx) })
	return decision{action: joinFlight, flight: f, file: file, started: true}
}

// flight is one upstream download of a blob into a partial file, served to
// every waiter as it grows.
type flight struct {
	s       *Server
	digest  string
	repo    string // the repository that started it: fetched and stored for it first
	path    string
	file    *os.File // written by run only
	started time.Time
	// resumeCount is set by download, read by run (one goroutine).
	resumeCount int

	// Guarded by s.flights.mu: the repositories that asked, in order, and
	// which of them the blob is linked into.
	repos   []string
	linked  map[string]bool
	waiters int

	mu       sync.Mutex
	headers  chan struct{} // closed when the upstream answered (or failed to)
	herr     error         // the failure before headers, if any
	size     int64         // -1: unknown
	written  int64
	verified bool
	failed   error
	progress chan struct{} // closed and replaced at every change
	// announced is how much of written waiters were woken for; timerArmed:
	// a wake-up for the rest is due (see Write).
	announced  int64
	timerArmed bool
}

func newFlight(s *Server, repo, digest string) (*flight, error) {
	path := filepath.Join(s.incoming, strings.TrimPrefix(digest, "sha256:")+".partial")
	file, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	return &flight{
		s: s, digest: digest, repo: repo, path: path, file: file, started: time.Now(),
		repos: []string{repo}, linked: map[string]bool{}, waiters: 1,
		headers: make(chan struct{}), size: -1, progress: make(chan struct{}),
	}, nil
}

// addRepo records a joiner (under s.flights.mu).
func (f *flight) addRepo(repo string) {
	f.waiters++
	for _, r := range f.repos {
		if r == repo {
			return
		}
	}
	f.repos = append(f.repos, repo)
}

func (f *flight) changed() {
	close(f.progress)
	f.progress = make(chan struct{})
}

// Waiters are woken for new bytes every progressStep bytes, and at most
// progressDelay after bytes they have not been told of: waking 32 waiters
// for every 32 KiB read from the upstream cost more CPU than sending them
// the bytes. The first bytes wake them at once.
const (
	progressStep  = 256 << 10
	progressDelay = 10 * time.Millisecond
)

// Write appends bytes from the upstream to the partial file.
func (f *flight) Write(p []byte) (int, error) {
	n, err := f.file.Write(p)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.written += int64(n)
	switch {
	case f.announced == 0 || f.written-f.announced >= progressStep:
		f.announced = f.written
		f.changed()
	case !f.timerArmed:
		f.timerArmed = true
		time.AfterFunc(progressDelay, func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.timerArmed = false
			if f.written > f.announced {
				f.announced = f.written
				f.changed()
			}
		})
	}
	return n, err
}

// run downloads (within fetchCtx), verifies, stores and links (within
// ctx, which outlives fetchCtx at shutdown) the blob, then ends the flight.
func (f *flight) run(fetchCtx, ctx context.Context) {
	s := f.s
	repo := f.repo
	err := f.download(fetchCtx, repo)
	f.file.Close()
	if err != nil {
		f.end(err)
		return
	}
	f.s.flights.mu.Lock()
	waiters := f.waiters
	f.s.flights.mu.Unlock()
	d := time.Since(f.started)
	s.logger.Printf("fetched blob %s for %s: %d bytes in %s, %d waiters, %d resumes", f.digest, repo, f.written, d.Round(time.Millisecond), waiters, f.resumeCount)
	if err := s.upload(ctx, repo, f.digest, f.path); err != nil {
		s.logger.Printf("store blob %s for %s: %v (served, not kept; the next request fetches it again)", f.digest, repo, err)
		s.stores.failed(err, 2*f.written+spaceReserve, time.Now())
		f.end(nil)
		return
	}
	s.storedOK()
	s.served.touch(f.digest, time.Now())
	s.budgetKick()
	s.flights.setHolder(f.digest, repo)
	// Link it into every repository that joined, including ones joining meanwhile.
	for {
		s.flights.mu.Lock()
		f.linked[repo] = true
		var pending []string
		for _, r := range f.repos {
			if !f.linked[r] {
				pending = append(pending, r)
			}
		}
		if len(pending) == 0 {
			delete(s.flights.m, f.digest)
			s.flights.mu.Unlock()
			break
		}
		s.flights.mu.Unlock()
		for _, r := range pending {
			if !s.repoKnown(ctx, r, f.digest) {
				// A joiner that named the digest under a name nobody pulled
				// got the bytes; it does not get a repository created.
				s.flights.mu.Lock()
				f.linked[r] = true
				s.flights.mu.Unlock()
				continue
			}
			if err := s.mount(ctx, r, f.digest, repo); err != nil {
				s.logger.Printf("link blob %s into %s: %v", f.digest, r, err)
			}
			s.flights.mu.Lock()
			f.linked[r] = true
			s.flights.mu.Unlock()
		}
	}
	os.Remove(f.path) // waiters still reading keep their handles
}

// download fetches the blob into the partial file; nil means verified.
// Everything before the upstream's headers is bounded by openTimeout; the
// whole download ends when the upstream goes offline (its waiters' clients
// then see a cut and move on instead of waiting on a silent link).
func (f *flight) download(ctx context.Context, repo string) error {
	s := f.s
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopWatch := s.up.cancelWhenOffline(ctx, cancel)
	defer stopWatch()
	noHeaders := time.AfterFunc(openTimeout, func() {
		cancel(fmt.Errorf("no answer from upstream %s within %s: %w", s.up, openTimeout, errNoAnswer))
	})
	rt, err := s.up.transport(ctx, repo)
	if err != nil {
		noHeaders.Stop()
		err = causeOf(ctx, err)
		f.failHeaders(err)
		return err
	}
	fetcher := &blobfetch.Fetcher{
		Client:      &http.Client{Transport: rt},
		Header:      http.Header{"User-Agent": {"bkcache-front/" + version.Version}},
		Counter:     &s.counters.upstreamBytes,
		IdleTimeout: stallTimeout,
		MaxSize:     s.opts.maxBlobSize(),
		OnResume: func(offset int64, err error) {
			s.counters.resumes.Add(1)
			if connectionFailure(err) {
				s.up.Suspect(err) // new requests learn of an outage while this one retries
			}
			s.logger.Printf("blob %s: upstream read broke at byte %d (%v); resuming with Range", f.digest, offset, err)
		},
	}
	declared, _ := s.seen.get(f.digest)
	var limit *sizedLimit
	if s.limiter != nil {
		limit = &sizedLimit{l: s.limiter}
		limit.size.Store(declared)
		fetcher.Limiter = limit
	}
	dl, err := fetcher.OpenSized(ctx, s.up.blobURL(repo, f.digest), f.digest, declared)
	if limit != nil && err == nil && dl.Size > 0 {
		limit.size.Store(dl.Size) // small or big by what the upstream declares
	}
	if !noHeaders.Stop() && err == nil {
		dl.Close()
		err = context.Cause(ctx)
	}
	if err != nil {
		err = causeOf(ctx, err)
		f.failHeaders(err)
		return err
	}
	if err := s.roomFor(f.digest, dl.Size); err != nil {
		dl.Close()
		f.failHeaders(err)
		return err
	}
	f.mu.Lock()
	f.size = dl.Size
	close(f.headers)
	f.changed()
	f.mu.Unlock()
	_, err = dl.Copy(ctx, f)
	f.resumeCount = dl.Resumes()
	if err != nil {
		return causeOf(ctx, err)
	}
	f.mu.Lock()
	f.verified = true
	f.changed()
	f.mu.Unlock()
	return nil
}

// causeOf prefers the reason ctx was cancelled (a deadline, an outage) to
// the bare "context canceled" a request reports.
func causeOf(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil && !errors.Is(err, c) && !errors.Is(c, context.Canceled) {
		return fmt.Errorf("%w (%v)", c, err)
	}
	return err
}

func (f *flight) failHeaders(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.herr = err
	close(f.headers)
}

// end removes a flight; with an error every waiter's connection is aborted.
func (f *flight) end(err error) {
	s := f.s
	s.flights.mu.Lock()
	if s.flights.m[f.digest] == f {
		delete(s.flights.m, f.digest)
	}
	s.flights.mu.Unlock()
	if err != nil {
		if errors.Is(err, blobfetch.ErrDigestMismatch) {
			s.counters.digestMismatches.Add(1)
		}
		if connectionFailure(err) {
			s.up.Suspect(err)
		}
		var refused *noSpaceError
		if isNoSpace(err) && !errors.As(err, &refused) { // roomFor recorded its own
			f.mu.Lock()
			need := max(f.size, f.written)
			f.mu.Unlock()
			s.stores.failed(err, 2*need+spaceReserve, time.Now())
		}
		s.logger.Printf("download of blob %s failed, nothing stored: %v", f.digest, err)
		f.mu.Lock()
		f.failed = err
		f.changed()
		f.mu.Unlock()
	}
	os.Remove(f.path)
}

// serve answers one waiter from the partial file: headers as soon as the
// upstream's arrived, then bytes as they arrive, the final byte only once the
// digest is verified; on a failed download the connection is aborted.
func (f *flight) serve(w http.ResponseWriter, r *http.Request, rng byteRange, file *os.File) {
	defer file.Close()
	ctx := r.Context()
	select {
	case <-f.headers:
	case <-ctx.Done():
		return
	}
	if f.herr != nil {
		f.s.upstreamFailed(w, f.herr)
		return
	}
	f.mu.Lock()
	size := f.size
	f.mu.Unlock()
	h := w.Header()
	h.Set("Docker-Content-Digest", f.digest)
	h.Set("Docker-Distribution-Api-Version", "registry/2.0")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Etag", `"`+f.digest+`"`)
	h.Set("Cache-Control", "max-age=31536000")
	if size >= 0 {
		h.Set("Accept-Ranges", "bytes")
	}
	start, end, partial, ok := int64(0), size, false, true
	if size >= 0 && r.Method == http.MethodGet {
		start, end, partial, ok = rng.resolve(size)
	}
	if !ok {
		writeRangeNotSatisfiable(w, size)
		return
	}
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end-1, size))
	}
	if end >= 0 {
		h.Set("Content-Length", strconv.FormatInt(end-start, 10))
	}
	w.WriteHeader(status)
	http.NewResponseController(w).Flush() //nolint:errcheck // headers out now, whatever the body's pace
	if r.Method == http.MethodHead {
		return
	}
	f.stream(ctx, w, file, start, end)
}

// stream copies [start, end) (end -1: to the blob's end, size unknown) as it
// becomes available. The last byte of the response, ranged or not, waits
// until the whole blob's digest checks out: a client never completes a
// response carrying bytes of a blob that turns out wrong.
func (f *flight) stream(ctx context.Context, w http.ResponseWriter, file *os.File, start, end int64) {
	rc := http.NewResponseController(w)
	pos := start
	for {
		f.mu.Lock()
		written, verified, failed, progress := f.written, f.verified, f.failed, f.progress
		f.mu.Unlock()
		if failed != nil {
			panic(http.ErrAbortHandler) // the client sees a broken response, never a complete wrong blob
		}
		limit := written
		if end >= 0 {
			limit = min(written, end)
		}
		if !verified {
			if end >= 0 {
				limit = min(limit, end-1) // the response's final byte waits for the digest
			} else {
				limit = min(limit, written-1)
			}
		}
		if pos < limit {
			// The waiter's own handle, positioned: io.Copy hands an
			// *os.File to the connection, which sends it with sendfile(2).
			if _, err := file.Seek(pos, io.SeekStart); err != nil {
				panic(http.ErrAbortHandler)
			}
			n, err := io.Copy(w, io.LimitReader(file, limit-pos))
			pos += n
			f.s.counters.servedBytes.Add(n)
			if err != nil {
				return
			}
			rc.Flush() //nolint:errcheck
			continue
		}
		if verified && ((end >= 0 && pos >= end) || (end < 0 && pos >= written)) {
			return
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return
		}
	}
}
