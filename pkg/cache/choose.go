package cache

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// ErrNoCache is Choose's error when this engine runs no bkcache cache.
var ErrNoCache = errors.New(`no bkcache cache on this engine; create one with "docker bkcache up"`)

// Choose picks the cache a command acts on. A name given by the user wins
// (--cache, or NAME of logs/down); without one, an image that names a cache's
// address (127.0.0.1:5500/repo:tag) picks that cache, one that names an
// upstream picks the one cache proxying it, and otherwise the engine's only
// cache is used. Several candidates are an error that lists them; hint says
// how the command takes a name (e.g. "--cache NAME").
func Choose(ctx context.Context, eng Engine, named, image, hint string) (Cache, error) {
	if named != "" {
		return Lookup(ctx, eng, named)
	}
	all, err := All(ctx, eng)
	if err != nil {
		return Cache{}, err
	}
	if len(all) == 0 {
		// The guide's own container carries no labels: Lookup says how to
		// adopt it; either way no bkcache cache runs (errors.Is ErrNoCache).
		_, err := Lookup(ctx, eng, DefaultName)
		if err == nil || errors.Is(err, errNotFound) {
			return Cache{}, ErrNoCache
		}
		return Cache{}, noCacheError{err}
	}
	return choose(all, image, hint)
}

// choose is Choose's rule over the caches of an engine (at least one).
func choose(caches []Cache, image, hint string) (Cache, error) {
	if reg := registryOf(image); reg != "" {
		var byAddr, byUpstream []Cache
		for _, c := range caches {
			if isCacheAddress(c.Spec, reg) {
				byAddr = append(byAddr, c)
			}
			if up := c.Spec.UpstreamHost(); up == reg || (isDockerHub(up) && isDockerHub(reg)) {
				byUpstream = append(byUpstream, c)
			}
		}
		switch {
		case len(byAddr) == 1:
			return byAddr[0], nil
		case len(byAddr) == 0 && len(byUpstream) == 1:
			return byUpstream[0], nil
		case len(byUpstream) > 1:
			return Cache{}, fmt.Errorf("several caches proxy %s: %s; name one with %s", reg, describeCaches(byUpstream), hint)
		}
	}
	if len(caches) == 1 {
		return caches[0], nil
	}
	return Cache{}, fmt.Errorf("%d caches on this engine: %s; name one with %s", len(caches), describeCaches(caches), hint)
}

// registryOf is the registry an image reference names, or "" (repo:tag).
func registryOf(image string) string {
	i := strings.Index(image, "/")
	if i <= 0 {
		return ""
	}
	if first := image[:i]; strings.ContainsAny(first, ".:") || first == "localhost" {
		return first
	}
	return ""
}

// isCacheAddress says whether host:port is where spec's cache serves.
func isCacheAddress(spec Spec, hostport string) bool {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil || port != strconv.Itoa(spec.Port) {
		return false
	}
	switch host {
	case "127.0.0.1", "localhost", "::1", spec.Bind:
		return true
	}
	return hostport == spec.LocalAddress()
}

// describeCaches lists caches as "NAME (UPSTREAM on ADDRESS)".
func describeCaches(caches []Cache) string {
	parts := make([]string, len(caches))
	for i, c := range caches {
		parts[i] = fmt.Sprintf("%s (%s on %s)", c.Spec.Name, c.Spec.Upstream, c.Spec.LocalAddress())
	}
	return strings.Join(parts, ", ")
}

// noCacheError is ErrNoCache with the reason Lookup gave.
type noCacheError struct{ err error }

func (e noCacheError) Error() string        { return e.err.Error() }
func (e noCacheError) Is(target error) bool { return target == ErrNoCache }
func (e noCacheError) Unwrap() error        { return e.err }
