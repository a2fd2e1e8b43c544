package front

import (
	"encoding/json"
	"sync"
)

// seenMax bounds what seen remembers; past it, it starts afresh (a size it
// forgot falls back to Content-Length and the size cap).
const seenMax = 200_000

// seen remembers, from the manifests the front served, the size each blob
// was declared with (a download may never exceed it) and the repositories
// clients pulled a manifest of (only those may get a stored blob linked in).
type seen struct {
	mu    sync.Mutex
	sizes map[string]int64
	repos map[string]bool
}

func newSeen() *seen { return &seen{sizes: map[string]int64{}, repos: map[string]bool{}} }

// get is the declared size of digest, -1 when no manifest served named it.
func (s *seen) get(digest string) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.sizes[digest]
	if !ok {
		return -1, false
	}
	return n, true
}

// repo reports whether a manifest of repo was served.
func (s *seen) repo(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.repos[name]
}

// manifest records a manifest of repo that was served with 200: the sizes of
// the blobs it names (config and layers; an index names manifests, no blobs).
func (s *seen) manifest(repo string, body []byte) {
	var m struct {
		Config *struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"config"`
		Layers []struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"layers"`
	}
	err := json.Unmarshal(body, &m)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.repos) >= seenMax {
		clear(s.repos)
	}
	s.repos[repo] = true
	if err != nil {
		return
	}
	if len(s.sizes)+len(m.Layers)+1 > seenMax {
		clear(s.sizes)
	}
	if m.Config != nil && sha256Ref.MatchString(m.Config.Digest) && m.Config.Size >= 0 {
		s.sizes[m.Config.Digest] = m.Config.Size
	}
	for _, l := range m.Layers {
		if sha256Ref.MatchString(l.Digest) && l.Size >= 0 {
			s.sizes[l.Digest] = l.Size
		}
	}
}
