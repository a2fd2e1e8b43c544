package images

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/bkcache/bkcache/pkg/imageref"
)

// Rewrites repoint references at other registries: --rewrite-registry
// FROM=TO per registry (each upstream to its own cache), or one bare HOST for
// every image (an intranet registry filled by push).
type Rewrites struct {
	// All, if set, repoints every image not named in ByRegistry.
	All string
	// ByRegistry maps a registry as references spell it (docker.io for
	// Docker Hub) to where its images are pulled from instead.
	ByRegistry map[string]string
}

// ParseRewrites reads --rewrite-registry values: HOST[:PORT] or
// FROM=HOST[:PORT], repeatable; the bare form at most once.
func ParseRewrites(specs []string) (Rewrites, error) {
	r := Rewrites{ByRegistry: map[string]string{}}
	for _, s := range specs {
		from, to, pair := strings.Cut(strings.TrimSpace(s), "=")
		if !pair {
			if r.All != "" {
				return Rewrites{}, fmt.Errorf("--rewrite-registry %s: a bare registry is given twice (%s and %s): give FROM=TO pairs to send each registry to its own place", s, r.All, s)
			}
			if err := imageref.ValidateRegistry(from); err != nil {
				return Rewrites{}, fmt.Errorf("--rewrite-registry %s: %w", s, err)
			}
			r.All = strings.TrimSuffix(from, "/")
			continue
		}
		if err := imageref.ValidateRegistry(from); err != nil {
			return Rewrites{}, fmt.Errorf("--rewrite-registry %s: FROM: %w", s, err)
		}
		if err := imageref.ValidateRegistry(to); err != nil {
			return Rewrites{}, fmt.Errorf("--rewrite-registry %s: TO: %w", s, err)
		}
		from = canonicalRegistry(from)
		if prev, ok := r.ByRegistry[from]; ok && prev != to {
			return Rewrites{}, fmt.Errorf("--rewrite-registry: %s is sent both to %s and to %s", from, prev, to)
		}
		r.ByRegistry[from] = to
	}
	return r, nil
}

// canonicalRegistry spells Docker Hub as references do.
func canonicalRegistry(host string) string {
	switch host {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return host
}

// Empty says whether nothing is rewritten.
func (r Rewrites) Empty() bool { return r.All == "" && len(r.ByRegistry) == 0 }

// Apply repoints a normalised reference.
func (r Rewrites) Apply(ref string) string {
	if to, ok := r.ByRegistry[imageref.Registry(ref)]; ok {
		return imageref.Rewrite(ref, to)
	}
	return imageref.Rewrite(ref, r.All)
}

// String lists the rewrites, for messages.
func (r Rewrites) String() string {
	var parts []string
	for _, from := range slices.Sorted(maps.Keys(r.ByRegistry)) {
		parts = append(parts, from+"="+r.ByRegistry[from])
	}
	if r.All != "" {
		parts = append(parts, r.All)
	}
	return strings.Join(parts, " ")
}

// CollisionError: two images that --rewrite-registry would pull from one
// reference, so that one of them would be lost.
type CollisionError struct {
	Rewrites   Rewrites
	Collisions map[string][]string // rewritten reference -> originals
}

func (e *CollisionError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "--rewrite-registry %s sends %d references to the same name as another image (one of each pair would be lost):", e.Rewrites, len(e.Collisions))
	for _, to := range slices.Sorted(maps.Keys(e.Collisions)) {
		fmt.Fprintf(&b, "\n  %s <- %s", to, strings.Join(e.Collisions[to], ", "))
	}
	b.WriteString("\ngive each registry its own place: --rewrite-registry FROM=TO per registry (kubectl bkcache images -o registries lists them)")
	return b.String()
}
