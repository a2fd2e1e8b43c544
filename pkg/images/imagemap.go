package images

import (
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/bkcache/bkcache/pkg/imageref"
)

// imageMap is a reference spelled in parts.
type imageMap struct {
	registry, repository, tag, digest string
	used                              map[string]bool
}

// splitImage recognises a map that spells a reference in parts, as Bitnami
// and most operators do: {registry, repository, tag, digest}, or {image, tag}.
func splitImage(n *yaml.Node) (imageMap, bool) {
	repoKey := "repository"
	repo := deref(get(n, repoKey))
	if repo == nil || repo.Kind != yaml.ScalarNode {
		repoKey = "image"
		repo = deref(get(n, repoKey))
		if repo == nil || repo.Kind != yaml.ScalarNode || (get(n, "tag") == nil && get(n, "digest") == nil && get(n, "registry") == nil) {
			return imageMap{}, false
		}
	}
	if repo.Value == "" || strings.Contains(repo.Value, "://") {
		return imageMap{}, false
	}
	m := imageMap{repository: strings.TrimSpace(repo.Value), used: map[string]bool{repoKey: true}}
	part := func(k string) string {
		v := deref(get(n, k))
		if v == nil || v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			return ""
		}
		m.used[k] = true
		return strings.TrimSpace(v.Value)
	}
	m.registry = strings.TrimSuffix(part("registry"), "/")
	m.tag, m.digest = part("tag"), part("digest")
	return m, true
}

// fullReference: a registry host, a path and a tag or digest.
func fullReference(v string) bool {
	v = strings.TrimSpace(v)
	if !imageShaped.MatchString(v) {
		return false
	}
	// A bare host/path with a port but no tag is too often a URL without scheme.
	return strings.ContainsAny(v[strings.LastIndex(v, "/")+1:], ":@")
}

// looksLikeImage judges a free-text value by itself and by its key's name.
func looksLikeImage(key, v string) bool {
	v = strings.TrimSpace(v)
	if v == "" || strings.Contains(v, "://") {
		return false
	}
	if fullReference(v) {
		return true
	}
	k := strings.ToLower(key)
	if strings.Contains(k, "image") && !strings.Contains(k, "policy") && !strings.Contains(k, "secret") &&
		!strings.Contains(k, "registry") && !strings.Contains(k, "tag") && !strings.Contains(k, "port") {
		_, err := imageref.Normalize(v)
		return err == nil && !strings.HasPrefix(v, "/") && plausible(v)
	}
	return false
}

// plausible rejects what parses as a reference but is no image: a bare
// number ("80"), or a single word with no tag, digest or slash ("jetstack").
func plausible(v string) bool {
	if v == "" || !strings.ContainsAny(v, "/:@") {
		return false
	}
	name := v
	if i := strings.IndexAny(name, "@"); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	return strings.Trim(name, "0123456789.") != ""
}

// hasRegistry says whether a reference names its registry: a first
// component with a dot or a port, or localhost.
func hasRegistry(ref string) bool {
	first, _, ok := strings.Cut(ref, "/")
	return ok && (strings.ContainsAny(first, ".:") || first == "localhost")
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		return deref(n.Content[0])
	}
	return n
}

func get(n *yaml.Node, key string) *yaml.Node {
	n = deref(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func scalar(n *yaml.Node) string {
	n = deref(n)
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func (m imageMap) name() string {
	if m.registry == "" {
		return m.repository
	}
	return m.registry + "/" + m.repository
}

func (m imageMap) ref() string {
	ref := m.name()
	if m.tag != "" && !strings.Contains(ref[strings.LastIndex(ref, "/")+1:], ":") {
		ref += ":" + m.tag
	}
	if m.digest != "" && !strings.Contains(ref, "@") {
		ref += "@" + m.digest
	}
	return ref
}
