// Package imageref parses, normalises and rewrites image references and checks
// registry addresses: the small shared vocabulary of the image lister, the
// node configurators and the cluster commands.
package imageref

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Normalize parses an image reference and returns its full form: registry,
// repository, tag (":latest" when neither a tag nor a digest is given) and
// digest, e.g. "nginx" -> "docker.io/library/nginx:latest" and
// "repo:1@sha256:…" keeps both tag and digest. Docker Hub is spelled
// "docker.io", as containerd and kubelet report it, not go-containerregistry's
// "index.docker.io". Parsing is go-containerregistry's, so what it accepts is
// what the copy and warm commands accept.
func Normalize(raw string) (string, error) {
	s := strings.TrimSpace(raw)
	if s == "" {
		return "", fmt.Errorf("empty image reference")
	}
	if strings.ContainsAny(s, " \t\n{}") {
		return "", fmt.Errorf("invalid image reference %q: contains spaces or template braces", raw)
	}
	base, dig, hasDigest := strings.Cut(s, "@")
	if hasDigest {
		if _, err := name.NewDigest(s); err != nil {
			return "", fmt.Errorf("invalid image reference %q: %w", raw, err)
		}
	}
	explicitTag := strings.Contains(base[strings.LastIndex(base, "/")+1:], ":")
	tag, err := name.NewTag(base)
	if err != nil {
		return "", fmt.Errorf("invalid image reference %q: %w", raw, err)
	}
	reg := tag.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	for _, c := range strings.Split(tag.RepositoryStr(), "/") {
		if c == "" || c == "." || c == ".." {
			return "", fmt.Errorf("invalid image reference %q: path component %q (empty, . and .. are no names)", raw, c)
		}
	}
	out := reg + "/" + tag.RepositoryStr()
	// Docker Hub's library/ can push a name over the limit: refuse it here,
	// as containerd would, so that a normalised reference is always valid.
	if len(out) > maxNameLength {
		return "", fmt.Errorf("invalid image reference %q: name %s… is %d characters, over the %d registries and containerd accept", raw, out[:40], len(out), maxNameLength)
	}
	if explicitTag || !hasDigest {
		out += ":" + tag.TagStr()
	}
	if hasDigest {
		out += "@" + dig
	}
	return out, nil
}

// maxNameLength is distribution's NameTotalLengthMax: registry and
// repository together.
const maxNameLength = 255

// Registry returns the registry host of a normalised reference.
func Registry(ref string) string {
	host, _, _ := strings.Cut(ref, "/")
	return host
}

// Rewrite repoints a normalised reference at another registry, keeping the
// repository path, tag and digest: what BlueKing's `imageRegistry` value does,
// and how nodes pull through a cache or an intranet registry.
func Rewrite(ref, registry string) string {
	if registry == "" {
		return ref
	}
	_, rest, ok := strings.Cut(ref, "/")
	if !ok {
		return ref
	}
	return strings.TrimSuffix(registry, "/") + "/" + rest
}

// ValidateRegistry checks a registry address given by a user (images --check and
// --rewrite-registry, mirror --registry and --upstream): a host name, an IPv4 address or a
// bracketed IPv6 address, with an optional :PORT (1-65535); no scheme, no path, no "..".
// The name also becomes a directory name on nodes (certs.d/<registry>/), so nothing else
// passes. containerd's "_default" directory is not a registry: callers that accept it check
// for it themselves.
func ValidateRegistry(host string) error {
	switch {
	case host == "":
		return fmt.Errorf("registry address is empty: give HOST or HOST:PORT")
	case strings.Contains(host, "://") || strings.Contains(host, "/"):
		return fmt.Errorf("registry %q: give HOST or HOST:PORT, without scheme or path", host)
	case strings.Contains(host, ".."):
		return fmt.Errorf("registry %q: \"..\" is not allowed", host)
	}
	h, bracketed := host, false
	if hh, port, err := net.SplitHostPort(host); err == nil {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 || port != strconv.Itoa(p) {
			return fmt.Errorf("registry %q: port %q: want a number from 1 to 65535", host, port)
		}
		h, bracketed = hh, strings.HasPrefix(host, "[")
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		h, bracketed = host[1:len(host)-1], true
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		if ip.Is6() != bracketed || ip.Zone() != "" {
			return fmt.Errorf("registry %q: want HOST or HOST:PORT, an IPv6 address in brackets ([fd00::1]:5000)", host)
		}
	} else if bracketed || !hostName.MatchString(h) {
		return fmt.Errorf("registry %q: want a host name (letters, digits, '-' and '.'), an IP address, or either with :PORT", host)
	}
	if _, err := name.NewRegistry(host); err != nil {
		return fmt.Errorf("registry %q: %w", host, err)
	}
	return nil
}

// hostName is a DNS name: dot-separated labels of letters, digits and inner hyphens.
var hostName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$`)
