package images

import (
	"fmt"
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

// ValidateRegistry checks a --rewrite-registry value: a host with an optional
// port, no scheme and no path.
func ValidateRegistry(host string) error {
	if strings.Contains(host, "://") || strings.Contains(host, "/") {
		return fmt.Errorf("registry %q: give HOST or HOST:PORT, without scheme or path", host)
	}
	if _, err := name.NewRegistry(host); err != nil {
		return fmt.Errorf("registry %q: %w", host, err)
	}
	return nil
}
