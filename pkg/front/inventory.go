package front

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// inventory is what registry:2's storage holds: repositories with their
// manifests and tags, and the blobs with their sizes. It is read from
// registry:2's own layout (registry/storage/paths.go of distribution).
type inventory struct {
	Repos map[string]*invRepo
	Blobs map[string]int64 // digest -> size of its data
}

type invRepo struct {
	Manifests map[string]*invManifest // by digest
	Tags      map[string]string       // tag -> digest
}

type invManifest struct {
	Digest   string
	Stored   time.Time // the revision link's time: when registry:2 stored it
	Children []string  // an index's manifests
	Blobs    []string  // config and layers
}

// manifestRefs is what a stored manifest refers to (OCI, Docker schema 2 and 1).
type manifestRefs struct {
	Manifests []struct {
		Digest string `json:"digest"`
	} `json:"manifests"`
	Config *struct {
		Digest string `json:"digest"`
	} `json:"config"`
	Layers []struct {
		Digest string `json:"digest"`
	} `json:"layers"`
	FSLayers []struct {
		BlobSum string `json:"blobSum"`
	} `json:"fsLayers"`
}

// scanStorage reads the inventory of the storage at root (…/docker/registry/v2).
func scanStorage(ctx context.Context, root string) (*inventory, error) {
	inv := &inventory{Repos: map[string]*invRepo{}, Blobs: map[string]int64{}}
	if err := scanBlobs(ctx, root, inv.Blobs); err != nil {
		return nil, err
	}
	base := filepath.Join(root, "repositories")
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !d.IsDir() {
			return nil
		}
		switch d.Name() {
		case "_layers", "_uploads":
			return filepath.SkipDir
		case "_manifests":
			rel, _ := filepath.Rel(base, filepath.Dir(p))
			inv.Repos[filepath.ToSlash(rel)] = scanRepo(root, p)
			return filepath.SkipDir
		}
		return nil
	})
	return inv, err
}

// scanBlobs sums every blob's data file: blobs/sha256/xx/HEX/data.
func scanBlobs(ctx context.Context, root string, out map[string]int64) error {
	dir := filepath.Join(root, "blobs", "sha256")
	prefixes, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, pre := range prefixes {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		hexes, err := os.ReadDir(filepath.Join(dir, pre.Name()))
		if err != nil {
			continue
		}
		for _, h := range hexes {
			if info, err := os.Stat(filepath.Join(dir, pre.Name(), h.Name(), "data")); err == nil {
				out["sha256:"+h.Name()] = info.Size()
			}
		}
	}
	return nil
}

// storeBytes is the size of every blob's data in the storage at root.
func storeBytes(ctx context.Context, root string) int64 {
	m := map[string]int64{}
	scanBlobs(ctx, root, m) //nolint:errcheck // a partial sum is still a figure
	var n int64
	for _, s := range m {
		n += s
	}
	return n
}

func scanRepo(root, manifestsDir string) *invRepo {
	r := &invRepo{Manifests: map[string]*invManifest{}, Tags: map[string]string{}}
	revs := filepath.Join(manifestsDir, "revisions", "sha256")
	entries, _ := os.ReadDir(revs)
	for _, e := range entries {
		info, err := os.Stat(filepath.Join(revs, e.Name(), "link"))
		if err != nil {
			continue
		}
		dg := "sha256:" + e.Name()
		m := &invManifest{Digest: dg, Stored: info.ModTime()}
		if data, err := os.ReadFile(storage{root: root}.dataPath(dg)); err == nil {
			var refs manifestRefs
			if json.Unmarshal(data, &refs) == nil {
				for _, c := range refs.Manifests {
					m.Children = append(m.Children, c.Digest)
				}
				if refs.Config != nil && refs.Config.Digest != "" {
					m.Blobs = append(m.Blobs, refs.Config.Digest)
				}
				for _, l := range refs.Layers {
					m.Blobs = append(m.Blobs, l.Digest)
				}
				for _, l := range refs.FSLayers {
					m.Blobs = append(m.Blobs, l.BlobSum)
				}
			}
		}
		r.Manifests[dg] = m
	}
	tags := filepath.Join(manifestsDir, "tags")
	tagEntries, _ := os.ReadDir(tags)
	for _, t := range tagEntries {
		link, err := os.ReadFile(filepath.Join(tags, t.Name(), "current", "link"))
		if err != nil {
			continue
		}
		if dg := strings.TrimSpace(string(link)); sha256Ref.MatchString(dg) {
			r.Tags[t.Name()] = dg
		}
	}
	return r
}
