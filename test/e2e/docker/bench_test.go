//go:build e2e

package docker

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// BenchmarkPull measures, through the real docker CLI and engine, pulls of an
// image set of >= 200 MB on loopback: directly from the upstream, through a
// cold cache and through a warm one, with the upstream blob bytes each pull
// cost. `make bench` runs it; it prints the ratios at the end.
//
// Loopback has no slow link, so the times show the cache's own overhead; the
// upstream bytes show what a slow link would carry.
func BenchmarkPull(b *testing.B) {
	up, err := registrytest.New()
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	const images, layers, layerSize = 4, 2, 26 << 20 // 4 x 2 x 26 MiB = 208 MiB
	var refs []string
	var imgs []v1.Image
	var total int64
	for i := 0; i < images; i++ {
		img, err := registrytest.Image(layers, layerSize, "amd64")
		if err != nil {
			b.Fatal(err)
		}
		repo := fmt.Sprintf("blueking/bench-%d:1", i)
		if _, err := up.Push(repo, img); err != nil {
			b.Fatal(err)
		}
		m, _ := img.Manifest()
		for _, l := range m.Layers {
			total += l.Size
		}
		refs = append(refs, repo)
		imgs = append(imgs, img)
	}
	fmt.Fprintf(os.Stderr, "image set: %d images, %.0f MiB of layers\n", images, float64(total)/(1<<20))

	type figure struct {
		seconds, upstreamBytes float64
		n                      int
	}
	figures := map[string]*figure{}
	pullAll := func(b *testing.B, registry string) {
		var full []string
		for _, r := range refs {
			full = append(full, registry+"/"+r)
		}
		dockerRmi(b, full...)
		for _, r := range full {
			mustDocker(b, "pull", "-q", r)
		}
		b.StopTimer()
		dockerRmi(b, full...)
		b.StartTimer()
	}
	measure := func(name string, prepare func(b *testing.B) string) {
		b.Run(name, func(b *testing.B) {
			f := &figure{}
			figures[name] = f
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				registry := prepare(b)
				bytesBefore := up.BlobBytes()
				start := time.Now()
				b.StartTimer()
				pullAll(b, registry)
				b.StopTimer()
				f.seconds += time.Since(start).Seconds()
				if name == "cold" {
					// registry:2 stores cold blobs in the background; count its second fetch too.
					for k, img := range imgs {
						waitStored(b, lastCache.dataDir, strings.Split(refs[k], ":")[0], img)
					}
				}
				f.upstreamBytes += float64(up.BlobBytes() - bytesBefore)
				f.n++
				b.StartTimer()
			}
			b.ReportMetric(f.upstreamBytes/float64(f.n)/(1<<20), "upstream-MiB/op")
		})
	}

	parent := b
	measure("direct", func(b *testing.B) string { return up.Addr })
	measure("cold", func(b *testing.B) string {
		if lastCache != nil {
			mustDocker(b, "bkcache", "down", "--purge", "--yes", "--config-dir", lastCache.configDir, lastCache.name)
		}
		lastCache = newTestCache(parent) // outlives the cold run: the warm run reuses it
		mustDocker(b, lastCache.upArgs(up.URL)...)
		return lastCache.addr()
	})
	measure("warm", func(b *testing.B) string { return lastCache.addr() })

	d, c, w := figures["direct"], figures["cold"], figures["warm"]
	if d == nil || c == nil || w == nil || d.n == 0 || c.n == 0 || w.n == 0 {
		return
	}
	per := func(f *figure) (float64, float64) {
		return f.seconds / float64(f.n), f.upstreamBytes / float64(f.n) / (1 << 20)
	}
	ds, db := per(d)
	cs, cb := per(c)
	ws, wb := per(w)
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%-28s %10s %14s %12s\n", "pull of the set", "seconds", "upstream MiB", "time/direct")
	fmt.Fprintf(&sb, "%-28s %10.2f %14.1f %12.2f\n", "direct from upstream", ds, db, 1.0)
	fmt.Fprintf(&sb, "%-28s %10.2f %14.1f %12.2f\n", "through cache, cold", cs, cb, cs/ds)
	fmt.Fprintf(&sb, "%-28s %10.2f %14.1f %12.2f\n", "through cache, warm", ws, wb, ws/ds)
	fmt.Fprintf(&sb, "upstream bytes per pull: cold/direct %.2f, warm/direct %.2f\n", cb/db, wb/db)
	fmt.Fprint(os.Stderr, sb.String())
}

// lastCache is the cache the cold run made and the warm run reuses.
var lastCache *testCache
