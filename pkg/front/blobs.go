package front

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bkcache/bkcache/pkg/blobfetch"
	"github.com/bkcache/bkcache/pkg/version"
)

// storage reads registry:2's filesystem layout (never writes it: the local
// child does).
type storage struct{ root string } // <rootdirectory>/docker/registry/v2

func (st storage) dataPath(digest string) string {
	hex := strings.TrimPrefix(digest, "sha256:")
	return filepath.Join(st.root, "blobs", "sha256", hex[:2], hex, "data")
}

func (st storage) linkPath(repo, digest string) string {
	return filepath.Join(st.root, "repositories", filepath.FromSlash(repo), "_layers", "sha256", strings.TrimPrefix(digest, "sha256:"), "link")
}

func (st storage) hasData(digest string) bool {
	_, err := os.Stat(st.dataPath(digest))
	return err == nil
}

func (st storage) linked(repo, digest string) bool {
	_, err := os.Stat(st.linkPath(repo, digest))
	return err == nil
}

// findHolder walks the repositories for one that links digest.
func (st storage) findHolder(ctx context.Context, digest string) (string, bool) {
	base := filepath.Join(st.root, "repositories")
	hex := strings.TrimPrefix(digest, "sha256:")
	var found string
	filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error { //nolint:errcheck // best effort
		if err != nil || ctx.Err() != nil {
			return filepath.SkipAll
		}
		if !d.IsDir() {
			return nil
		}
		switch d.Name() {
		case "_manifests", "_uploads":
			return filepath.SkipDir
		case "_layers":
			if _, err := os.Stat(filepath.Join(p, "sha256", hex, "link")); err == nil {
				rel, _ := filepath.Rel(base, filepath.Dir(p))
				found = filepath.ToSlash(rel)
				return filepath.SkipAll
			}
			return filepath.SkipDir
		}
		return nil
	})
	return found, found != ""
}

// serveBlob is the blob path: a flight in progress, storage, or a new flight.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, repo, digest string) {
	s.counters.blobRequests.Add(1)
	s.inUse.begin(digest) // before storage is looked at: prune never deletes it meanwhile
	defer s.inUse.end(digest)
	s.served.touch(digest, time.Now())
	rng := parseRange(r.Header.Get("Range"))
	head := r.Method == http.MethodHead
	gone := false
	for {
		// Every GET, ranged or not, joins or starts the one download: its
		// bytes are checked against the digest before a response completes.
		d := s.flights.decide(s, repo, digest, head)
		switch d.action {
		case joinFlight:
			if !d.started {
				s.counters.sharedWaiters.Add(1)
			}
			d.flight.serve(w, r, rng, d.file)
		case fromStorage:
			if s.serveStored(w, r, repo, digest, rng) && !gone {
				gone = true // deleted since decide saw it: decide again, once
				continue
			}
		case refuseOffline:
			s.counters.offlineRefusals.Add(1)
			s.markOutage(w.Header())
			writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE",
				s.unreachable()+"; blob "+digest+" of "+repo+" is not cached", digest)
		case cannotStart:
			s.logger.Printf("start download of %s: %v", digest, d.err)
			writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "the cache cannot store blob "+digest+": "+d.err.Error(), digest)
		case passThrough:
			s.headUpstream(w, r, repo, digest)
		}
		return
	}
}

// serveStored serves a stored blob, linking it into repo first when it was
// stored for another repository: from the storage file by the front itself
// (stored.go), or through the local child when the front is told to. It
// returns true, having written nothing, when the blob vanished from storage
// since it was seen there.
func (s *Server) serveStored(w http.ResponseWriter, r *http.Request, repo, digest string, rng byteRange) (gone bool) {
	if !s.store.linked(repo, digest) {
		if !s.repoKnown(r.Context(), repo, digest) {
			// Linking would create the repository for anyone who names a
			// stored digest under a new name.
			writeError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry: "+repo+" is not a repository of upstream "+s.up.String()+" this cache knows", digest)
			return false
		}
		if err := s.link(r.Context(), repo, digest); err != nil {
			if !s.store.hasData(digest) {
				return true
			}
			s.logger.Printf("link %s into %s: %v", digest, repo, err)
			writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "cannot link the cached blob into "+repo+": "+err.Error(), digest)
			return false
		}
		s.counters.blobLinks.Add(1)
	}
	switch rng.kind {
	case rangeMulti, rangeNone:
		// Several ranges: the whole blob, as 200; an unparseable Range is
		// ignored (RFC 9110 14.2), never passed to registry:2 or
		// http.ServeContent, which answer some with 416.
		r.Header.Del("Range")
	case rangeSingle:
		// registry:2 2.8 answers an unsatisfiable range with a body shorter
		// than its Content-Length: answer 416 here.
		info, err := os.Stat(s.store.dataPath(digest))
		if err != nil {
			return true
		}
		if _, _, _, ok := rng.resolve(info.Size()); !ok && r.Method == http.MethodGet {
			writeRangeNotSatisfiable(w, info.Size())
			return false
		}
	}
	if !s.opts.StoredViaChild {
		err := s.serveStoredFile(w, r, repo, digest)
		if errors.Is(err, errStoredGone) {
			return true
		}
		if err != nil {
			s.logger.Printf("%s %s: %v", r.Method, r.URL.Path, err)
			writeError(w, http.StatusInternalServerError, "UNKNOWN", "the cache cannot read its stored copy of blob "+digest+": "+err.Error(), digest)
			return false
		}
		s.counters.blobHits.Add(1)
		return false
	}
	s.counters.blobHits.Add(1)
	s.blobRP.ServeHTTP(&countingWriter{ResponseWriter: w, n: &s.counters.servedBytes}, r)
	return false
}

// repoKnown reports whether a stored blob may be linked into repo: the
// front served a manifest of repo, storage holds manifests of it, or the
// upstream serves the blob under that name.
func (s *Server) repoKnown(ctx context.Context, repo, digest string) bool {
	if s.seen.repo(repo) {
		return true
	}
	if _, err := os.Stat(filepath.Join(s.store.root, "repositories", filepath.FromSlash(repo), "_manifests")); err == nil {
		return true
	}
	if online, _, _ := s.up.Online(); !online {
		return false
	}
	ctx, cancel := context.WithTimeoutCause(ctx, openTimeout, errNoAnswer)
	defer cancel()
	rt, err := s.up.transport(ctx, repo)
	if err != nil {
		return false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, s.up.blobURL(repo, digest), nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "bkcache-front/"+version.Version)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		if connectionFailure(err) {
			s.up.Suspect(err)
		}
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// link makes a stored blob part of repo through the local child: a
// cross-repository mount from a repository holding it, or, when none links
// it, an upload of the stored data.
func (s *Server) link(ctx context.Context, repo, digest string) error {
	from, ok := s.flights.holder(digest)
	if !ok || !s.store.linked(from, digest) {
		from, ok = s.store.findHolder(ctx, digest)
	}
	if ok {
		err := s.mount(ctx, repo, digest, from)
		if err == nil {
			s.flights.setHolder(digest, repo)
			return nil
		}
		s.logger.Printf("mount %s from %s into %s: %v; uploading the stored copy instead", digest, from, repo, err)
	}
	if err := s.upload(ctx, repo, digest, s.store.dataPath(digest)); err != nil {
		return err
	}
	s.flights.setHolder(digest, repo)
	return nil
}

// localDo sends one request to the local child.
func (s *Server) localDo(ctx context.Context, method, target string, body io.Reader, size int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://registry-local"+target, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	return s.local.transport.RoundTrip(req)
}

// mount links digest, held by from, into repo (POST …/uploads/?mount=&from=).
func (s *Server) mount(ctx context.Context, repo, digest, from string) error {
	q := url.Values{"mount": {digest}, "from": {from}}
	resp, err := s.localDo(ctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?"+q.Encode(), nil, 0)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusCreated {
		return nil
	}
	if loc := resp.Header.Get("Location"); resp.StatusCode == http.StatusAccepted && loc != "" {
		// Not mounted: registry:2 opened an upload instead; cancel it.
		if u, err := url.Parse(loc); err == nil {
			if resp, err := s.localDo(ctx, http.MethodDelete, u.RequestURI(), nil, 0); err == nil {
				resp.Body.Close()
			}
		}
	}
	return fmt.Errorf("the local registry answered %s to the mount", resp.Status)
}

// upload stores the file at path as blob digest of repo (upload.go).
func (s *Server) upload(ctx context.Context, repo, digest, path string) error {
	return s.storeFile(ctx, repo, digest, path)
}

// headUpstream relays a HEAD of a blob neither stored nor downloading to the
// upstream: no body, so nothing to verify, and no download starts.
func (s *Server) headUpstream(w http.ResponseWriter, r *http.Request, repo, digest string) {
	ctx, cancel := context.WithTimeoutCause(r.Context(), openTimeout, errNoAnswer)
	defer cancel()
	rt, err := s.up.transport(ctx, repo)
	if err != nil {
		s.upstreamFailed(w, err)
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, s.up.blobURL(repo, digest), nil)
	if err != nil {
		s.upstreamFailed(w, err)
		return
	}
	req.Header.Set("User-Agent", "bkcache-front/"+version.Version)
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		s.upstreamFailed(w, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		s.relayUpstreamError(w, upstreamErrorOf(req.URL.String(), resp))
		return
	}
	for _, k := range []string{"Content-Length", "Docker-Content-Digest", "Accept-Ranges", "Etag"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	w.WriteHeader(resp.StatusCode)
}

func upstreamErrorOf(u string, resp *http.Response) *blobfetch.UpstreamError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return &blobfetch.UpstreamError{URL: u, StatusCode: resp.StatusCode, Header: resp.Header, Body: body}
}

// upstreamFailed answers a failure to reach the upstream (503, and a probe)
// or relays the upstream's own error answer.
func (s *Server) upstreamFailed(w http.ResponseWriter, err error) {
	var ns *noSpaceError
	if errors.As(err, &ns) {
		writeNoSpace(w, ns)
		return
	}
	var ue *blobfetch.UpstreamError
	if errors.As(err, &ue) {
		s.relayUpstreamError(w, ue)
		return
	}
	if connectionFailure(err) {
		s.up.Suspect(err)
	}
	writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "upstream "+s.up.String()+": "+err.Error(), nil)
}

// relayUpstreamError passes the upstream's error answer on in registry:2's shape.
func (s *Server) relayUpstreamError(w http.ResponseWriter, ue *blobfetch.UpstreamError) {
	if ue.StatusCode >= 500 {
		s.up.Suspect(ue)
	}
	if strings.HasPrefix(strings.TrimSpace(string(ue.Body)), `{"errors"`) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
		w.Header().Set("Content-Length", strconv.Itoa(len(ue.Body)))
		if ra := ue.Header.Get("Retry-After"); ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		w.WriteHeader(ue.StatusCode)
		w.Write(ue.Body) //nolint:errcheck
		return
	}
	writeError(w, ue.StatusCode, codeFor(ue.StatusCode), "upstream "+s.up.String()+" answered "+http.StatusText(ue.StatusCode), nil)
}

// countingWriter adds the body bytes written to n.
type countingWriter struct {
	http.ResponseWriter
	n interface{ Add(int64) int64 }
}

func (c *countingWriter) Write(p []byte) (int, error) {
	m, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(m))
	return m, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }
