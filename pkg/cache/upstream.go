package cache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// ErrUpstreamUnreachable marks a CheckUpstream error where no HTTP answer came
// back (DNS, refused, timeout): the front layout starts anyway, the plain one
// would crash-loop.
var ErrUpstreamUnreachable = errors.New("upstream unreachable")

// CheckUpstream asks the upstream registry's /v2/ endpoint, with the spec's
// credentials when it has them. registry:2 panics on start when its upstream
// cannot be reached, so `up` checks first and says why instead.
func CheckUpstream(ctx context.Context, spec Spec) error {
	u, err := url.Parse(spec.Upstream)
	if err != nil {
		return validateUpstream(spec.Upstream)
	}
	var opts []name.Option
	if u.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, opts...)
	if err != nil {
		return fmt.Errorf("invalid upstream %s: %w (--upstream)", spec.Upstream, err)
	}
	if spec.Username != "" && spec.Layout == LayoutPlain {
		if err := checkTokenAuth(ctx, spec, u); err != nil {
			return err
		}
	}
	auth := authn.Anonymous
	if spec.Username != "" {
		auth = &authn.Basic{Username: spec.Username, Password: spec.Password}
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()

	rt, err := transport.NewWithContext(ctx, reg, auth, http.DefaultTransport, []string{reg.Scope(transport.PullScope)})
	if err != nil {
		return upstreamError(spec, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.Scheme+"://"+u.Host+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return upstreamError(spec, err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		return nil
	case resp.StatusCode == http.StatusUnauthorized && spec.Username != "":
		return credentialsError(spec)
	case resp.StatusCode == http.StatusUnauthorized:
		return nil // anonymous pulls may still be allowed per repository
	default:
		return fmt.Errorf("upstream %s answered %s on /v2/: it does not look like a registry; check --upstream", spec.Upstream, resp.Status)
	}
}

func upstreamError(spec Spec, err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden) {
		if spec.Username != "" {
			return credentialsError(spec)
		}
		return nil
	}
	return &unreachableError{spec: spec, err: err}
}

func credentialsError(spec Spec) error {
	return fmt.Errorf("upstream %s rejected the credentials of user %q; check --username and the password given on --password-stdin", spec.Upstream, spec.Username)
}

// checkTokenAuth refuses credentials for an upstream that asks for Basic auth
// in the plain layout: registry:2's proxy keys its credentials by token
// realm, so it could never send them and every pull of a private image would
// fail. The front logs in for its proxy child, Basic auth included.
func checkTokenAuth(ctx context.Context, spec Spec, u *url.URL) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.Scheme+"://"+u.Host+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return upstreamError(spec, err)
	}
	resp.Body.Close()
	challenge := strings.ToLower(resp.Header.Get("WWW-Authenticate"))
	if resp.StatusCode == http.StatusUnauthorized && strings.HasPrefix(challenge, "basic") {
		return fmt.Errorf("upstream %s asks for Basic auth, but registry:2 can log in to an upstream only with token auth (as Harbor and Docker Hub use); leave out --plain (bkcache's front logs in with Basic auth too), put a token-auth registry in front, or pull without --username", spec.Upstream)
	}
	return nil
}

type unreachableError struct {
	spec Spec
	err  error
}

func (e *unreachableError) short() string {
	return fmt.Sprintf("upstream %s is unreachable from this host: %v", e.spec.Upstream, e.err)
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("%s; registry:2 alone (--plain) crashes on start without its upstream: fix DNS, proxy or firewall, pass another --upstream, leave out --plain (the front starts anyway and serves cached content), or --skip-upstream-check", e.short())
}

func (e *unreachableError) Unwrap() []error { return []error{e.err, ErrUpstreamUnreachable} }
