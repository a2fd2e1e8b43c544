package front

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/bkcache/bkcache/pkg/atomicfile"
)

// servedFile holds the last-served times, beside registry:2's storage (in
// the front's own bkcache/ directory, never inside docker/).
const servedFile = "served.json"

// servedFlushInterval is how often the last-served times are written out;
// Close writes them once more.
const servedFlushInterval = 30 * time.Second

// servedLog records when each blob and manifest (by digest) was last served
// or stored. prune and the budget evict the least recently served first; a
// digest never recorded (a cache older than this record) counts from when
// registry:2 stored it.
type servedLog struct {
	path string

	mu    sync.Mutex
	t     map[string]int64 // digest -> unix milliseconds
	dirty bool
}

// servedVersion 1: unix milliseconds by digest.
const servedVersion = 1

type servedDoc struct {
	Version int              `json:"version"`
	Served  map[string]int64 `json:"served"`
}

func newServedLog(path string) *servedLog {
	return &servedLog{path: path, t: map[string]int64{}}
}

// load reads the records a previous run wrote; a missing file is no record.
func (l *servedLog) load() error {
	data, err := os.ReadFile(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read last-served times: %w", err)
	}
	var doc servedDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		// A damaged record costs only eviction order: start afresh, say so.
		return fmt.Errorf("last-served times in %s are unreadable (%v); starting a new record", l.path, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for d, t := range doc.Served {
		if sha256Ref.MatchString(d) && t > l.t[d] {
			l.t[d] = t
		}
	}
	return nil
}

// touch records digest as served (or stored) at now.
func (l *servedLog) touch(digest string, now time.Time) {
	if !sha256Ref.MatchString(digest) {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if u := now.UnixMilli(); u > l.t[digest] {
		l.t[digest] = u
		l.dirty = true
	}
}

// get is when digest was last served; zero when never recorded.
func (l *servedLog) get(digest string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if u, ok := l.t[digest]; ok {
		return time.UnixMilli(u)
	}
	return time.Time{}
}

// forget drops the records of deleted content.
func (l *servedLog) forget(digests ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range digests {
		if _, ok := l.t[d]; ok {
			delete(l.t, d)
			l.dirty = true
		}
	}
}

// save writes the records atomically when they changed.
func (l *servedLog) save() error {
	l.mu.Lock()
	if !l.dirty {
		l.mu.Unlock()
		return nil
	}
	data, err := json.Marshal(servedDoc{Version: servedVersion, Served: l.t})
	l.dirty = false
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(l.path, data, 0o600); err != nil {
		l.mu.Lock()
		l.dirty = true
		l.mu.Unlock()
		return err
	}
	return nil
}

// flushLoop saves the records every interval until ctx ends.
func (l *servedLog) flushLoop(ctx context.Context, interval time.Duration, logf func(string, ...any)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := l.save(); err != nil {
				logf("save last-served times: %v", err)
			}
		}
	}
}

// inUse counts the requests serving each blob digest right now, so that
// prune and the budget never delete a blob while it is being served: a
// request takes its count before it looks at storage, and a deletion checks
// and removes under the same lock.
type inUse struct {
	mu sync.Mutex
	n  map[string]int
}

func (u *inUse) begin(digest string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n == nil {
		u.n = map[string]int{}
	}
	u.n[digest]++
}

func (u *inUse) end(digest string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n[digest]--; u.n[digest] <= 0 {
		delete(u.n, digest)
	}
}

// manifestRecorder notes the digest of a manifest as it is answered.
type manifestRecorder struct {
	http.ResponseWriter
	log  *servedLog
	done bool
}

func (m *manifestRecorder) WriteHeader(code int) {
	if !m.done {
		m.done = true
		if code == http.StatusOK {
			m.log.touch(m.Header().Get("Docker-Content-Digest"), time.Now())
		}
	}
	m.ResponseWriter.WriteHeader(code)
}

func (m *manifestRecorder) Write(p []byte) (int, error) {
	if !m.done {
		m.WriteHeader(http.StatusOK)
	}
	return m.ResponseWriter.Write(p)
}

func (m *manifestRecorder) Unwrap() http.ResponseWriter { return m.ResponseWriter }

// recordServed wraps w so a manifest answer (GET or HEAD) records its digest.
func (s *Server) recordServed(w http.ResponseWriter, r *http.Request, rt route) http.ResponseWriter {
	if rt.kind != "manifest" || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return w
	}
	return &manifestRecorder{ResponseWriter: w, log: s.served}
}
