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
	"golang.org/x/sync/errgroup"
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
	// NotFound says the registry does not have the image (a typo in the
	// name or tag): retrying cannot help.
	NotFound bool `json:"notFound,omitempty"`
	// Unchanged says the target already had the image: nothing was written.
	Unchanged bool `json:"unchanged,omitempty"`
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
	if err := opts.complete(); err != nil {
		return Report{}, err
	}
	if opts.CacheDir == "" {
		d, err := os.MkdirTemp("", "bkcache-blobs-")
		if err != nil {
			return Report{}, err
		}
		defer os.RemoveAll(d)
		opts.CacheDir = d
	}
	cache, err := NewBlobCache(opts.CacheDir, opts.Transport)
	if err != nil {
		return Report{}, err
	}
	cache.Meter = opts.Meter
	pusherOpts := append(commonOptions(ctx, opts.Jobs, *opts.Backoff),
		remote.WithTransport(opts.TargetTransport), remote.WithAuthFromKeychain(opts.Keychain))
	pusher, err := remote.NewPusher(pusherOpts...)
	if err != nil {
		return Report{}, err
	}
	c := &copier{opts: opts, cache: cache, pusher: pusher, target: pusherOpts, mounts: map[v1.Hash]name.Reference{},
		report: Report{Images: make([]ImageResult, len(entries)), DryRun: opts.DryRun}}

	// Resolve every image first, so the writes can be ordered by shared layers.
	jobs := make([]*job, len(entries))
	var g errgroup.Group
	g.SetLimit(opts.Jobs)
	for i := range entries {
		g.Go(func() error { jobs[i] = c.resolve(ctx, i, entries[i]); return nil })
	}
	g.Wait() //nolint:errcheck // a failed image carries its error in its result
	var pending []*job
	for _, j := range jobs {
		if j.res.Error != "" || opts.DryRun {
			c.finish(j)
			continue
		}
		pending = append(pending, j)
	}
	c.writeInRounds(ctx, pending)

	report := c.report
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

// complete checks the target and fills the defaults: 4 jobs, the Docker
// config's credentials, no progress output, http.DefaultTransport for both
// sides, the default backoff.
func (o *PushOptions) complete() error {
	if o.To == "" {
		return errors.New("no target registry: pass --to HOST[:PORT]")
	}
	o.Jobs, o.Keychain, o.Progress = transferDefaults(o.Jobs, o.Keychain, o.Progress)
	if o.Transport == nil {
		o.Transport = http.DefaultTransport
	}
	if o.TargetTransport == nil {
		o.TargetTransport = o.Transport
	}
	if o.Backoff == nil {
		b := defaultBackoff()
		o.Backoff = &b
	}
	return nil
}

// writeInRounds writes the resolved images in rounds: an image waits for the
// next round when a layer it needs is being uploaded by another image of this
// round; by then the layer is at the target and is mounted into its
// repository instead of sent again.
func (c *copier) writeInRounds(ctx context.Context, pending []*job) {
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
		var g errgroup.Group
		g.SetLimit(c.opts.Jobs)
		for _, j := range round {
			g.Go(func() error { c.write(ctx, j); c.finish(j); return nil })
		}
		g.Wait() //nolint:errcheck // a failed image carries its error in its result
		pending = later
	}
	for _, j := range pending {
		j.res.Error = ctx.Err().Error()
		c.finish(j)
	}
}

// finish records an image's result and prints its line.
func (c *copier) finish(j *job) {
	var failed error
	if j.res.Error != "" {
		failed = errors.New(j.res.Error)
	}
	c.opts.Meter.Finish(j.res.Source, failed)
	c.printMu.Lock()
	defer c.printMu.Unlock()
	c.report.Images[j.index] = j.res
	switch {
	case j.res.Error != "":
		fmt.Fprintf(c.opts.Progress, "FAILED  %s: %s\n", j.res.Source, j.res.Error)
	case c.opts.DryRun:
		fmt.Fprintf(c.opts.Progress, "would copy %s -> %s (%s)\n", j.res.Source, j.res.Target, j.res.Digest)
	case j.res.Unchanged:
		fmt.Fprintf(c.opts.Progress, "present %s -> %s (%s): already at the target\n", j.res.Source, j.res.Target, j.res.Digest)
	default:
		fmt.Fprintf(c.opts.Progress, "copied  %s -> %s (%s)\n", j.res.Source, j.res.Target, j.res.Digest)
	}
}

// defaultBackoff paces retries: 0.5 s doubling, 6 tries (about 30 s in all).
func defaultBackoff() remote.Backoff {
	return remote.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 6}
}

// transferDefaults are the defaults Push, Load and Save share: 4 jobs, the
// Docker config's credentials, no progress output.
func transferDefaults(jobs int, keychain authn.Keychain, progress io.Writer) (int, authn.Keychain, io.Writer) {
	if jobs <= 0 {
		jobs = 4
	}
	if keychain == nil {
		keychain = authn.DefaultKeychain
	}
	if progress == nil {
		progress = io.Discard
	}
	return jobs, keychain, progress
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
	// target reaches the target registry, to ask what it already holds.
	target []remote.Option

	mu     sync.Mutex
	mounts map[v1.Hash]name.Reference // blob -> a target repository that has it

	printMu sync.Mutex // guards report.Images and the progress lines
	report  Report
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
	// A target that holds the same digest under this tag needs no write; say
	// so instead of "copied" (a HEAD that fails just means: write).
	if d, err := remote.Head(j.dst, append(c.target, remote.WithContext(ctx))...); err == nil && d.Digest.String() == j.res.Digest {
		j.res.Unchanged = true
		return
	}
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
