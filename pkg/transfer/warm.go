package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"
)

// WarmOptions tune WarmThroughCache.
type WarmOptions struct {
	// Platforms picks the images of an index; empty means all of them.
	Platforms []v1.Platform
	// DataDir is the cache's storage on this host: what it holds is skipped,
	// and the warm waits until what it fetched is stored. Optional.
	DataDir string
	// Jobs is how many blobs are fetched at once.
	Jobs int
	// StoreWait bounds the wait for the cache to store what it fetched.
	StoreWait time.Duration
	// Front says the cache runs bkcache's front: it fetches a blob once for
	// all repositories and requests and stores it itself, so every blob is
	// requested at once (Jobs at a time) with no wait for a background store.
	Front    bool
	Progress io.Writer
	// Meter, when set, follows the bytes per image for a progress display.
	Meter *Meter
}

// WarmReport sums up a warm.
type WarmReport struct {
	Mode         string        `json:"mode"`
	Images       int           `json:"images"`
	Manifests    int           `json:"manifests"`
	Blobs        int           `json:"blobs"`
	BlobsCached  int           `json:"blobsCached"`
	BytesFetched int64         `json:"bytesFetched"`
	BytesCached  int64         `json:"bytesCached"`
	Upstream     *Report       `json:"upstream,omitempty"`
	Failed       []ImageResult `json:"failed,omitempty"`
	// Outage is the cache's word that its upstream cannot be reached, when
	// that is why images failed (each was asked once, not retried).
	Outage  string  `json:"outage,omitempty"`
	Seconds float64 `json:"seconds"`
	// Warmed counts the images whose every blob the cache now holds.
	Warmed int `json:"warmed"`
}

// blob is one blob of one repository, as the cache stores it.
type blob struct {
	repo name.Repository
	desc v1.Descriptor
}

// WarmThroughCache makes the cache fetch every manifest, selected index child
// and blob of each image, as a node's pull would, so nodes later find them
// stored. refs name the cache (HOST:PORT/repo:tag). A blob is never requested
// twice at once, and blobs the cache's storage holds are skipped.
func WarmThroughCache(ctx context.Context, entries []Entry, opts WarmOptions) (WarmReport, error) {
	start := time.Now()
	opts.complete()
	w := &warmRun{opts: opts, entries: entries, report: WarmReport{Mode: "proxy"},
		// An outage answer of the cache fails its request at once (FailFast):
		// retries cannot help before the upstream is back.
		ropts:   []remote.Option{remote.WithContext(ctx), remote.WithTransport(FailFast(http.DefaultTransport)), remote.WithRetryBackoff(defaultBackoff())},
		waiting: map[string][]int{}, left: map[int]int{}, broken: map[int]bool{}}
	blobs := w.resolveAll(ctx)
	if err := ctx.Err(); err != nil {
		return w.report, err
	}
	order, byDigest := w.uncached(ctx, blobs)
	w.fetchAll(ctx, order, byDigest)
	if err := ctx.Err(); err != nil {
		return w.report, err
	}

	// registry:2 stores a cold blob in the background after serving it.
	deadline := time.Now().Add(opts.StoreWait)
	for _, b := range w.fetched {
		if !waitLinked(ctx, opts.DataDir, b, time.Until(deadline)) && ctx.Err() != nil {
			return w.report, ctx.Err()
		}
	}
	w.report.Seconds = time.Since(start).Seconds()
	if len(w.report.Failed) > 0 && w.report.Outage != "" {
		return w.report, outageSummary(w.report.Outage, len(w.report.Failed), "images or blobs")
	}
	if len(w.report.Failed) > 0 {
		return w.report, fmt.Errorf("%d images or blobs failed to warm; run the same command again to retry", len(w.report.Failed))
	}
	return w.report, nil
}

// complete fills the defaults: 8 jobs; a store wait of 5 minutes for
// registry:2 alone, 30 s for the front (it links a blob as soon as it is
// verified: the wait only covers the last few, still being written when their
// GET ended); no progress output.
func (o *WarmOptions) complete() {
	if o.Jobs <= 0 {
		o.Jobs = 8
	}
	if o.StoreWait == 0 {
		o.StoreWait = 5 * time.Minute
		if o.Front {
			o.StoreWait = 30 * time.Second
		}
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// warmRun is one warm: the report and, for progress, which images wait on
// each blob and how many blobs each still waits on.
type warmRun struct {
	opts    WarmOptions
	entries []Entry
	ropts   []remote.Option

	mu      sync.Mutex // guards what follows while blobs are fetched
	report  WarmReport
	waiting map[string][]int // repo@digest -> indexes of the entries needing it
	left    map[int]int      // entry index -> blobs it still waits on
	broken  map[int]bool     // entry index -> a blob of it failed
	fetched []blob
}

// resolveAll reads every entry's manifests and lists its blobs, each
// repository's blob once.
func (w *warmRun) resolveAll(ctx context.Context) []blob {
	var blobs []blob
	seen := map[string]bool{}
	for i, e := range w.entries {
		imgs, manifests, err := resolve(e.Ref, w.opts.Platforms, w.ropts)
		w.report.Manifests += manifests
		if ctx.Err() != nil {
			return nil // interrupted: nothing more to report
		}
		if err != nil {
			w.noteOutage(err)
			res := ImageResult{Line: e.Line, Source: e.Ref.String(), Error: err.Error()}
			if IsNotFound(err) {
				res.NotFound = true
				res.Error = "not found upstream: check the name and tag (" + err.Error() + ")"
			}
			w.report.Failed = append(w.report.Failed, res)
			w.opts.Meter.Finish(e.Ref.String(), err)
			fmt.Fprintf(w.opts.Progress, "FAILED  %s: %s\n", e.Ref, res.Error)
			continue
		}
		w.report.Images++
		for _, img := range imgs {
			descs, err := blobsOfImage(img)
			if err != nil {
				w.report.Failed = append(w.report.Failed, ImageResult{Line: e.Line, Source: e.Ref.String(), Error: err.Error()})
				continue
			}
			w.opts.Meter.Plan(e.Ref.String(), descs)
			for _, d := range descs {
				key := e.Ref.Context().RepositoryStr() + "@" + d.Digest.String()
				w.waiting[key] = append(w.waiting[key], i)
				w.left[i]++
				if seen[key] {
					continue
				}
				seen[key] = true
				blobs = append(blobs, blob{repo: e.Ref.Context(), desc: d})
			}
		}
	}
	return blobs
}

// noteOutage keeps the first outage message of the cache; w.mu held while
// blobs are fetched.
func (w *warmRun) noteOutage(err error) {
	if w.report.Outage == "" {
		w.report.Outage = outageText(err)
	}
}

// done marks a blob finished (or failed, err) and prints each image it
// completes; an image with a failed blob, or one cut off by an interrupt, is
// not called warmed. w.mu held while blobs are fetched.
func (w *warmRun) done(ctx context.Context, b blob, err error) {
	for _, i := range w.waiting[b.repo.RepositoryStr()+"@"+b.desc.Digest.String()] {
		if err != nil {
			w.broken[i] = true
		}
		if w.left[i]--; w.left[i] == 0 && !w.broken[i] && ctx.Err() == nil {
			w.opts.Meter.Finish(w.entries[i].Ref.String(), nil)
			fmt.Fprintf(w.opts.Progress, "warmed  %s\n", w.entries[i].Ref)
			w.report.Warmed++
		}
	}
}

// uncached counts the blobs, skips those the cache's storage holds, and
// groups the rest by digest, in first-seen order.
func (w *warmRun) uncached(ctx context.Context, blobs []blob) (order []v1.Hash, byDigest map[v1.Hash][]blob) {
	byDigest = map[v1.Hash][]blob{}
	for _, b := range blobs {
		w.report.Blobs++
		if linked(w.opts.DataDir, b.repo.RepositoryStr(), b.desc.Digest) {
			w.report.BlobsCached++
			w.report.BytesCached += b.desc.Size
			w.opts.Meter.Complete(b.desc.Digest)
			w.done(ctx, b, nil)
			continue
		}
		if _, ok := byDigest[b.desc.Digest]; !ok {
			order = append(order, b.desc.Digest)
		}
		byDigest[b.desc.Digest] = append(byDigest[b.desc.Digest], b)
	}
	return order, byDigest
}

// fetchAll requests the blobs, Jobs digests at a time. One request per digest
// at a time, and (registry:2 alone) the next repository's request for that
// digest only once the cache has stored it: registry:2 2.8 marks a blob in
// flight until its background store ends, and serves a second request for it
// meanwhile straight from the upstream without storing it for the second
// repository (distribution registry/proxy/proxyblobstore.go). The front links
// it instead.
func (w *warmRun) fetchAll(ctx context.Context, order []v1.Hash, byDigest map[v1.Hash][]blob) {
	var g errgroup.Group
	g.SetLimit(w.opts.Jobs)
	for _, d := range order {
		repos := byDigest[d]
		g.Go(func() error {
			for _, b := range repos {
				w.fetch(ctx, b)
			}
			return nil
		})
	}
	g.Wait() //nolint:errcheck // each fetch records its own error in the report
}

// fetch requests one blob of one repository through the cache.
func (w *warmRun) fetch(ctx context.Context, b blob) {
	// A request that lands while registry:2 still holds the blob in flight is
	// served without being stored: ask again.
	var err error
	for attempt := 1; ; attempt++ {
		if err = ctx.Err(); err != nil {
			break // interrupted: not a failure to report
		}
		var n int64
		n, err = fetchBlob(b.repo.Digest(b.desc.Digest.String()), w.ropts, w.opts.Meter.Writer(b.desc.Digest))
		w.mu.Lock()
		w.report.BytesFetched += n
		if err != nil && ctx.Err() == nil {
			w.noteOutage(err)
			w.report.Failed = append(w.report.Failed, ImageResult{Source: b.repo.String() + "@" + b.desc.Digest.String(), Error: err.Error()})
		}
		w.mu.Unlock()
		// The front stores and links by itself: one request is enough.
		if err != nil || w.opts.Front || waitLinked(ctx, w.opts.DataDir, b, storeWaitFor(b.desc.Size)) || attempt == 3 || ctx.Err() != nil {
			break
		}
	}
	w.mu.Lock()
	if err == nil {
		w.fetched = append(w.fetched, b)
	}
	w.done(ctx, b, err)
	w.mu.Unlock()
}

// IsNotFound says whether a registry answered that an image (its manifest or
// repository) does not exist: a typo in the list, not a broken link.
func IsNotFound(err error) bool {
	var te *transport.Error
	if !errors.As(err, &te) {
		return false
	}
	for _, d := range te.Errors {
		if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
			return true
		}
	}
	return te.StatusCode == http.StatusNotFound
}

// storeWaitFor bounds the wait for registry:2 to store a blob it served: it
// fetches it from the upstream a second time, so allow for a slow link.
func storeWaitFor(size int64) time.Duration {
	return 10*time.Second + time.Duration(size/(1<<20))*time.Second
}

// waitLinked waits up to wait for the cache to have stored b for its
// repository; without the cache's data dir there is nothing to watch.
func waitLinked(ctx context.Context, dataDir string, b blob, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for dataDir != "" && !linked(dataDir, b.repo.RepositoryStr(), b.desc.Digest) {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
	return true
}

// resolve fetches an image's manifest (and, for an index, the manifests of
// the children matching platforms) and returns the images nodes would pull.
func resolve(ref name.Reference, platforms []v1.Platform, ropts []remote.Option) ([]v1.Image, int, error) {
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		return nil, 0, err
	}
	if !desc.MediaType.IsIndex() {
		img, err := desc.Image()
		if err != nil {
			return nil, 1, err
		}
		return []v1.Image{img}, 1, nil
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, 1, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, 1, err
	}
	var imgs []v1.Image
	manifests := 1
	for _, child := range im.Manifests {
		if !matchesAny(child.Platform, platforms) {
			continue
		}
		img, err := remote.Image(ref.Context().Digest(child.Digest.String()), ropts...)
		if err != nil {
			return nil, manifests, err
		}
		if _, err := img.Manifest(); err != nil {
			return nil, manifests, err
		}
		manifests++
		imgs = append(imgs, img)
	}
	if len(imgs) == 0 {
		return nil, manifests, fmt.Errorf("index has no image for %s (--platform)", platformList(platforms))
	}
	return imgs, manifests, nil
}

// fetchBlob reads a blob to its end (go-containerregistry checks its digest)
// and copies it to w, a meter.
func fetchBlob(ref name.Digest, ropts []remote.Option, w io.Writer) (int64, error) {
	l, err := remote.Layer(ref, ropts...)
	if err != nil {
		return 0, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return io.Copy(w, rc)
}

// linked says whether the cache's filesystem storage holds the blob for repo.
func linked(dataDir, repo string, d v1.Hash) bool {
	if dataDir == "" {
		return false
	}
	root := filepath.Join(dataDir, "docker/registry/v2")
	link := filepath.Join(root, "repositories", filepath.FromSlash(repo), "_layers", d.Algorithm, d.Hex, "link")
	if _, err := os.Stat(link); err != nil {
		return false
	}
	_, err := os.Stat(filepath.Join(root, "blobs", d.Algorithm, d.Hex[:2], d.Hex, "data"))
	return err == nil
}
