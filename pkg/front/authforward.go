package front

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"time"
)

// registry:2 2.8's proxy sends the configured credentials only to token
// realms it discovers at start (distribution registry/proxy/proxyauth.go,
// bearer challenges only): an upstream with Basic auth gets its manifest
// and tag requests without credentials. When the upstream has credentials,
// the proxy child's remoteurl is therefore a loopback listener of the front
// that forwards each request to the upstream through the front's own
// logged-in transport (Basic or token, per repository), and the child's
// config carries no credentials at all.

// startAuthForwarder listens on a loopback port for the proxy child and
// returns its URL; "" when the upstream has no credentials.
func (s *Server) startAuthForwarder() (string, error) {
	if s.cfg.Username == "" && s.cfg.Password == "" {
		return "", nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen for the registry proxy child's upstream requests: %w", err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host, pr.Out.Host = s.up.base.Scheme, s.up.base.Host, s.up.base.Host
			pr.Out.Header.Del("Authorization") // the front's transport logs in
		},
		Transport:     &upstreamAuthTransport{s: s},
		FlushInterval: -1,
		ErrorLog:      s.logger,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return
			}
			if connectionFailure(err) {
				s.up.Suspect(err)
			}
			s.logger.Printf("upstream request of the registry proxy child, %s %s: %v", r.Method, r.URL.Path, err)
			writeError(w, http.StatusBadGateway, "UNAVAILABLE", "upstream "+s.up.String()+": "+err.Error(), nil)
		},
	}
	s.authFwd = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !fromLoopback(r) {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		if rt := parseRoute(r.URL.Path); rt.kind == "base" {
			// registry:2 pings /v2/ for auth challenges: there are none to
			// meet, the front logs in.
			w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.Write([]byte("{}")) //nolint:errcheck
			return
		}
		rp.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 30 * time.Second, ErrorLog: s.logger}
	s.goRun(func() {
		if err := s.authFwd.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Printf("upstream forwarder of the registry proxy child: %v", err)
		}
	})
	return "http://" + ln.Addr().String(), nil
}

// upstreamAuthTransport sends a request of the proxy child to the upstream,
// logged in for the repository its path names.
type upstreamAuthTransport struct{ s *Server }

func (t *upstreamAuthTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt := parseRoute(req.URL.Path)
	if rt.repo == "" {
		return nil, fmt.Errorf("%s names no repository: the cache forwards only repository requests", req.URL.Path)
	}
	ctx, cancel := context.WithTimeoutCause(req.Context(), openTimeout, errNoAnswer)
	tr, err := t.s.up.transport(ctx, rt.repo)
	cancel()
	if err != nil {
		return nil, err
	}
	return tr.RoundTrip(req)
}
