package front

import (
	"slices"
	"sort"
	"strings"
	"time"
)

// KeepRef is one image a kept list names, as a repository of this cache and
// a tag or a digest.
type KeepRef struct {
	Repo   string `json:"repo"`
	Tag    string `json:"tag,omitempty"`
	Digest string `json:"digest,omitempty"`
}

func (k KeepRef) String() string {
	if k.Digest != "" {
		return k.Repo + "@" + k.Digest
	}
	return k.Repo + ":" + k.Tag
}

// PrunePolicy says what leaves: with only Keep, everything no kept list
// names; with UnusedFor, what was not served since then; with MaxSize, the
// least recently served until the store is under it. Kept images always stay.
type PrunePolicy struct {
	Keep      []KeepRef     `json:"keep,omitempty"`
	UnusedFor time.Duration `json:"unusedFor,omitempty"`
	MaxSize   int64         `json:"maxSize,omitempty"`
}

// Empty says whether the policy would select nothing to delete.
func (p PrunePolicy) Empty() bool { return len(p.Keep) == 0 && p.UnusedFor <= 0 && p.MaxSize <= 0 }

// PruneImage is one image of the store: a repository's top manifest (an
// index with its platform manifests, or one manifest) and its tags.
type PruneImage struct {
	Repo       string    `json:"repo"`
	Digest     string    `json:"digest"`
	Tags       []string  `json:"tags,omitempty"`
	Manifests  []string  `json:"manifests"` // Digest first, then its platform manifests
	LastServed time.Time `json:"lastServed"`
	// Bytes is what its content weighs (blobs shared with other images included).
	Bytes int64 `json:"bytes"`

	blobs []string
}

// Name is repo:tag (the first tag) or repo@digest.
func (im PruneImage) Name() string {
	if len(im.Tags) > 0 {
		return im.Repo + ":" + im.Tags[0]
	}
	return im.Repo + "@" + im.Digest
}

// PrunePlan is what a prune deletes and what stays.
type PrunePlan struct {
	Delete        []PruneImage `json:"delete"`
	KeptImages    int          `json:"keptImages"`
	KeepNotCached []string     `json:"keepNotCached,omitempty"` // kept refs the cache does not hold
	BlobsDeleted  int          `json:"blobsDeleted"`            // blobs left unreferenced, unreferenced ones before included
	BytesBefore   int64        `json:"bytesBefore"`
	BytesFreed    int64        `json:"bytesFreed"`
	BytesAfter    int64        `json:"bytesAfter"`
	ImagesBefore  int          `json:"imagesBefore"`
	ImagesAfter   int          `json:"imagesAfter"`
}

// storeImages groups the inventory into images: every manifest no other
// manifest of its repository lists is the top of one image.
func storeImages(inv *inventory, served func(string) time.Time) []PruneImage {
	var out []PruneImage
	for _, repoName := range sortedKeys(inv.Repos) {
		repo := inv.Repos[repoName]
		child := map[string]bool{}
		for _, m := range repo.Manifests {
			for _, c := range m.Children {
				child[c] = true
			}
		}
		tagsOf := map[string][]string{}
		for t, d := range repo.Tags {
			tagsOf[d] = append(tagsOf[d], t)
		}
		for _, dg := range sortedKeys(repo.Manifests) {
			if child[dg] {
				continue
			}
			top := repo.Manifests[dg]
			im := PruneImage{Repo: repoName, Digest: dg, Tags: tagsOf[dg], Manifests: []string{dg}}
			sort.Strings(im.Tags)
			members := []*invManifest{top}
			for _, c := range top.Children {
				if m, ok := repo.Manifests[c]; ok {
					im.Manifests = append(im.Manifests, c)
					members = append(members, m)
				}
			}
			seen := map[string]bool{}
			for _, m := range members {
				last := served(m.Digest)
				if last.IsZero() {
					last = m.Stored
				}
				if last.After(im.LastServed) {
					im.LastServed = last
				}
				for _, b := range append([]string{m.Digest}, m.Blobs...) {
					if !seen[b] {
						seen[b] = true
						im.blobs = append(im.blobs, b)
						im.Bytes += inv.Blobs[b]
					}
				}
			}
			out = append(out, im)
		}
	}
	return out
}

// keptBy says which images a kept list protects, and which kept refs the
// cache does not hold. A digest names the image it belongs to (its index
// when it is a platform manifest).
func keptBy(inv *inventory, imgs []PruneImage, keep []KeepRef) (map[int]bool, []string) {
	kept := map[int]bool{}
	var missing []string
	for _, k := range keep {
		repo := inv.Repos[k.Repo]
		dg := k.Digest
		if dg == "" && repo != nil {
			dg = repo.Tags[k.Tag]
		}
		found := false
		for i, im := range imgs {
			if im.Repo == k.Repo && dg != "" && slices.Contains(im.Manifests, dg) {
				kept[i], found = true, true
			}
		}
		if !found {
			missing = append(missing, k.String())
		}
	}
	return kept, missing
}

// makePlan picks what a prune deletes under pol (pure: the inventory, the
// last-served times and the clock in, the plan out).
func makePlan(inv *inventory, pol PrunePolicy, served func(string) time.Time, now time.Time) PrunePlan {
	imgs := storeImages(inv, served)
	kept, missing := keptBy(inv, imgs, pol.Keep)
	refs := map[string]int{}
	for _, im := range imgs {
		for _, b := range im.blobs {
			refs[b]++
		}
	}
	plan := PrunePlan{KeptImages: len(kept), KeepNotCached: missing, ImagesBefore: len(imgs)}
	for dg, size := range inv.Blobs {
		plan.BytesBefore += size
		if refs[dg] == 0 { // unreferenced already: garbage collection takes it
			plan.BlobsDeleted++
			plan.BytesFreed += size
		}
	}
	del := map[int]bool{}
	drop := func(i int) {
		del[i] = true
		for _, b := range imgs[i].blobs {
			if refs[b]--; refs[b] == 0 {
				if size, ok := inv.Blobs[b]; ok {
					plan.BlobsDeleted++
					plan.BytesFreed += size
				}
			}
		}
	}
	var candidates []int
	for i := range imgs {
		if !kept[i] {
			candidates = append(candidates, i)
		}
	}
	sort.SliceStable(candidates, func(a, b int) bool {
		return imgs[candidates[a]].LastServed.Before(imgs[candidates[b]].LastServed)
	})
	switch {
	case pol.UnusedFor <= 0 && pol.MaxSize <= 0:
		if len(pol.Keep) > 0 {
			for _, i := range candidates {
				drop(i)
			}
		}
	default:
		if pol.UnusedFor > 0 {
			cutoff := now.Add(-pol.UnusedFor)
			for _, i := range candidates {
				if imgs[i].LastServed.Before(cutoff) {
					drop(i)
				}
			}
		}
		if pol.MaxSize > 0 {
			for _, i := range candidates {
				if plan.BytesBefore-plan.BytesFreed <= pol.MaxSize {
					break
				}
				if !del[i] {
					drop(i)
				}
			}
		}
	}
	for i := range imgs {
		if del[i] {
			plan.Delete = append(plan.Delete, imgs[i])
		}
	}
	sort.SliceStable(plan.Delete, func(a, b int) bool {
		return plan.Delete[a].LastServed.Before(plan.Delete[b].LastServed)
	})
	plan.BytesAfter = plan.BytesBefore - plan.BytesFreed
	plan.ImagesAfter = plan.ImagesBefore - len(plan.Delete)
	return plan
}

// ParseKeepRef reads REPO:TAG or REPO@DIGEST (a repository of this cache,
// without a registry host).
func ParseKeepRef(s string) (KeepRef, bool) {
	if i := strings.LastIndex(s, "@"); i > 0 {
		if sha256Ref.MatchString(s[i+1:]) {
			return KeepRef{Repo: s[:i], Digest: s[i+1:]}, true
		}
		return KeepRef{}, false
	}
	i := strings.LastIndex(s, ":")
	if i <= 0 || strings.Contains(s[i:], "/") {
		return KeepRef{Repo: s, Tag: "latest"}, s != ""
	}
	return KeepRef{Repo: s[:i], Tag: s[i+1:]}, true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
