package front

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httputil"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// manifestBufferMax caps the answer a coalesced manifest request holds in
// memory (registry:2 refuses manifests above 4 MiB anyway); a larger one is
// not shared: every waiter asks the proxy child itself.
const manifestBufferMax = 4 << 20

// manifestCalls coalesces identical manifest GET/HEAD requests that arrive
// while one is in flight to the proxy child. registry:2's proxy turns each
// manifest request into its own upstream round trips (GET /v2/, HEAD, GET),
// so N nodes resolving one tag at once would cost N bursts and queue behind
// each other. It is single-flight, not a cache: an answer goes only to the
// requests that joined while it was in flight, so registry:2's own tag
// freshness is unchanged.
type manifestCalls struct {
	mu  sync.Mutex
	m   map[manifestKey]*manifestCall
	max int // buffer cap; manifestBufferMax unless a test lowers it
}

// manifestKey is everything in a request that shapes registry:2's answer to
// it (auth is the front's, checked before routing).
type manifestKey struct {
	method, uri, accept, acceptEncoding, conditional string
}

func manifestKeyOf(r *http.Request) manifestKey {
	h := r.Header
	return manifestKey{
		method:         r.Method,
		uri:            r.URL.RequestURI(),
		accept:         strings.Join(h.Values("Accept"), ","),
		acceptEncoding: strings.Join(h.Values("Accept-Encoding"), ","),
		conditional: strings.Join(h.Values("If-None-Match"), ",") + "\x00" + strings.Join(h.Values("If-Modified-Since"), ",") +
			"\x00" + strings.Join(h.Values("Range"), ","),
	}
}

// manifestCall is one request to the proxy child and its answer.
type manifestCall struct {
	done   chan struct{}
	cancel context.CancelFunc
	// waiters is how many client requests wait for it (under manifestCalls.mu);
	// when the last one leaves, the call is cancelled.
	waiters int

	// Set before done is closed.
	status int
	header http.Header
	body   []byte
	err    error // the child could not be asked: answered as the reverse proxy does
	direct bool  // no answer to share (too big, body broken): each waiter asks itself
}

// serveManifest answers a manifest GET/HEAD while online: it joins the
// identical request in flight, or starts one.
func (s *Server) serveManifest(w http.ResponseWriter, r *http.Request) {
	mc := &s.manifests
	key := manifestKeyOf(r)
	mc.mu.Lock()
	c := mc.m[key]
	if c == nil {
		// The call belongs to no client: one leaving cancels nothing the
		// others wait for; it ends when all have left or the front stops.
		ctx, cancel := context.WithCancel(s.ctx)
		c = &manifestCall{done: make(chan struct{}), cancel: cancel}
		mc.m[key] = c
		go s.runManifestCall(key, c, s.childRequest(ctx, r))
	} else {
		s.counters.manifestShared.Add(1)
	}
	c.waiters++
	mc.mu.Unlock()

	select {
	case <-c.done:
	case <-r.Context().Done():
		mc.mu.Lock()
		c.waiters--
		if c.waiters == 0 && mc.m[key] == c {
			delete(mc.m, key) // a later request starts afresh
			c.cancel()
		}
		mc.mu.Unlock()
		return
	}
	switch {
	case c.direct:
		s.onlineRP.ServeHTTP(w, r)
	case c.err != nil:
		writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "the cache's registry is not available: "+c.err.Error(), nil)
	default:
		h := w.Header()
		for k, v := range c.header {
			h[k] = slices.Clone(v)
		}
		if r.Method == http.MethodGet {
			h.Set("Content-Length", strconv.Itoa(len(c.body)))
		}
		w.WriteHeader(c.status)
		if r.Method == http.MethodGet {
			w.Write(c.body) //nolint:errcheck // the client may be gone
		}
	}
}

// runManifestCall asks the proxy child (falling back as onlineRP does) and
// hands the answer to every waiter.
func (s *Server) runManifestCall(key manifestKey, c *manifestCall, req *http.Request) {
	mc := &s.manifests
	resp, err := s.onlineRT.RoundTrip(req)
	switch {
	case err != nil:
		if req.Context().Err() == nil {
			s.logger.Printf("%s %s: registry child: %v", req.Method, req.URL.Path, err)
		}
		c.err = err
	default:
		var buf bytes.Buffer
		_, rerr := io.Copy(&buf, io.LimitReader(resp.Body, int64(mc.max)+1))
		resp.Body.Close()
		if rerr != nil || buf.Len() > mc.max {
			c.direct = true
			break
		}
		c.status, c.body = resp.StatusCode, buf.Bytes()
		c.header = resp.Header.Clone()
		if c.status == http.StatusOK {
			s.seen.manifest(parseRoute(req.URL.Path).repo, c.body)
		}
		removeHopHeaders(c.header)
	}
	mc.mu.Lock()
	if mc.m[key] == c {
		delete(mc.m, key) // from now on a request asks anew: no caching
	}
	close(c.done)
	mc.mu.Unlock()
	c.cancel()
}

// childRequest is r as the reverse proxy would send it to a child, in ctx.
func (s *Server) childRequest(ctx context.Context, r *http.Request) *http.Request {
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.Body, out.ContentLength, out.Close = http.NoBody, 0, false
	removeHopHeaders(out.Header)
	out.Header.Del("Authorization") // checked by the front; one client's credentials are not the call's
	rewriteToChild(&httputil.ProxyRequest{In: r, Out: out})
	return out
}

// rewriteToChild points a proxied request at a registry child.
func rewriteToChild(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "registry"
	pr.Out.Host = pr.In.Host // registry:2 builds Location URLs from it
	pr.SetXForwarded()
}

// hopHeaders are the hop-by-hop headers a proxy does not pass on (RFC 9110 7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopHeaders(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}
