package front

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// upstream is the registry the cache proxies: reachability, mode and
// authenticated transports.
type upstream struct {
	base *url.URL
	reg  name.Registry
	auth authn.Authenticator
	// plain is the transport below authentication (proxy from the environment, as registry:2).
	plain *http.Transport
	logf  func(string, ...any)

	probeTimeout, probeFirst, probeMax time.Duration

	mu         sync.Mutex
	known      bool // the first probe has set online
	online     bool
	since      time.Time
	lastError  string
	transports map[string]http.RoundTripper // per repository: tokens are scoped to one
	changed    chan struct{}                // closed and replaced on every mode change
	suspect    chan struct{}                // a failure was seen: probe now
}

func newUpstream(cfg *registryConfig, opts Options, logf func(string, ...any)) (*upstream, error) {
	var nopts []name.Option
	if cfg.Upstream.Scheme == "http" {
		nopts = append(nopts, name.Insecure)
	}
	reg, err := name.NewRegistry(cfg.Upstream.Host, nopts...)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", cfg.Upstream, err)
	}
	auth := authn.Anonymous
	if cfg.Username != "" || cfg.Password != "" {
		auth = &authn.Basic{Username: cfg.Username, Password: cfg.Password}
	}
	plain := http.DefaultTransport.(*http.Transport).Clone()
	plain.DisableCompression = true
	plain.MaxIdleConnsPerHost = 64
	plain.ResponseHeaderTimeout = 0 // a slow upstream is slow, not broken: Fetcher's idle timeout handles stalls
	return &upstream{
		base: cfg.Upstream, reg: reg, auth: auth, plain: plain, logf: logf,
		probeTimeout: cmp.Or(opts.ProbeTimeout, 5*time.Second),
		probeFirst:   cmp.Or(opts.ProbeInterval, 5*time.Second),
		probeMax:     cmp.Or(opts.ProbeMaxInterval, 30*time.Second),
		transports:   map[string]http.RoundTripper{},
		changed:      make(chan struct{}),
		suspect:      make(chan struct{}, 1),
		since:        time.Now(),
	}, nil
}

// String is the upstream's URL, as operators wrote it.
func (u *upstream) String() string { return u.base.String() }

// Online reports the mode and since when it holds.
func (u *upstream) Online() (bool, time.Time, string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.online, u.since, u.lastError
}

// Changed is closed at the next mode change.
func (u *upstream) Changed() <-chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.changed
}

func (u *upstream) setOnline(online bool, errText string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if errText != "" {
		u.lastError = errText
	}
	if online == u.online && u.known {
		return
	}
	u.known = true
	u.online, u.since = online, time.Now()
	close(u.changed)
	u.changed = make(chan struct{})
	if online {
		u.logf("upstream %s reachable: online, pulling through", u.base)
	} else {
		u.logf("upstream %s unreachable (%s): offline since %s, serving cached content", u.base, errText, u.since.UTC().Format(time.RFC3339))
		u.transports = map[string]http.RoundTripper{} // log in again when it is back
	}
}

// Suspect asks for a probe now: a request to the upstream failed at the connection level.
func (u *upstream) Suspect(err error) {
	u.mu.Lock()
	u.lastError = err.Error()
	u.mu.Unlock()
	select {
	case u.suspect <- struct{}{}:
	default:
	}
}

// probe sends GET /v2/: any HTTP answer means reachable.
func (u *upstream) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, u.probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.base.String()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := u.plain.RoundTrip(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// watch keeps the mode current until ctx ends: while offline it probes with
// backoff; while online it probes when a failure is reported.
func (u *upstream) watch(ctx context.Context) {
	pause := u.probeFirst
	for ctx.Err() == nil {
		online, _, _ := u.Online()
		if online {
			pause = u.probeFirst
			select {
			case <-u.suspect:
			case <-ctx.Done():
				return
			}
			if err := u.probe(ctx); err != nil && ctx.Err() == nil {
				u.setOnline(false, err.Error())
			}
			continue
		}
		select {
		case <-time.After(pause):
		case <-u.suspect: // a hint is no reason to probe faster while offline
			continue
		case <-ctx.Done():
			return
		}
		if err := u.probe(ctx); err != nil {
			u.setOnline(false, err.Error())
			pause = min(pause*2, u.probeMax)
			continue
		}
		u.setOnline(true, "")
	}
}

// transport returns a round tripper logged in to the upstream for pulls from repo.
func (u *upstream) transport(ctx context.Context, repo string) (http.RoundTripper, error) {
	u.mu.Lock()
	rt := u.transports[repo]
	u.mu.Unlock()
	if rt != nil {
		return rt, nil
	}
	scope := u.reg.Repo(repo).Scope(transport.PullScope)
	rt, err := transport.NewWithContext(ctx, u.reg, u.auth, u.plain, []string{scope})
	if err != nil {
		return nil, fmt.Errorf("log in to upstream %s for %s: %w", u.base, repo, err)
	}
	u.mu.Lock()
	u.transports[repo] = rt
	u.mu.Unlock()
	return rt, nil
}

// blobURL is where the upstream serves a blob.
func (u *upstream) blobURL(repo, digest string) string {
	return u.base.String() + "/v2/" + repo + "/blobs/" + digest
}

// connectionFailure tells a failure to reach the upstream (which should make
// it probe) from an answer it gave.
func connectionFailure(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.StatusCode >= 500
	}
	var nerr net.Error
	var oerr *net.OpError
	return errors.As(err, &nerr) || errors.As(err, &oerr) || strings.Contains(err.Error(), "connection") ||
		errors.Is(err, context.DeadlineExceeded)
}
