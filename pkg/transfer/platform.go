package transfer

import (
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// filterIndex keeps the children of idx that match platforms (all when none are given).
func filterIndex(idx v1.ImageIndex, platforms []v1.Platform) (v1.ImageIndex, int, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, 0, err
	}
	if len(platforms) == 0 {
		return idx, len(m.Manifests), nil
	}
	keep := 0
	filtered := mutate.RemoveManifests(idx, func(d v1.Descriptor) bool {
		if matchesAny(d.Platform, platforms) {
			keep++
			return false
		}
		return true
	})
	// RemoveManifests is lazy: force the count.
	if _, err := filtered.IndexManifest(); err != nil {
		return nil, 0, err
	}
	if keep == 0 {
		return nil, 0, fmt.Errorf("index has no image for %s", platformList(platforms))
	}
	return filtered, keep, nil
}

// matchesAny says whether p is one of platforms; no platforms match all.
func matchesAny(p *v1.Platform, platforms []v1.Platform) bool {
	if len(platforms) == 0 {
		return true
	}
	if p == nil {
		return false
	}
	for _, want := range platforms {
		if p.Satisfies(want) {
			return true
		}
	}
	return false
}

func platformList(ps []v1.Platform) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, ", ")
}
