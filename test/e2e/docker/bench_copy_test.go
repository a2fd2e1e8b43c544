//go:build e2e

package docker

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// BenchmarkCopy compares `docker bkcache push` with its peers on one image set
// of >= 1 GB (20 images on one shared base) between two real registries on
// 127.0.0.1: crane copy, skopeo copy and the guide's docker pull/tag/push loop,
// each run here in the same go; then a no-op re-run of 100 images; then the
// upstream bytes each way of filling a cache costs, counted by a rate-limited
// relay in front of the upstream. `make bench-copy` runs it once.
func BenchmarkCopy(b *testing.B) {
	if b.N > 1 {
		b.Skip("one run is the measurement; use -benchtime 1x")
	}
	src := registrytest.StartDistribution(b)
	refs, list := copySet(b, src)
	copyWays(b, src, refs, list)
	noopRerun(b)
	fillWays(b, src, refs)
}

// copySet pushes the benchmark's image set to src and lists it.
func copySet(b *testing.B, src *registrytest.Distribution) (refs []string, list string) {
	const images, baseLayers, ownLayers = 20, 2, 2
	// 40 MiB shared + 20 x 50 MiB own = 1040 MiB; BKCACHE_BENCH_SCALE=0.1 for a quick try.
	scale := 1.0
	if s := os.Getenv("BKCACHE_BENCH_SCALE"); s != "" {
		fmt.Sscan(s, &scale)
	}
	baseSize, ownSize := int64(20<<20*scale), int64(25<<20*scale)
	base, err := registrytest.Image(baseLayers, baseSize, "amd64")
	if err != nil {
		b.Fatal(err)
	}
	var setBytes int64
	seen := map[v1.Hash]bool{}
	for i := 0; i < images; i++ {
		top, _ := registrytest.Image(ownLayers, ownSize, "amd64")
		img, err := registrytest.WithBase(base, top)
		if err != nil {
			b.Fatal(err)
		}
		ref := fmt.Sprintf("blueking/bench-%02d:1.0", i)
		if err := registrytest.PushTo(src.Addr, ref, img); err != nil {
			b.Fatal(err)
		}
		m, _ := img.Manifest()
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if !seen[d.Digest] {
				seen[d.Digest] = true
				setBytes += d.Size
			}
		}
		refs = append(refs, ref)
	}
	list = writeList(b, src.Addr, refs)
	fmt.Fprintf(os.Stderr, "\nset: %d images on a shared base, %.0f MiB of distinct blobs\n", images, float64(setBytes)/(1<<20))

	return refs, list
}

// copyWays times copying the set with push, crane, skopeo and the guide's docker loop.
func copyWays(b *testing.B, src *registrytest.Distribution, refs []string, list string) {
	crane := buildCrane(b)
	type run struct {
		name    string
		seconds float64
	}
	var runs []run
	timeIt := func(name string, f func(target string)) {
		target := registrytest.StartDistribution(b)
		start := time.Now()
		f(target.Addr)
		runs = append(runs, run{name, time.Since(start).Seconds()})
		// docker push recompresses layers: only the image (config) stays the same.
		verifyCopied(b, src.Addr, target.Addr, refs, !strings.HasPrefix(name, "docker pull"))
		target.Stop()
		os.RemoveAll(target.RootDir)
	}
	timeIt("docker bkcache push", func(target string) {
		mustDocker(b, "bkcache", "push", "-f", list, "--to", target, "-j", "8")
	})
	timeIt("crane copy (loop)", func(target string) {
		for _, r := range refs {
			run := exec.Command(crane, "copy", "--insecure", src.Addr+"/"+r, target+"/"+r)
			if out, err := run.CombinedOutput(); err != nil {
				b.Fatalf("crane copy %s: %v\n%s", r, err, out)
			}
		}
	})
	timeIt("skopeo copy --all (loop)", func(target string) {
		for _, r := range refs {
			run := exec.Command("skopeo", "copy", "-q", "--all", "--src-tls-verify=false", "--dest-tls-verify=false", "docker://"+src.Addr+"/"+r, "docker://"+target+"/"+r)
			if out, err := run.CombinedOutput(); err != nil {
				b.Fatalf("skopeo copy %s: %v\n%s", r, err, out)
			}
		}
	})
	timeIt("docker pull/tag/push (loop)", func(target string) {
		for _, r := range refs {
			from, to := src.Addr+"/"+r, target+"/"+r
			mustDocker(b, "pull", "-q", from)
			mustDocker(b, "tag", from, to)
			mustDocker(b, "push", "-q", to)
			dockerRmi(b, from, to)
		}
	})
	ours := runs[0].seconds
	fmt.Fprintf(os.Stderr, "\n%-30s %9s %16s\n", "copy of the set", "seconds", "time / bkcache")
	for _, r := range runs {
		fmt.Fprintf(os.Stderr, "%-30s %9.1f %16.2f\n", r.name, r.seconds, r.seconds/ours)
	}

}

// noopRerun times a push of 100 images that are all at the target already.
func noopRerun(b *testing.B) {
	// No-op re-run: 100 images already at the target.
	small := registrytest.StartDistribution(b)
	var hundred []string
	for i := 0; i < 100; i++ {
		img, _ := registrytest.Image(1, 4096, "amd64")
		ref := fmt.Sprintf("blueking/noop-%03d:1", i)
		if err := registrytest.PushTo(small.Addr, ref, img); err != nil {
			b.Fatal(err)
		}
		hundred = append(hundred, ref)
	}
	smallList := writeList(b, small.Addr, hundred)
	target := registrytest.StartDistribution(b)
	mustDocker(b, "bkcache", "push", "-f", smallList, "--to", target.Addr, "-j", "16")
	start := time.Now()
	mustDocker(b, "bkcache", "push", "-f", smallList, "--to", target.Addr, "-j", "16")
	fmt.Fprintf(os.Stderr, "no-op re-run of 100 images: %.2fs\n", time.Since(start).Seconds())

}

// fillWays measures the upstream bytes of each way of filling a cold cache.
func fillWays(b *testing.B, src *registrytest.Distribution, refs []string) {
	// Upstream bytes per way of filling a cache, through a rate-limited relay.
	subset := refs[:6]
	var subsetBytes int64
	seen := map[v1.Hash]bool{}
	for _, r := range subset {
		ref, _ := name.ParseReference(src.Addr+"/"+r, name.Insecure)
		img, err := remote.Image(ref)
		if err != nil {
			b.Fatal(err)
		}
		m, _ := img.Manifest()
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if !seen[d.Digest] {
				seen[d.Digest] = true
				subsetBytes += d.Size
			}
		}
	}
	relay := startRelay(b, src.Addr, 200<<20)
	subsetList := writeList(b, relay.addr, subset)
	fmt.Fprintf(os.Stderr, "\nfilling a cold cache with %d images (%.0f MiB of distinct blobs) through a %d MiB/s relay\n%-40s %12s\n",
		len(subset), float64(subsetBytes)/(1<<20), 200, "way", "upstream/set")
	measureFill := func(way string, upExtra []string, fill func(c *testCache)) {
		c := newTestCache(b)
		mustDocker(b, c.upArgs("http://"+relay.addr, upExtra...)...)
		before := relay.bytes.Load()
		fill(c)
		waitAllStored(b, c, relay.addr, subset)
		fmt.Fprintf(os.Stderr, "%-40s %12.2f\n", way, float64(relay.bytes.Load()-before)/float64(subsetBytes))
		mustDocker(b, "rm", "-f", "proxy-"+c.name)
	}
	pullThrough := func(c *testCache, clients int) {
		var wg sync.WaitGroup
		for i := 0; i < clients; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, r := range subset {
					fetchImage(b, c.addr()+"/"+r)
				}
			}()
		}
		wg.Wait()
	}
	plain := []string{"--plain"}
	measureFill("registry:2 pull-through, 1 client", plain, func(c *testCache) { pullThrough(c, 1) })
	measureFill("registry:2 pull-through, 8 clients", plain, func(c *testCache) { pullThrough(c, 8) })
	measureFill("warm --through-proxy (--plain)", plain, func(c *testCache) {
		mustDocker(b, "bkcache", "warm", "-f", subsetList, "--cache", c.name, "--through-proxy")
	})
	measureFill("warm into storage (--plain)", plain, func(c *testCache) {
		mustDocker(b, "bkcache", "warm", "-f", subsetList, "--cache", c.name)
	})
	measureFill("bkcache front pull-through, 8 clients", nil, func(c *testCache) { pullThrough(c, 8) })
	measureFill("docker bkcache warm (front)", nil, func(c *testCache) {
		mustDocker(b, "bkcache", "warm", "-f", subsetList, "--cache", c.name)
	})
}

func writeList(b testing.TB, registry string, refs []string) string {
	var lines []string
	for _, r := range refs {
		lines = append(lines, registry+"/"+r)
	}
	p := filepath.Join(b.TempDir(), "images.txt")
	os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	return p
}

func buildCrane(b testing.TB) string {
	dir := b.TempDir()
	cmd := exec.Command("go", "install", "github.com/google/go-containerregistry/cmd/crane@v0.22.1")
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build crane: %v\n%s", err, out)
	}
	return filepath.Join(dir, "crane")
}

func verifyCopied(b testing.TB, src, dst string, refs []string, sameDigest bool) {
	for _, r := range refs {
		s, _ := name.ParseReference(src+"/"+r, name.Insecure)
		d, _ := name.ParseReference(dst+"/"+r, name.Insecure)
		sd, err1 := remote.Get(s)
		dd, err2 := remote.Get(d)
		if err1 == nil && err2 == nil && !sameDigest {
			si, _ := sd.Image()
			di, _ := dd.Image()
			sc, _ := si.ConfigName()
			dc, _ := di.ConfigName()
			if sc == dc {
				continue
			}
		}
		if err1 != nil || err2 != nil || sd.Digest != dd.Digest {
			b.Fatalf("%s was not copied intact: %v %v\nsource %s:\n%s\ntarget %s:\n%s", r, err1, err2, sd.Digest, sd.Manifest, dd.Digest, dd.Manifest)
		}
	}
}

// fetchImage reads an image's config and layers through a registry, as a node's pull would.
func fetchImage(b testing.TB, ref string) {
	r, _ := name.ParseReference(ref, name.Insecure)
	img, err := remote.Image(r)
	if err != nil {
		b.Error(err)
		return
	}
	layers, _ := img.Layers()
	img.RawConfigFile()
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			b.Error(err)
			return
		}
		io.Copy(io.Discard, rc)
		rc.Close()
	}
}

// waitAllStored waits until the cache holds every blob of refs (registry:2 stores in the background).
func waitAllStored(b testing.TB, c *testCache, upstream string, refs []string) {
	for _, r := range refs {
		ref, _ := name.ParseReference(upstream+"/"+r, name.Insecure)
		img, err := remote.Image(ref)
		if err != nil {
			b.Fatal(err)
		}
		waitStored(b, c.dataDir, strings.Split(r, ":")[0], img)
	}
}

type relay struct {
	addr  string
	bytes atomic.Int64
}

// startRelay counts the blob bytes it forwards from target and holds them to
// limit bytes per second: the slow link in front of the upstream.
func startRelay(b testing.TB, target string, limit int64) *relay {
	u, _ := url.Parse("http://" + target)
	rl := &relay{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	var mu sync.Mutex
	next := time.Now()
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/blobs/") {
			resp.Body = &limitedBody{ReadCloser: resp.Body, onRead: func(n int) {
				rl.bytes.Add(int64(n))
				mu.Lock()
				next = maxTime(next, time.Now()).Add(time.Duration(int64(n) * int64(time.Second) / limit))
				wait := time.Until(next)
				mu.Unlock()
				time.Sleep(wait)
			}}
		}
		return nil
	}
	srv := &http.Server{Handler: proxy}
	ln, err := netListen()
	if err != nil {
		b.Fatal(err)
	}
	rl.addr = ln.Addr().String()
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Shutdown(context.Background()) })
	return rl
}

type limitedBody struct {
	io.ReadCloser
	onRead func(int)
}

func (l *limitedBody) Read(p []byte) (int, error) {
	n, err := l.ReadCloser.Read(p)
	if n > 0 {
		l.onRead(n)
	}
	return n, err
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
