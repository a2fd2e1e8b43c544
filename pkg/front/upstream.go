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

// Deadlines of every call to the upstream. A node's containerd drops a
// registry that sends no response headers within 30 s; the front answers it
// before that, so a silent upstream costs a node one short wait, not a pull.
const (
	// dialTimeout bounds a TCP connect (a firewall that drops SYNs).
	dialTimeout = 10 * time.Second
	// tlsTimeout bounds a TLS handshake on an accepted connection.
	tlsTimeout = 10 * time.Second
	// headerTimeout bounds the wait for one response's headers.
	headerTimeout = 15 * time.Second
	// openTimeout bounds everything before a blob's first headers (login ping,
	// token, GET): a waiting client gets headers or a 503 within it.
	openTimeout = 20 * time.Second
	// stallTimeout: a blob body that sends no byte for this long is broken
	// (resumed with Range, or given up when the upstream went offline).
	stallTimeout = 20 * time.Second
	// offlineGrace: a download goes on retrying through an outage this
	// short (a restart of the upstream, a flap); a longer one ends it.
	offlineGrace = 10 * time.Second
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
	st         linkState
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
	plain.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	plain.TLSHandshakeTimeout = tlsTimeout
	// A slow upstream that answers is slow; one that sends no headers at all
	// is not answering: treated as an outage, like a refused connection.
	plain.ResponseHeaderTimeout = headerTimeout
	return &upstream{
		base: cfg.Upstream, reg: reg, auth: auth, plain: plain, logf: logf,
		probeTimeout: cmp.Or(opts.ProbeTimeout, 5*time.Second),
		probeFirst:   cmp.Or(opts.ProbeInterval, 2*time.Second),
		probeMax:     cmp.Or(opts.ProbeMaxInterval, 15*time.Second),
		transports:   map[string]http.RoundTripper{},
		changed:      make(chan struct{}),
		suspect:      make(chan struct{}, 1),
		st:           linkState{since: time.Now()},
	}, nil
}

// String is the upstream's URL, as operators wrote it.
func (u *upstream) String() string { return u.base.String() }

// Online reports the mode and since when it holds.
func (u *upstream) Online() (bool, time.Time, string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st.online, u.st.since, u.st.lastError
}

// state is a copy of the whole link state.
func (u *upstream) state() linkState {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st
}

// Changed is closed at the next mode change.
func (u *upstream) Changed() <-chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.changed
}

// report feeds one event into the state machine, from any path; a mode
// change wakes everything waiting on Changed (the watcher included).
func (u *upstream) report(ev linkEvent, err error) {
	errText := ""
	if err != nil {
		errText = err.Error()
	}
	u.mu.Lock()
	st, changed, probe := u.st.next(ev, errText, isSilence(err), time.Now())
	u.st = st
	if changed {
		close(u.changed)
		u.changed = make(chan struct{})
		if st.online {
			u.logf("upstream %s answers: online, pulling through", u.base)
		} else {
			u.logf("upstream %s %s (%s): offline since %s, serving cached content", u.base, st.reason(), errText, st.since.UTC().Format(time.RFC3339))
			u.transports = map[string]http.RoundTripper{} // log in again when it is back
		}
	}
	u.mu.Unlock()
	if probe {
		select {
		case u.suspect <- struct{}{}:
		default:
		}
	}
}

// Suspect reports a failed request: the watcher probes now.
func (u *upstream) Suspect(err error) { u.report(requestFailed, err) }

// probe sends GET /v2/: any HTTP answer means reachable.
func (u *upstream) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeoutCause(ctx, u.probeTimeout, errNoAnswer)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.base.String()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := u.plain.RoundTrip(req)
	if err != nil {
		if context.Cause(ctx) == errNoAnswer {
			return fmt.Errorf("GET %s/v2/: no answer within %s: %w", u.base, u.probeTimeout, errNoAnswer)
		}
		return err
	}
	resp.Body.Close()
	return nil
}

// probeAndReport probes and feeds the result into the state machine.
func (u *upstream) probeAndReport(ctx context.Context) error {
	err := u.probe(ctx)
	if ctx.Err() != nil {
		return err
	}
	if err != nil {
		u.report(probeFailed, err)
	} else {
		u.report(probeAnswered, nil)
	}
	return err
}

// watch keeps the mode current until ctx ends. Online, it probes when a
// failure is reported; offline (however the outage began) it always probes,
// every probeFirst doubling up to probeMax, so it is back online at most
// probeMax + probeTimeout after the upstream answers again.
func (u *upstream) watch(ctx context.Context) {
	pause := u.probeFirst
	for ctx.Err() == nil {
		changed := u.Changed() // before reading the mode: no change slips between
		if online, _, _ := u.Online(); online {
			pause = u.probeFirst
			select {
			case <-u.suspect:
				u.probeAndReport(ctx) //nolint:errcheck // reported
			case <-changed:
			case <-ctx.Done():
				return
			}
			continue
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-changed: // online again through another path: nothing to wait for
			t.Stop()
			continue
		case <-ctx.Done():
			t.Stop()
			return
		}
		if err := u.probeAndReport(ctx); err != nil {
			pause = min(pause*2, u.probeMax)
		}
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
	ctx, cancel := context.WithTimeoutCause(ctx, openTimeout, errNoAnswer)
	defer cancel()
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

// cancelWhenOffline cancels ctx when the upstream has been offline for
// offlineGrace without a break: a short outage is bridged by the download's
// own retries, a long one ends it so that waiters' clients move on. The
// returned func stops watching.
func (u *upstream) cancelWhenOffline(ctx context.Context, cancel context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	go func() {
		var grace <-chan time.Time
		for {
			changed := u.Changed()
			st := u.state()
			offline := st.known && !st.online
			switch {
			case offline && grace == nil:
				grace = time.After(offlineGrace)
			case !offline:
				grace = nil
			}
			select {
			case <-grace:
				st := u.state()
				cancel(fmt.Errorf("upstream %s %s for %s (%s): %w", u.base, st.reason(), offlineGrace, st.lastError, errNoAnswer))
				return
			case <-changed:
			case <-done:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() { close(done) }
}
