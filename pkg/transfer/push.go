package transfer

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
	// TargetTransport, when set, replaces Transport for the target only (a
	// cache's storage writer, reached through its unix socket).
	TargetTransport http.RoundTripper
	// Progress gets one line per image; nil discards.
	Progress io.Writer
	// Meter, when set, follows the bytes per image for a progress display.
	Meter *Meter
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
	// Outage: the cache this image was read from said its upstream cannot
	// be reached (the part of Error that says since when).
	Outage string `json:"outage,omitempty"`
}

// Report sums up a Push.
type Report struct {
	Images       []ImageResult `json:"images"`
	Failed       int           `json:"failed"`
	BlobsFetched int64         `json:"blobsFetched"`
	BytesFetched int64         `json:"bytesFetched"`
	BytesReused  int64         `json:"bytesReused"`
	// Resumes counts broken source reads continued with Range, not fetched again.
	Resumes int64   `json:"resumes,omitempty"`
	Seconds float64 `json:"seconds"`
	DryRun  bool    `json:"dryRun,omitempty"`
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
	progress := withDefaults(&opts.Jobs, &opts.Keychain, opts.Progress)
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
	cache.Meter = opts.Meter
	if opts.Backoff == nil {
		b := defaultBackoff()
		opts.Backoff = &b
	}
	target := base
	if opts.TargetTransport != nil {
		target = opts.TargetTransport
	}
	pusherOpts := append(commonOptions(ctx, opts.Jobs, *opts.Backoff), remote.WithTransport(target), remote.WithAuthFromKeychain(opts.Keychain))
	pusher, err := remote.NewPusher(pusherOpts...)
	if err != nil {
		return Report{}, err
	}
	c := &copier{opts: opts, cache: cache, pusher: pusher, mounts: map[v1.Hash]name.Reference{}}

	report := Report{Images: make([]ImageResult, len(entries)), DryRun: opts.DryRun}
	var printMu sync.Mutex
	finish := func(j *job) {
		report.Images[j.index] = j.res
		var failed error
		if j.res.Error != "" {
			failed = errors.New(j.res.Error)
		}
		opts.Meter.Finish(j.res.Source, failed)
		printMu.Lock()
		defer printMu.Unlock()
		switch {
		case j.res.Error != "":
			fmt.Fprintf(progress, "FAILED  %s: %s\n", j.res.Source, j.res.Error)
		case opts.DryRun:
			fmt.Fprintf(progress, "would copy %s -> %s (%s)\n", j.res.Source, j.res.Target, j.res.Digest)
		default:
			fmt.Fprintf(progress, "copied  %s -> %s (%s)\n", j.res.Source, j.res.Target, j.res.Digest)
		}
	}

	// Resolve every image first, so the writes can be ordered by shared layers.
	jobs := make([]*job, len(entries))
	parallel(opts.Jobs, len(entries), func(i int) {
		jobs[i] = c.resolve(ctx, i, entries[i])
	})
	var pending []*job
	for _, j := range jobs {
		if j.res.Error != "" || opts.DryRun {
			finish(j)
			continue
		}
		pending = append(pending, j)
	}
	// Write in rounds: an image waits for the next round when a layer it needs
	// is being uploaded by another image of this round; by then the layer is at
	// the target and is mounted into its repository instead of sent again.
	for len(pending) > 0 && ctx.Err() == nil {
		var round, later []*job
		claimed := map[v1.Hash]bool{}
		for _, j := range pending {
			if c.conflicts(j, claimed) {
				later = append(later, j)
				continue
			}
			for _, l := range j.layers {
				claimed[l] = true
			}
			round = append(round, j)
		}
		parallel(opts.Jobs, len(round), func(i int) {
			c.write(ctx, round[i])
			finish(round[i])
		})
		pending = later
	}
	for _, j := range pending {
		j.res.Error = ctx.Err().Error()
		finish(j)
	}
	outage := ""
	for _, r := range report.Images {
		if r.Error != "" {
			report.Failed++
		}
		if r.Outage != "" && outage == "" {
			outage = r.Outage
		}
	}
	report.BlobsFetched, report.BytesFetched, report.BytesReused = cache.FetchedBlobs(), cache.FetchedBytes(), cache.ServedBytes()
	report.Resumes = cache.Resumes()
	report.Seconds = time.Since(start).Seconds()
	if report.Failed > 0 && outage != "" {
		return report, outageSummary(outage, report.Failed, fmt.Sprintf("of %d images", len(entries)))
	}
	if report.Failed > 0 {
		return report, fmt.Errorf("%d of %d images failed; run the same command again to retry them (what was copied is kept)", report.Failed, len(entries))
	}
	return report, nil
}

// defaultBackoff paces retries: 0.5 s doubling, 6 tries (about 30 s in all).
func defaultBackoff() remote.Backoff {
	return remote.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 6}
}

// withDefaults fills the options Push and Load share and returns the progress writer.
func withDefaults(jobs *int, keychain *authn.Keychain, progress io.Writer) io.Writer {
	if *jobs <= 0 {
		*jobs = 4
	}
	if *keychain == nil {
		*keychain = authn.DefaultKeychain
	}
	if progress == nil {
		return io.Discard
	}
	return progress
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
	opts   PushOptions
	cache  *BlobCache
	pusher *remote.Pusher

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
	// A cache's outage answer fails the request at once (FailFast).
	opts := append(commonOptions(ctx, c.opts.Jobs, *c.opts.Backoff), remote.WithTransport(FailFast(c.cache)))
	if c.opts.SourceAuth != nil {
		return append(opts, remote.WithAuth(c.opts.SourceAuth))
	}
	return append(opts, remote.WithAuthFromKeychain(c.opts.Keychain))
}

// job is one image of a push: resolved first, written in a later round.
type job struct {
	index  int
	res    ImageResult
	dst    name.Reference
	img    v1.Image      // set for an image
	idx    v1.ImageIndex // set for an index
	layers []v1.Hash     // every layer it writes, for ordering and mounts
}

// parallel runs f(0..n-1) with at most jobs at once.
func parallel(jobs, n int, f func(i int)) {
	sem := make(chan struct{}, jobs)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			f(i)
		}(i)
	}
	wg.Wait()
}

// resolve reads an entry's manifest (and its index's children) from the source.
func (c *copier) resolve(ctx context.Context, i int, e Entry) *job {
	j := &job{index: i, res: ImageResult{Line: e.Line, Source: e.Ref.String()}}
	fail := func(err error) *job { j.res.Error, j.res.Outage = err.Error(), outageText(err); return j }
	src, err := SourceRef(e.Ref, c.opts.From, c.opts.SourceInsecure)
	if err != nil {
		return fail(err)
	}
	if j.dst, err = TargetRef(e.Ref, c.opts.To, c.opts.Prefix, c.opts.Insecure); err != nil {
		return fail(err)
	}
	j.res.Target = j.dst.String()
	desc, err := remote.Get(src, c.sourceOptions(ctx)...)
	if err != nil {
		return fail(fmt.Errorf("read %s: %w", src, err))
	}
	j.res.Digest = desc.Digest.String()
	if !desc.MediaType.IsIndex() {
		j.res.Kind = "image"
		if j.img, err = desc.Image(); err != nil {
			return fail(err)
		}
		j.layers, err = layerDigests(j.img)
		if err != nil {
			return fail(fmt.Errorf("read %s: %w", src, err))
		}
		if blobs, err := blobsOfImage(j.img); err == nil {
			c.opts.Meter.Plan(j.res.Source, blobs)
		}
		return j
	}
	j.res.Kind = "index"
	idx, err := desc.ImageIndex()
	if err != nil {
		return fail(err)
	}
	if j.idx, j.res.Children, err = filterIndex(idx, c.opts.Platforms); err != nil {
		return fail(fmt.Errorf("%s: %w", src, err))
	}
	d, err := j.idx.Digest()
	if err != nil {
		return fail(err)
	}
	j.res.Digest = d.String()
	im, err := j.idx.IndexManifest()
	if err != nil {
		return fail(err)
	}
	for _, child := range im.Manifests {
		if child.MediaType.IsImage() {
			img, err := j.idx.Image(child.Digest)
			if err != nil {
				return fail(fmt.Errorf("read %s@%s: %w", src, child.Digest, err))
			}
			ls, err := layerDigests(img)
			if err != nil {
				return fail(fmt.Errorf("read %s@%s: %w", src, child.Digest, err))
			}
			j.layers = append(j.layers, ls...)
			if blobs, err := blobsOfImage(img); err == nil {
				c.opts.Meter.Plan(j.res.Source, blobs)
			}
		}
	}
	return j
}

func layerDigests(img v1.Image) ([]v1.Hash, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Hash, 0, len(m.Layers))
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out, nil
}

// conflicts says whether j needs a layer another image of this round uploads
// and the target does not hold yet.
func (c *copier) conflicts(j *job, claimed map[v1.Hash]bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range j.layers {
		if _, there := c.mounts[l]; claimed[l] && !there {
			return true
		}
	}
	return false
}

func (c *copier) write(ctx context.Context, j *job) {
	var err error
	if j.idx != nil {
		err = c.pusher.Push(ctx, j.dst, &mountingIndex{inner: j.idx, mounts: c.snapshotMounts()})
	} else {
		err = c.pusher.Push(ctx, j.dst, c.mounting(j.img))
	}
	if err != nil {
		j.res.Error, j.res.Outage = fmt.Sprintf("write %s: %v", j.dst, err), outageText(err)
		return
	}
	c.remember(j.layers, j.dst)
}
