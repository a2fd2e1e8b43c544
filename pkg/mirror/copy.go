package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// PushOptions tune Push. The zero value copies whole indexes, 4 images at a
// time, with the Docker config's credentials.
type PushOptions struct {
	// To is the target registry, HOST[:PORT].
	To string
	// Prefix is put before each repository path at the target, e.g. "mirror/".
	Prefix string
	// From replaces each image's registry as the source, e.g. the cache's HOST:PORT.
	From string
	// Platforms limits indexes to these platforms; empty copies whole indexes.
	Platforms []v1.Platform
	// Jobs is how many images are copied at once (blobs within one image too).
	Jobs int
	// Insecure speaks plain HTTP to the target; SourceInsecure to the source.
	Insecure, SourceInsecure bool
	// DryRun resolves every image and reports what would be copied, copying nothing.
	DryRun bool
	// Keychain gives credentials for source and target; default authn.DefaultKeychain.
	Keychain authn.Keychain
	// SourceAuth, when set, is used for the source instead of the keychain.
	SourceAuth authn.Authenticator
	// CacheDir holds blobs fetched during the run, so each crosses the source link once.
	CacheDir string
	// Transport is the base transport for both sides; default http.DefaultTransport.
	Transport http.RoundTripper
	// Progress gets one line per image; nil discards.
	Progress io.Writer
	// Backoff paces retries of 429, 5xx, timeouts and resets; default 0.5 s doubling, 6 tries.
	Backoff *remote.Backoff
}

// ImageResult is what happened to one image.
type ImageResult struct {
	Line     int    `json:"line,omitempty"`
	Source   string `json:"source"`
	Target   string `json:"target"`
	Digest   string `json:"digest,omitempty"`
	Kind     string `json:"kind,omitempty"` // image or index
	Children int    `json:"children,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Report sums up a Push.
type Report struct {
	Images       []ImageResult `json:"images"`
	Failed       int           `json:"failed"`
	BlobsFetched int64         `json:"blobsFetched"`
	BytesFetched int64         `json:"bytesFetched"`
	BytesReused  int64         `json:"bytesReused"`
	Seconds      float64       `json:"seconds"`
	DryRun       bool          `json:"dryRun,omitempty"`
}

// Push copies each image to the target registry, keeping its repository path
// (after Prefix) and tag or digest, so digests stay the same. Images are copied
// concurrently; blobs the target has are skipped, blobs another repository at
// the target already has are mounted, and each blob is fetched from the source
// once. A failed image does not stop the others: its error is in the report and
// Push returns an error naming how many failed. Running it again copies only
// what is missing.
func Push(ctx context.Context, entries []Entry, opts PushOptions) (Report, error) {
	start := time.Now()
	if opts.To == "" {
		return Report{}, errors.New("no target registry: pass --to HOST[:PORT]")
	}
	if opts.Jobs <= 0 {
		opts.Jobs = 4
	}
	if opts.Keychain == nil {
		opts.Keychain = authn.DefaultKeychain
	}
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	base := opts.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cacheDir := opts.CacheDir
	if cacheDir == "" {
		d, err := os.MkdirTemp("", "bkcache-blobs-")
		if err != nil {
			return Report{}, err
		}
		defer os.RemoveAll(d)
		cacheDir = d
	}
	cache, err := NewBlobCache(cacheDir, base)
	if err != nil {
		return Report{}, err
	}
	if opts.Backoff == nil {
		opts.Backoff = &remote.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 6}
	}
	pusherOpts := append(commonOptions(ctx, opts.Jobs, *opts.Backoff), remote.WithTransport(base), remote.WithAuthFromKeychain(opts.Keychain))
	pusher, err := remote.NewPusher(pusherOpts...)
	if err != nil {
		return Report{}, err
	}
	c := &copier{opts: opts, cache: cache, pusher: pusher, pusherOpts: pusherOpts, mounts: map[v1.Hash]name.Reference{}}

	report := Report{Images: make([]ImageResult, len(entries)), DryRun: opts.DryRun}
	sem := make(chan struct{}, opts.Jobs)
	var wg sync.WaitGroup
	var printMu sync.Mutex
	for i, e := range entries {
		wg.Add(1)
		go func(i int, e Entry) {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				report.Images[i] = ImageResult{Line: e.Line, Source: e.Ref.String(), Error: ctx.Err().Error()}
				return
			}
			defer func() { <-sem }()
			res := c.copyOne(ctx, e)
			report.Images[i] = res
			printMu.Lock()
			defer printMu.Unlock()
			switch {
			case res.Error != "":
				fmt.Fprintf(progress, "FAILED  %s: %s\n", res.Source, res.Error)
			case opts.DryRun:
				fmt.Fprintf(progress, "would copy %s -> %s (%s)\n", res.Source, res.Target, res.Digest)
			default:
				fmt.Fprintf(progress, "copied  %s -> %s (%s)\n", res.Source, res.Target, res.Digest)
			}
		}(i, e)
	}
	wg.Wait()
	for _, r := range report.Images {
		if r.Error != "" {
			report.Failed++
		}
	}
	report.BlobsFetched, report.BytesFetched, report.BytesReused = cache.FetchedBlobs(), cache.FetchedBytes(), cache.ServedBytes()
	report.Seconds = time.Since(start).Seconds()
	if report.Failed > 0 {
		return report, fmt.Errorf("%d of %d images failed; run the same command again to retry them (what was copied is kept)", report.Failed, len(entries))
	}
	return report, nil
}

// commonOptions retry what a busy or flaky registry answers.
func commonOptions(ctx context.Context, jobs int, backoff remote.Backoff) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithJobs(jobs),
		remote.WithRetryBackoff(backoff),
		remote.WithRetryStatusCodes(http.StatusRequestTimeout, http.StatusTooManyRequests, http.StatusInternalServerError,
			http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout),
		remote.WithUserAgent("bkcache"),
	}
}

type copier struct {
	opts       PushOptions
	cache      *BlobCache
	pusher     *remote.Pusher
	pusherOpts []remote.Option

	mu     sync.Mutex
	mounts map[v1.Hash]name.Reference // blob -> a target repository that has it
}

// SourceRef is where an entry is read from: its own registry, or From.
func SourceRef(ref name.Reference, from string, insecure bool) (name.Reference, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	if from == "" {
		if !insecure {
			return ref, nil
		}
		return name.ParseReference(ref.Name(), opts...)
	}
	return name.ParseReference(from+"/"+ref.Context().RepositoryStr()+refSuffix(ref), opts...)
}

// TargetRef is where an entry is written.
func TargetRef(ref name.Reference, to, prefix string, insecure bool) (name.Reference, error) {
	var opts []name.Option
	if insecure {
		opts = append(opts, name.Insecure)
	}
	repo := strings.Trim(prefix, "/")
	if repo != "" {
		repo += "/"
	}
	return name.ParseReference(to+"/"+repo+ref.Context().RepositoryStr()+refSuffix(ref), opts...)
}

func refSuffix(ref name.Reference) string {
	if d, ok := ref.(name.Digest); ok {
		return "@" + d.DigestStr()
	}
	return ":" + ref.Identifier()
}

func (c *copier) sourceOptions(ctx context.Context) []remote.Option {
	opts := append(commonOptions(ctx, c.opts.Jobs, *c.opts.Backoff), remote.WithTransport(c.cache))
	if c.opts.SourceAuth != nil {
		return append(opts, remote.WithAuth(c.opts.SourceAuth))
	}
	return append(opts, remote.WithAuthFromKeychain(c.opts.Keychain))
}

func (c *copier) copyOne(ctx context.Context, e Entry) ImageResult {
	res := ImageResult{Line: e.Line, Source: e.Ref.String()}
	src, err := SourceRef(e.Ref, c.opts.From, c.opts.SourceInsecure)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	dst, err := TargetRef(e.Ref, c.opts.To, c.opts.Prefix, c.opts.Insecure)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.Target = dst.String()
	desc, err := remote.Get(src, c.sourceOptions(ctx)...)
	if err != nil {
		res.Error = fmt.Sprintf("read %s: %v", src, err)
		return res
	}
	res.Digest = desc.Digest.String()
	if desc.MediaType.IsIndex() {
		res.Kind = "index"
		idx, err := desc.ImageIndex()
		if err != nil {
			res.Error = err.Error()
			return res
		}
		idx, n, err := filterIndex(idx, c.opts.Platforms)
		if err != nil {
			res.Error = fmt.Sprintf("%s: %v", src, err)
			return res
		}
		res.Children = n
		d, err := idx.Digest()
		if err != nil {
			res.Error = err.Error()
			return res
		}
		res.Digest = d.String()
		if c.opts.DryRun {
			return res
		}
		if err := c.pusher.Push(ctx, dst, idx); err != nil {
			res.Error = fmt.Sprintf("write %s: %v", dst, err)
		}
		return res
	}
	res.Kind = "image"
	img, err := desc.Image()
	if err != nil {
		res.Error = err.Error()
		return res
	}
	if c.opts.DryRun {
		return res
	}
	if err := c.pusher.Push(ctx, dst, c.mounting(img)); err != nil {
		res.Error = fmt.Sprintf("write %s: %v", dst, err)
		return res
	}
	c.remember(img, dst)
	return res
}

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

// mounting wraps img so layers another target repository already holds are
// mounted from there instead of uploaded again.
func (c *copier) mounting(img v1.Image) v1.Image {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.mounts) == 0 {
		return img
	}
	m := make(map[v1.Hash]name.Reference, len(c.mounts))
	for k, v := range c.mounts {
		m[k] = v
	}
	return &mountingImage{Image: img, mounts: m}
}

func (c *copier) remember(img v1.Image, dst name.Reference) {
	layers, err := img.Layers()
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range layers {
		if d, err := l.Digest(); err == nil {
			if _, ok := c.mounts[d]; !ok {
				c.mounts[d] = dst.Context().Digest(d.String())
			}
		}
	}
}

type mountingImage struct {
	v1.Image
	mounts map[v1.Hash]name.Reference
}

func (m *mountingImage) Layers() ([]v1.Layer, error) {
	ls, err := m.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = m.wrap(l)
	}
	return out, nil
}

func (m *mountingImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := m.Image.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	return m.wrap(l), nil
}

func (m *mountingImage) wrap(l v1.Layer) v1.Layer {
	d, err := l.Digest()
	if err != nil {
		return l
	}
	if ref, ok := m.mounts[d]; ok {
		return &remote.MountableLayer{Layer: l, Reference: ref}
	}
	return l
}
