package front

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"time"
)

// blobCacheControl is what registry:2 sends with a blob
// (distribution registry/storage/blobserver.go: one year, content-addressed).
const blobCacheControl = "max-age=31536000"

// errStoredGone: the blob's data or its link in the repository vanished
// between the decision to serve it from storage and opening it (a prune, a
// garbage collection, an operator); the request is decided again.
var errStoredGone = errors.New("the stored blob is gone")

// serveStoredFile answers a GET or HEAD of a stored blob from the storage
// file itself, as registry:2's blob server would (http.ServeContent, so
// Range and conditional requests behave alike), but without the local
// child: the kernel sends the file's pages to the socket (sendfile) instead
// of registry:2 reading them and the front copying them once more. The file
// is opened per request, after the link is seen, so a blob deleted meanwhile
// is never served from an old handle; the caller holds the digest in use, so
// prune leaves it alone while it is sent. Range rules are the caller's
// (serveStored): only a satisfiable single range reaches here.
//
// It returns errStoredGone, having written nothing, when the link or the
// data is missing.
func (s *Server) serveStoredFile(w http.ResponseWriter, r *http.Request, repo, digest string) error {
	if !s.store.linked(repo, digest) {
		return errStoredGone
	}
	f, err := os.Open(s.store.dataPath(digest))
	if errors.Is(err, fs.ErrNotExist) {
		return errStoredGone
	}
	if err != nil {
		return fmt.Errorf("open stored blob %s: %w", digest, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat stored blob %s: %w", digest, err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("stored blob %s is not a regular file", digest)
	}
	// The link again, now that the data is held open: a prune that removed
	// both between the two looks left no repository to serve it for.
	if !s.store.linked(repo, digest) {
		return errStoredGone
	}
	h := w.Header()
	for k, v := range s.extraHeaders {
		h[k] = append([]string(nil), v...)
	}
	h.Set("Docker-Distribution-Api-Version", "registry/2.0")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", digest)
	h.Set("Etag", `"`+digest+`"`)
	h.Set("Cache-Control", blobCacheControl)
	s.counters.blobFileServes.Add(1)
	http.ServeContent(&countingWriter{ResponseWriter: w, n: &s.counters.servedBytes}, r, "", time.Time{}, f)
	return nil
}

// headers are the registry config's http.headers, which registry:2 adds to
// every answer.
func (c *registryConfig) headers() map[string][]string {
	out := map[string][]string{}
	for k, v := range sub(c.raw, "http", "headers") {
		switch vs := v.(type) {
		case []any:
			for _, e := range vs {
				if s, ok := e.(string); ok {
					out[http.CanonicalHeaderKey(k)] = append(out[http.CanonicalHeaderKey(k)], s)
				}
			}
		case string:
			out[http.CanonicalHeaderKey(k)] = []string{vs}
		}
	}
	return out
}

// ReadFrom keeps the kernel's file-to-socket path (sendfile) open through
// the counting wrapper: io.Copy from an *os.File uses the ResponseWriter's
// own ReadFrom.
func (c *countingWriter) ReadFrom(src io.Reader) (int64, error) {
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(src)
		c.n.Add(n)
		return n, err
	}
	return io.Copy(writerOnly{c}, src)
}

// writerOnly hides ReadFrom, so io.Copy does not call it again.
type writerOnly struct{ io.Writer }
