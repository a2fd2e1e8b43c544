package front

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"regexp"
	"strings"
	"time"

	"github.com/distribution/reference"

	"github.com/bkcache/bkcache/pkg/blobfetch"
)

// route is what a /v2/ request addresses.
type route struct {
	kind string // "base", "blob", "upload", "manifest", "tags", "catalog", "" (other)
	repo string
	ref  string // digest or tag
}

var (
	namePat     = reference.NameRegexp.String()
	blobPath    = regexp.MustCompile(`^/v2/(` + namePat + `)/blobs/([^/]+)$`)
	uploadPath  = regexp.MustCompile(`^/v2/(` + namePat + `)/blobs/uploads/`)
	manifestPat = regexp.MustCompile(`^/v2/(` + namePat + `)/manifests/([^/]+)$`)
	tagsPath    = regexp.MustCompile(`^/v2/(` + namePat + `)/tags/list$`)
	sha256Ref   = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)

func parseRoute(path string) route {
	switch {
	case path == "/v2/" || path == "/v2":
		return route{kind: "base"}
	case path == "/v2/_catalog":
		return route{kind: "catalog"}
	}
	if m := uploadPath.FindStringSubmatch(path); m != nil {
		return route{kind: "upload", repo: m[1]}
	}
	if m := blobPath.FindStringSubmatch(path); m != nil {
		return route{kind: "blob", repo: m[1], ref: m[len(m)-1]}
	}
	if m := manifestPat.FindStringSubmatch(path); m != nil {
		return route{kind: "manifest", repo: m[1], ref: m[len(m)-1]}
	}
	if m := tagsPath.FindStringSubmatch(path); m != nil {
		return route{kind: "tags", repo: m[1]}
	}
	return route{}
}

// image names what a manifest route asks for: repo:tag or repo@digest.
func (rt route) image() string {
	if strings.Contains(rt.ref, ":") {
		return rt.repo + "@" + rt.ref
	}
	return rt.repo + ":" + rt.ref
}

// ServeHTTP is the client listener: ?ns= check, htpasswd, the blob path,
// then the registry children.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/bkcache/") {
		// The front's own figures, on the cache's own port: guarded as pulls
		// are, except from this host's loopback and for the admin token (the
		// CLI's way in: a bridge-network cache sees the host's requests come
		// from the bridge gateway, not loopback). Prune always wants the token.
		if s.auth != nil && !fromLoopback(r) && !s.adminAuthorized(r) && !s.auth.check(w, r, "") {
			return
		}
		s.ownMux.ServeHTTP(w, r)
		return
	}
	rt := route{}
	if strings.HasPrefix(r.URL.Path, "/v2") {
		if ns := r.URL.Query().Get("ns"); ns != "" && !sameRegistry(ns, s.up.base.Host, s.up.base.Scheme) {
			s.counters.nsRejected.Add(1)
			writeError(w, http.StatusNotFound, "NAME_UNKNOWN",
				fmt.Sprintf("this cache proxies %s, not %s: ask %s directly", s.up.base.Host, ns, ns),
				map[string]string{"ns": ns, "upstream": s.up.base.Host})
			return
		}
		rt = parseRoute(r.URL.Path)
		if s.auth != nil && !s.auth.check(w, r, rt.repo) {
			return
		}
		w = s.recordServed(w, r, rt)
		if rt.kind == "blob" && (r.Method == http.MethodGet || r.Method == http.MethodHead) && sha256Ref.MatchString(rt.ref) {
			s.serveBlob(w, r, rt.repo, rt.ref)
			return
		}
	}
	s.forward(w, r, rt)
}

// fromLoopback: the request came from this host's loopback.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sameRegistry compares ns (as containerd writes it) with the upstream's host.
func sameRegistry(ns, upstreamHost, scheme string) bool {
	return canonicalRegistry(ns, scheme) == canonicalRegistry(upstreamHost, scheme)
}

func canonicalRegistry(host, scheme string) string {
	h := strings.ToLower(strings.TrimSpace(host))
	if hp, port, err := net.SplitHostPort(h); err == nil &&
		((scheme == "https" && port == "443") || (scheme == "http" && port == "80")) {
		h = hp
	}
	switch h {
	case "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return h
}

// forward passes a request to a registry child: GET/HEAD to the proxy child
// while online (falling back to the local child when it fails), to the local
// child while offline; other methods only to the proxy child.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, rt route) {
	online, _, _ := s.up.Online()
	switch {
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		if !online {
			writeError(w, http.StatusMethodNotAllowed, "UNSUPPORTED",
				"this cache only serves pulls, and its upstream "+s.up.String()+" is unreachable", nil)
			return
		}
		s.writeRP.ServeHTTP(w, r)
	case online && rt.kind == "manifest":
		s.serveManifest(w, r)
	case online:
		s.onlineRP.ServeHTTP(w, r)
	default:
		s.offlineRP.ServeHTTP(w, r)
	}
}

func (s *Server) buildProxies() {
	mk := func(rt http.RoundTripper) *httputil.ReverseProxy {
		return &httputil.ReverseProxy{
			Rewrite:       rewriteToChild,
			Transport:     rt,
			FlushInterval: -1,
			ErrorLog:      s.logger,
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				if r.Context().Err() != nil {
					return
				}
				s.logger.Printf("%s %s: registry child: %v", r.Method, r.URL.Path, err)
				writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "the cache's registry is not available: "+err.Error(), nil)
			},
		}
	}
	s.writeRP = mk(&childTransport{s: s, primary: s.proxy})
	s.onlineRT = &childTransport{s: s, primary: s.proxy, fallback: s.local}
	s.onlineRP = mk(s.onlineRT)
	s.offlineRP = mk(&childTransport{s: s, primary: s.local, offline: true})
	s.blobRP = mk(&childTransport{s: s, primary: s.local})
}

// childTransport sends a request to a registry child. With a fallback, a
// GET/HEAD the primary cannot answer (not running, failed, 502/503/504, or
// silent past its deadline) goes to the fallback as in offline mode; a
// manifest the primary has not answered within localAfter is served from
// the fallback when it holds it. Offline, a manifest or blob the local child
// does not hold becomes 503 UNAVAILABLE so that clients move on.
type childTransport struct {
	s        *Server
	primary  *child
	fallback *child
	offline  bool
}

// Deadlines of the proxy child, which asks the upstream with no deadline of
// its own: a cached manifest is served locally after localAfter; anything
// else waits at most proxyTimeout (below containerd's 30 s for headers).
const (
	localAfter   = 4 * time.Second
	proxyTimeout = 20 * time.Second
)

func (t *childTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.fallback == nil {
		t.primary.waitReady(req.Context(), 10*time.Second)
		resp, err := t.primary.transport.RoundTrip(req)
		if err == nil && t.offline {
			return t.s.offline404(req, resp), nil
		}
		return resp, err
	}
	if t.primary.waitReady(req.Context(), 5*time.Second) {
		resp, err := t.askPrimary(req)
		if resp != nil && err == nil {
			return resp, nil
		}
		if req.Context().Err() != nil {
			return nil, req.Context().Err()
		}
		if err != nil {
			t.s.up.Suspect(err)
		}
	}
	return t.askLocal(req)
}

// askPrimary asks the proxy child. It returns a response to pass on, or
// (nil, err) when the local child should answer instead: the proxy child
// failed, answered 502/503/504, stayed silent past proxyTimeout, went past
// localAfter for a manifest the local child holds, or the upstream went
// offline meanwhile.
func (t *childTransport) askPrimary(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := t.primary.transport.RoundTrip(req.Clone(ctx))
		done <- result{resp, err}
	}()
	abandon := func(why error) (*http.Response, error) {
		cancel()
		go func() { // the answer may still come: close it
			if r := <-done; r.resp != nil {
				r.resp.Body.Close()
			}
		}()
		return nil, why
	}
	isManifest := parseRoute(req.URL.Path).kind == "manifest"
	local := time.NewTimer(localAfter)
	defer local.Stop()
	deadline := time.NewTimer(proxyTimeout)
	defer deadline.Stop()
	changed := t.s.up.Changed()
	for {
		select {
		case r := <-done:
			if r.err != nil {
				cancel()
				return nil, r.err
			}
			return t.primaryAnswered(req, r.resp, cancel)
		case <-local.C:
			if isManifest && t.localHolds(req) {
				t.s.up.Suspect(fmt.Errorf("the registry proxy child did not answer %s within %s: %w", req.URL.Path, localAfter, errNoAnswer))
				return abandon(errNoAnswer)
			}
		case <-changed:
			changed = t.s.up.Changed()
			if online, _, _ := t.s.up.Online(); !online {
				return abandon(errNoAnswer)
			}
		case <-deadline.C:
			return abandon(fmt.Errorf("the registry proxy child did not answer %s within %s: %w", req.URL.Path, proxyTimeout, errNoAnswer))
		case <-req.Context().Done():
			return abandon(req.Context().Err())
		}
	}
}

// primaryAnswered checks the proxy child's answer: 404 for a manifest may
// mean the upstream could not be reached (registry:2 says 404 then too), and
// 502/503/504 mean the local child should answer instead.
func (t *childTransport) primaryAnswered(req *http.Request, resp *http.Response, cancel context.CancelFunc) (*http.Response, error) {
	if resp.StatusCode == http.StatusNotFound && parseRoute(req.URL.Path).kind == "manifest" {
		// A probe tells an unknown image from an outage.
		if perr := t.s.up.probeAndReport(req.Context()); perr != nil && req.Context().Err() == nil {
			resp.Body.Close()
			cancel()
			return nil, perr
		}
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("the registry proxy child answered %s", resp.Status)
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// localHolds reports whether the local child has the manifest req asks for.
func (t *childTransport) localHolds(req *http.Request) bool {
	ctx, cancel := context.WithTimeout(req.Context(), 5*time.Second)
	defer cancel()
	head := req.Clone(ctx)
	head.Method = http.MethodHead
	resp, err := t.s.local.transport.RoundTrip(head)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// askLocal answers from the local child, as offline.
func (t *childTransport) askLocal(req *http.Request) (*http.Response, error) {
	t.s.local.waitReady(req.Context(), 10*time.Second)
	out := req.Clone(req.Context())
	resp, err := t.s.local.transport.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	return t.s.offline404(out, resp), nil
}

// cancelOnClose ends a request's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// offline404 turns the local child's 404 for a manifest or blob into 503
// UNAVAILABLE naming the upstream and the missing image.
func (s *Server) offline404(req *http.Request, resp *http.Response) *http.Response {
	rt := parseRoute(req.URL.Path)
	if resp.StatusCode != http.StatusNotFound || (rt.kind != "manifest" && rt.kind != "blob") {
		return resp
	}
	resp.Body.Close()
	s.counters.offlineRefusals.Add(1)
	what := rt.image() + " is not cached"
	if rt.kind == "blob" {
		what = "blob " + rt.ref + " of " + rt.repo + " is not cached"
	}
	rec := &bufferedResponse{header: http.Header{}}
	s.markOutage(rec.header)
	writeError(rec, http.StatusServiceUnavailable, "UNAVAILABLE", s.unreachable()+"; "+what, nil)
	return &http.Response{
		Status: "503 Service Unavailable", StatusCode: http.StatusServiceUnavailable,
		Proto: resp.Proto, ProtoMajor: resp.ProtoMajor, ProtoMinor: resp.ProtoMinor,
		Header: rec.header, Body: io.NopCloser(bytes.NewReader(rec.body.Bytes())),
		ContentLength: int64(rec.body.Len()), Request: req,
	}
}

// unreachable says since when the upstream cannot be reached, and how:
// "not answering" (silent) or "unreachable" (refused, cut).
func (s *Server) unreachable() string {
	st := s.up.state()
	if st.online {
		return "upstream " + s.up.String() + " failed: " + st.lastError
	}
	return "upstream " + s.up.String() + " " + st.reason() + " since " + st.since.UTC().Format("15:04:05") + " UTC"
}

// markOutage marks a 503 as the front's outage answer while the upstream is
// offline, so that clients (warm, push, verify) make one attempt instead of
// retrying an answer that cannot change before the upstream is back.
func (s *Server) markOutage(h http.Header) {
	if st := s.up.state(); st.known && !st.online {
		h.Set(blobfetch.OutageHeader, st.since.UTC().Format(time.RFC3339))
	}
}

// bufferedResponse records a response in memory.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header         { return b.header }
func (b *bufferedResponse) WriteHeader(code int)        { b.status = code }
func (b *bufferedResponse) Write(p []byte) (int, error) { return b.body.Write(p) }
