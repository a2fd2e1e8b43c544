package cache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/client"

	"github.com/bkcache/bkcache/pkg/transfer"
)

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// Platform picks the image of a multi-platform index; default linux/amd64.
	Platform *v1.Platform
	// StoreWait bounds the wait for the cache to store what the cold pass fetched.
	StoreWait time.Duration
	Progress  io.Writer
}

// complete fills the defaults: linux/amd64, a 2-minute store wait, no
// progress output.
func (o *VerifyOptions) complete() {
	if o.Platform == nil {
		o.Platform = &v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	if o.StoreWait == 0 {
		o.StoreWait = 2 * time.Minute
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
}

// Pass is one fetch of an image's manifest, config and layers through the cache.
type Pass struct {
	Seconds float64 `json:"seconds"`
	Bytes   int64   `json:"bytes"`
	// UpstreamBlobFetches counts blobs the cache fetched from its upstream during the pass.
	UpstreamBlobFetches int `json:"upstreamBlobFetches"`
}

// VerifyResult is the proof that a cache serves an image warm.
type VerifyResult struct {
	Image           string `json:"image"`
	Via             string `json:"via"`
	Platform        string `json:"platform"`
	Blobs           int    `json:"blobs"`
	Bytes           int64  `json:"bytes"`
	CachedBefore    int    `json:"cachedBefore"`
	Cold            Pass   `json:"cold"`
	Warm            Pass   `json:"warm"`
	WarmFromCache   bool   `json:"warmFromCache"`
	CachedAfterCold int    `json:"cachedAfterCold"`
}

// Verify fetches an image through the cache twice, without the Docker daemon's
// image store in the way, and tells whether the second fetch asked the
// upstream for any blob: from the front's counters (blob fetches before and
// after each pass), or for registry:2 alone from its log.
func Verify(ctx context.Context, eng Engine, cacheName, image string, opts VerifyOptions) (VerifyResult, error) {
	opts.complete()
	progress, platform := opts.Progress, *opts.Platform
	cache, err := Lookup(ctx, eng, cacheName)
	if err != nil {
		return VerifyResult{}, err
	}
	if !cache.Running {
		return VerifyResult{}, fmt.Errorf("cache %s is not running; run \"docker bkcache up --name %s\"", cacheName, cacheName)
	}
	spec, dataDir := cache.Spec, cache.DataDir
	ref, err := CacheReference(spec, image)
	if err != nil {
		return VerifyResult{}, err
	}
	res := VerifyResult{Image: image, Via: ref.String(), Platform: platform.String()}
	// Docker's credentials for the cache (docker login ADDRESS) pass its --htpasswd.
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithPlatform(platform), remote.WithTransport(transfer.FailFast(insecureClient().Transport)),
		remote.WithAuthFromKeychain(authn.DefaultKeychain)}

	img, err := remote.Image(ref, ropts...)
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) && terr.StatusCode == http.StatusUnauthorized {
			return res, fmt.Errorf("fetch %s through cache %s: %w; the cache asks for its --htpasswd credentials: run \"docker login %s\" first", image, cacheName, err, ref.Context().RegistryStr())
		}
		return res, fmt.Errorf("fetch %s through cache %s: %w", image, cacheName, err)
	}
	digests, size, err := blobsOf(img)
	if err != nil {
		return res, fmt.Errorf("read manifest of %s: %w", image, err)
	}
	res.Blobs, res.Bytes = len(digests), size
	res.CachedBefore = countStored(dataDir, ref.Context().RepositoryStr(), digests)

	if spec.Layout == LayoutFront {
		return verifyFront(ctx, eng, spec, dataDir, ref, img, digests, res, opts.StoreWait, progress)
	}
	fmt.Fprintf(progress, "pass 1 (cold): %d blobs, %d already in the cache\n", len(digests), res.CachedBefore)
	since := time.Now()
	if res.Cold, err = fetchAll(ctx, img); err != nil {
		return res, fmt.Errorf("cold pass of %s: %w", image, err)
	}
	// registry:2 stores a cold blob in the background: let it finish, or the
	// warm pass would find it missing and go upstream again.
	deadline := time.Now().Add(opts.StoreWait)
	for dataDir != "" && countStored(dataDir, ref.Context().RepositoryStr(), digests) < len(digests) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	res.CachedAfterCold = countStored(dataDir, ref.Context().RepositoryStr(), digests)
	// registry:2 logs a stored blob just after linking it: wait for the cold
	// pass's lines, or they would be counted in the warm pass.
	want := len(digests) - res.CachedBefore
	for settle := time.Now().Add(10 * time.Second); ; {
		if res.Cold.UpstreamBlobFetches, err = upstreamFetches(ctx, eng, spec.ContainerName(), since, digests); err != nil {
			return res, err
		}
		if res.Cold.UpstreamBlobFetches >= want || time.Now().After(settle) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	fmt.Fprintf(progress, "pass 2 (warm)\n")
	since = time.Now()
	if res.Warm, err = fetchAll(ctx, img); err != nil {
		return res, fmt.Errorf("warm pass of %s: %w", image, err)
	}
	time.Sleep(500 * time.Millisecond) // a stray upstream fetch logs after the blob is stored
	if res.Warm.UpstreamBlobFetches, err = upstreamFetches(ctx, eng, spec.ContainerName(), since, digests); err != nil {
		return res, err
	}
	res.WarmFromCache = res.Warm.UpstreamBlobFetches == 0
	return res, nil
}

// verifyFront runs both passes against a front cache, counting the blob
// downloads its front started during each.
func verifyFront(ctx context.Context, eng Engine, spec Spec, dataDir string, ref name.Reference, img v1.Image, digests []v1.Hash, res VerifyResult, storeWait time.Duration, progress io.Writer) (VerifyResult, error) {
	repo := ref.Context().RepositoryStr()
	pass := func(label string) (Pass, error) {
		before, err := frontCounters(ctx, eng, spec)
		if err != nil {
			return Pass{}, fmt.Errorf("read the front's counters of cache %s: %w", spec.Name, err)
		}
		p, err := fetchAll(ctx, img)
		if err != nil {
			return p, fmt.Errorf("%s pass of %s: %w", label, res.Image, err)
		}
		after, err := frontCounters(ctx, eng, spec)
		if err != nil {
			return p, fmt.Errorf("read the front's counters of cache %s: %w", spec.Name, err)
		}
		p.UpstreamBlobFetches = int(after.BlobFetches - before.BlobFetches)
		return p, nil
	}
	fmt.Fprintf(progress, "pass 1 (cold): %d blobs, %d already in the cache\n", len(digests), res.CachedBefore)
	var err error
	if res.Cold, err = pass("cold"); err != nil {
		return res, err
	}
	// The front links a blob into the repository right after its digest is
	// checked: the last ones may still be on their way into storage.
	deadline := time.Now().Add(min(storeWait, 30*time.Second))
	for dataDir != "" && countStored(dataDir, repo, digests) < len(digests) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	res.CachedAfterCold = countStored(dataDir, repo, digests)
	fmt.Fprintf(progress, "pass 2 (warm)\n")
	if res.Warm, err = pass("warm"); err != nil {
		return res, err
	}
	res.WarmFromCache = res.Warm.UpstreamBlobFetches == 0
	return res, nil
}

// CacheReference maps what a user names (repo:tag, upstream/repo:tag or
// cache-address/repo:tag) onto the cache's address.
func CacheReference(spec Spec, image string) (name.Reference, error) {
	repo := image
	if i := strings.Index(image, "/"); i > 0 {
		first := image[:i]
		if strings.ContainsAny(first, ".:") || first == "localhost" {
			switch first {
			case spec.UpstreamHost(), spec.LocalAddress(), "127.0.0.1:" + strconv.Itoa(spec.Port), "localhost:" + strconv.Itoa(spec.Port):
				repo = image[i+1:]
			default:
				if isDockerHub(spec.UpstreamHost()) && isDockerHub(first) {
					repo = image[i+1:]
					break
				}
				return nil, fmt.Errorf("image %s is on registry %s, but cache %s proxies %s; name it without the registry or use the cache for %s (--cache)", image, first, spec.Name, spec.UpstreamHost(), first)
			}
		}
	}
	if isDockerHub(spec.UpstreamHost()) && !strings.Contains(strings.SplitN(repo, ":", 2)[0], "/") {
		repo = "library/" + repo
	}
	ref, err := name.ParseReference(spec.LocalAddress()+"/"+repo, name.Insecure)
	if err != nil {
		return nil, fmt.Errorf("invalid image reference %q: %w", image, err)
	}
	return ref, nil
}

func isDockerHub(host string) bool {
	switch host {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return true
	}
	return false
}

func blobsOf(img v1.Image) ([]v1.Hash, int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, 0, err
	}
	digests := []v1.Hash{m.Config.Digest}
	size := m.Config.Size
	for _, l := range m.Layers {
		digests = append(digests, l.Digest)
		size += l.Size
	}
	return digests, size, nil
}

// fetchAll reads config and every layer to the end, as a node's pull would.
func fetchAll(ctx context.Context, img v1.Image) (Pass, error) {
	start := time.Now()
	var p Pass
	raw, err := img.RawConfigFile()
	if err != nil {
		return p, err
	}
	p.Bytes += int64(len(raw))
	layers, err := img.Layers()
	if err != nil {
		return p, err
	}
	for _, l := range layers {
		if err := ctx.Err(); err != nil {
			return p, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return p, err
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return p, err
		}
		p.Bytes += n
	}
	p.Seconds = time.Since(start).Seconds()
	return p, nil
}

// countStored counts the blobs the registry's filesystem storage holds for
// repo: the blob's data and the repository's link to it, which registry:2
// writes last; a blob without its link is fetched from the upstream again.
func countStored(dataDir, repo string, digests []v1.Hash) int {
	if dataDir == "" {
		return 0
	}
	root := filepath.Join(dataDir, "docker/registry/v2")
	n := 0
	for _, d := range digests {
		data := filepath.Join(root, "blobs", d.Algorithm, d.Hex[:2], d.Hex, "data")
		link := filepath.Join(root, "repositories", filepath.FromSlash(repo), "_layers", d.Algorithm, d.Hex, "link")
		if _, err := os.Stat(data); err != nil {
			continue
		}
		if _, err := os.Stat(link); err == nil {
			n++
		}
	}
	return n
}

// upstreamFetches counts the blobs registry:2 logged as newly stored from its
// upstream ("Adding new scheduler entry for repo@digest") since a time.
func upstreamFetches(ctx context.Context, eng Engine, cname string, since time.Time, digests []v1.Hash) (int, error) {
	rc, err := eng.ContainerLogs(ctx, cname, client.ContainerLogsOptions{
		ShowStdout: true, ShowStderr: true,
		Since: strconv.FormatFloat(float64(since.UnixNano())/1e9, 'f', 6, 64),
	})
	if err != nil {
		return 0, fmt.Errorf("read logs of %s: %w", cname, engineError(eng, err))
	}
	defer rc.Close()
	pr, pw := io.Pipe()
	go func() {
		_, err := stdcopy.StdCopy(pw, pw, rc)
		pw.CloseWithError(err)
	}()
	want := map[string]bool{}
	for _, d := range digests {
		want[d.String()] = true
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "Adding new scheduler entry for ")
		if i < 0 {
			continue
		}
		rest := line[i+len("Adding new scheduler entry for "):]
		if at := strings.Index(rest, "@"); at >= 0 {
			if f := strings.Fields(rest[at+1:]); len(f) > 0 && want[f[0]] {
				seen[f[0]] = true
			}
		}
	}
	return len(seen), nil
}
