package front

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"regexp"
	"strings"
	"time"

	"github.com/distribution/reference"
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
// GET/HEAD the primary cannot answer (not running, failed, 502/503/504) goes
// to the fallback as in offline mode. Offline, a manifest or blob the local
// child does not hold becomes 503 UNAVAILABLE so that clients move on.
type childTransport struct {
	s        *Server
	primary  *child
	fallback *child
	offline  bool
}

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
		resp, err := t.primary.transport.RoundTrip(req)
		if err == nil && resp.StatusCode == http.StatusNotFound && parseRoute(req.URL.Path).kind == "manifest" {
			// registry:2 answers 404 also when it could not reach the upstream:
			// a probe tells an unknown image from an outage.
			if perr := t.s.up.probe(req.Context()); perr != nil && req.Context().Err() == nil {
				t.s.up.setOnline(false, perr.Error())
				return t.s.offline404(req, resp), nil
			}
		}
		if err == nil && resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusGatewayTimeout {
			return resp, nil
		}
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("the registry proxy child answered %s", resp.Status)
		}
		if req.Context().Err() != nil {
			return nil, req.Context().Err()
		}
		t.s.up.Suspect(err)
	}
	t.s.local.waitReady(req.Context(), 10*time.Second)
	out := req.Clone(req.Context())
	resp, err := t.s.local.transport.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	return t.s.offline404(out, resp), nil
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
	writeError(rec, http.StatusServiceUnavailable, "UNAVAILABLE", s.unreachable()+"; "+what, nil)
	return &http.Response{
		Status: "503 Service Unavailable", StatusCode: http.StatusServiceUnavailable,
		Proto: resp.Proto, ProtoMajor: resp.ProtoMajor, ProtoMinor: resp.ProtoMinor,
		Header: rec.header, Body: io.NopCloser(bytes.NewReader(rec.body.Bytes())),
		ContentLength: int64(rec.body.Len()), Request: req,
	}
}

// unreachable says since when the upstream cannot be reached.
func (s *Server) unreachable() string {
	online, since, lastErr := s.up.Online()
	if online {
		return "upstream " + s.up.String() + " failed: " + lastErr
	}
	return "upstream " + s.up.String() + " unreachable since " + since.UTC().Format("15:04:05") + " UTC"
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
