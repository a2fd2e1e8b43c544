//go:build e2e

package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// BenchmarkFront measures what the issue "one upstream fetch per blob" asks:
// N nodes (go-containerregistry clients, each pulling the whole set image by
// image, the blobs of an image at once) pull an image set with shared base
// layers through a slow link (a byte-counting, rate-limited relay in front of
// a real registry), from a cold cache each time, for N = 1, 4, 8, 32:
//
//	(a) direct from the upstream, (b) registry:2 alone as the guide runs it
//	(up --plain), (c) bkcache's front (up).
//
// It prints upstream bytes / set size, the wall time until every client has
// the set, and the slowest time to first byte; then a blob the upstream takes
// more than 30 s to send (first byte to every client vs the upstream's) and a
// connection broken mid-blob (the bytes it adds). `make bench` runs it once.
//
// BKCACHE_BENCH_SCALE (default 1: 8 images, 208 MiB) and BKCACHE_BENCH_RATE
// (MiB/s of the link, default 40) make a quick try cheaper;
// BKCACHE_BENCH_CLIENTS (default "1,4,8,32") picks the N, BKCACHE_BENCH_WAYS
// (default "abc") the ways; BKCACHE_BENCH_TAILS=0 leaves out the slow and
// the cut blob.
func BenchmarkFront(b *testing.B) {
	if b.N > 1 {
		b.Skip("one run is the measurement; use -benchtime 1x")
	}
	scale := envFloat("BKCACHE_BENCH_SCALE", 1)
	rateMiB := envFloat("BKCACHE_BENCH_RATE", 40)
	clientCounts := []int{1, 4, 8, 32}
	if s := os.Getenv("BKCACHE_BENCH_CLIENTS"); s != "" {
		clientCounts = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				b.Fatalf("BKCACHE_BENCH_CLIENTS=%q: want numbers like 1,4,8", s)
			}
			clientCounts = append(clientCounts, n)
		}
	}

	dist := registrytest.StartDistribution(b)
	link := registrytest.StartRelay(b, "http://"+dist.Addr)
	// 8 images on a 2-layer base: 2 x 32 MiB shared + 8 x 18 MiB own = 208 MiB.
	set := benchSet(b, dist.Addr, 8, 2, int64(32<<20*scale), 1, int64(18<<20*scale))
	fmt.Fprintf(os.Stderr, "\nimage set: %d images on a shared base, %d distinct blobs, %.1f MiB; link %.0f MiB/s (relay, loopback)\n",
		len(set.refs), len(set.blobs), float64(set.bytes)/(1<<20), rateMiB)

	type row struct {
		way             string
		n               int
		ratio           float64
		wall, firstByte time.Duration
		failed          int
		// CPU seconds the cache container and this process (clients and
		// relay) used: on a 2-core test host they share the CPU, on a site
		// the nodes are other machines.
		cacheCPU, benchCPU float64
	}
	var rows []row
	measure := func(way string, n int, registry, container, metrics string) row {
		link.ResetLog()
		link.SetRate(int64(rateMiB * (1 << 20)))
		r := row{way: way, n: n}
		cache0, bench0 := containerCPU(container), processCPU()
		r.wall, r.firstByte, r.failed = pullSetConcurrently(b, registry, set, n)
		r.cacheCPU, r.benchCPU = containerCPU(container)-cache0, processCPU()-bench0
		settle(link) // registry:2 alone stores cold blobs in the background, fetching them again
		r.ratio = float64(link.BlobBytes("")) / float64(set.bytes)
		fmt.Fprintf(os.Stderr, "  %-22s N=%-3d upstream/set %6.2f  wall %7.1fs  slowest first byte %6.2fs  CPU s cache %5.1f clients+relay %5.1f  failed %d\n",
			way, n, r.ratio, r.wall.Seconds(), r.firstByte.Seconds(), r.cacheCPU, r.benchCPU, r.failed)
		if metrics != "" {
			fmt.Fprintf(os.Stderr, "  %-22s %s\n", "", frontCounters(metrics))
		}
		return r
	}
	withCache := func(way string, n int, extra ...string) row {
		c := newTestCache(b)
		mustDocker(b, c.upArgs(link.URL, extra...)...)
		defer mustDocker(b, "bkcache", "down", "--purge", "--yes", "--config-dir", c.configDir, c.name)
		metrics := ""
		if len(extra) == 0 {
			metrics = "127.0.0.1:" + strconv.Itoa(c.metricsPort)
		}
		return measure(way, n, c.addr(), "proxy-"+c.name, metrics)
	}
	ways := os.Getenv("BKCACHE_BENCH_WAYS")
	if ways == "" {
		ways = "abc"
	}
	for _, n := range clientCounts {
		if strings.Contains(ways, "a") {
			rows = append(rows, measure("(a) direct", n, link.Addr, "", ""))
		}
		if strings.Contains(ways, "b") {
			rows = append(rows, withCache("(b) registry:2 alone", n, "--plain"))
		}
		if strings.Contains(ways, "c") {
			rows = append(rows, withCache("(c) bkcache front", n))
		}
	}

	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%-22s %4s %14s %10s %18s %12s %18s\n", "cold pull of the set", "N", "upstream/set", "wall s", "slowest 1st byte s", "cache CPU s", "clients+relay CPU s")
	frontWall := map[int]time.Duration{} // (c)'s wall time by N
	for _, r := range rows {
		fail := ""
		if r.failed > 0 {
			fail = fmt.Sprintf("  (%d pulls failed)", r.failed)
		}
		fmt.Fprintf(&sb, "%-22s %4d %14.2f %10.1f %18.2f %12.1f %18.1f%s\n", r.way, r.n, r.ratio, r.wall.Seconds(), r.firstByte.Seconds(), r.cacheCPU, r.benchCPU, fail)
		if strings.HasPrefix(r.way, "(c)") {
			frontWall[r.n] = r.wall
		}
	}
	for _, t := range []struct {
		n      int
		target float64
	}{{8, 1.2}, {32, 1.3}} {
		if frontWall[1] > 0 && frontWall[t.n] > 0 {
			fmt.Fprintf(&sb, "bkcache front: wall at N=%d is %.2fx N=1 (target <= %.1f)\n", t.n, frontWall[t.n].Seconds()/frontWall[1].Seconds(), t.target)
		}
	}
	fmt.Fprint(os.Stderr, sb.String())

	if os.Getenv("BKCACHE_BENCH_TAILS") == "0" {
		return
	}
	benchSlowBlob(b, dist, link)
	benchCutBlob(b, dist, link, rateMiB)
}

// containerCPU is the CPU seconds a container used so far (cgroup v1 or v2); 0 when unknown.
func containerCPU(name string) float64 {
	if name == "" {
		return 0
	}
	out, err := exec.Command("docker", "inspect", "-f", "{{.Id}}", name).Output()
	if err != nil {
		return 0
	}
	id := strings.TrimSpace(string(out))
	if b, err := os.ReadFile("/sys/fs/cgroup/cpuacct/docker/" + id + "/cpuacct.usage"); err == nil {
		ns, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return float64(ns) / 1e9
	}
	b, err := os.ReadFile("/sys/fs/cgroup/system.slice/docker-" + id + ".scope/cpu.stat")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
			us, _ := strconv.ParseInt(v, 10, 64)
			return float64(us) / 1e6
		}
	}
	return 0
}

// frontCounters is what the front at metrics counted: how clients were served.
func frontCounters(metrics string) string {
	resp, err := http.Get("http://" + metrics + "/bkcache/status")
	if err != nil {
		return "front counters: " + err.Error()
	}
	defer resp.Body.Close()
	var st struct {
		Counters map[string]int64 `json:"counters"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return "front counters: " + err.Error()
	}
	c := st.Counters
	return fmt.Sprintf("front: %d blob requests (%d fetches, %d joined a fetch, %d from storage), %d manifest requests shared",
		c["blobRequests"], c["blobFetches"], c["sharedWaiters"], c["blobHits"], c["manifestShared"])
}

// processCPU is the CPU seconds this process (clients and relay) used so far.
func processCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func envFloat(key string, def float64) float64 {
	if s := os.Getenv(key); s != "" {
		if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 {
			return f
		}
	}
	return def
}

// benchSet is pushSet for a benchmark.
func benchSet(b *testing.B, addr string, n, baseLayers int, baseSize int64, ownLayers int, ownSize int64) imageSet {
	s := imageSet{blobs: map[string]int64{}}
	var base v1.Image
	if baseLayers > 0 {
		var err error
		if base, err = registrytest.Image(baseLayers, baseSize, "amd64"); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		img, err := registrytest.Image(ownLayers, ownSize, "amd64")
		if err != nil {
			b.Fatal(err)
		}
		if base != nil {
			if img, err = registrytest.WithBase(base, img); err != nil {
				b.Fatal(err)
			}
		}
		ref := fmt.Sprintf("blueking/bench-%02d:1", i)
		if err := registrytest.PushTo(addr, ref, img); err != nil {
			b.Fatal(err)
		}
		d, _ := img.Digest()
		m, _ := img.Manifest()
		descs := append([]v1.Descriptor{m.Config}, m.Layers...)
		for _, bl := range descs {
			if _, ok := s.blobs[bl.Digest.String()]; !ok {
				s.blobs[bl.Digest.String()] = bl.Size
				s.bytes += bl.Size
			}
		}
		s.refs, s.digests, s.layers = append(s.refs, ref), append(s.digests, d), append(s.layers, descs)
	}
	return s
}

// pullSetConcurrently has n clients pull the whole set from registry at
// once. Each client is a node: it pulls all images of the set at once, and
// like containerd's content store it fetches a blob shared by several images
// once (a second image waits for the first one's download). It returns the
// wall time until the last client has the set, the slowest time from a
// client's start to its first blob byte, and how many pulls failed.
func pullSetConcurrently(b *testing.B, registry string, set imageSet, n int) (wall, slowestFirst time.Duration, failed int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for k := 0; k < n; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nd := &node{rt: &firstByte{next: http.DefaultTransport.(*http.Transport).Clone()}, blobs: map[v1.Hash]*nodeBlob{}}
			var iwg sync.WaitGroup
			for i, ref := range set.refs {
				iwg.Add(1)
				go func() {
					defer iwg.Done()
					if err := nd.pull(ctx, registry+"/"+ref, set.digests[i]); err != nil {
						mu.Lock()
						failed++
						mu.Unlock()
						b.Logf("client %d: %v", k, err)
					}
				}()
			}
			iwg.Wait()
			fb := nd.rt.(*firstByte)
			mu.Lock()
			if d := fb.at().Sub(start); fb.seen() && d > slowestFirst {
				slowestFirst = d
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return time.Since(start), slowestFirst, failed
}

// node is one benchmark client: its transport and the blobs it has.
type node struct {
	rt    http.RoundTripper
	mu    sync.Mutex
	blobs map[v1.Hash]*nodeBlob
}

type nodeBlob struct {
	done chan struct{}
	err  error
}

// pull reads an image's config and layers (in parallel, digests checked),
// fetching only the blobs this node does not have or is not fetching already.
func (nd *node) pull(ctx context.Context, ref string, want v1.Hash) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	img, err := remote.Image(r, remote.WithContext(ctx), remote.WithTransport(nd.rt))
	if err != nil {
		return err
	}
	if d, _ := img.Digest(); d != want {
		return fmt.Errorf("%s: digest %s, want %s", ref, d, want)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	errs := make(chan error, len(layers)+1)
	go func() { _, err := img.RawConfigFile(); errs <- err }()
	for _, l := range layers {
		go func() { errs <- nd.layer(l) }()
	}
	for range len(layers) + 1 {
		if e := <-errs; e != nil && err == nil {
			err = fmt.Errorf("%s: %w", ref, e)
		}
	}
	return err
}

func (nd *node) layer(l v1.Layer) error {
	d, err := l.Digest()
	if err != nil {
		return err
	}
	nd.mu.Lock()
	if have, ok := nd.blobs[d]; ok {
		nd.mu.Unlock()
		<-have.done
		return have.err
	}
	nb := &nodeBlob{done: make(chan struct{})}
	nd.blobs[d] = nb
	nd.mu.Unlock()
	defer close(nb.done)
	rc, err := l.Compressed()
	if err == nil {
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
	}
	nb.err = err
	return err
}

// firstByte notes when the first byte of any blob body reached this client.
type firstByte struct {
	next http.RoundTripper
	mu   sync.Mutex
	t    time.Time
}

func (f *firstByte) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := f.next.RoundTrip(req)
	if err == nil && req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") {
		resp.Body = &firstByteBody{ReadCloser: resp.Body, f: f}
	}
	return resp, err
}

func (f *firstByte) mark() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.t.IsZero() {
		f.t = time.Now()
	}
}

func (f *firstByte) seen() bool { f.mu.Lock(); defer f.mu.Unlock(); return !f.t.IsZero() }
func (f *firstByte) at() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

type firstByteBody struct {
	io.ReadCloser
	f *firstByte
}

func (b *firstByteBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.f.mark()
	}
	return n, err
}

// settle waits until the relay has carried nothing new for 2 s (at most 10 min).
func settle(link *registrytest.Relay) {
	last, quiet := link.TotalBytes(), time.Now()
	for deadline := time.Now().Add(10 * time.Minute); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		if n := link.TotalBytes(); n != last {
			last, quiet = n, time.Now()
		} else if time.Since(quiet) > 2*time.Second {
			return
		}
	}
}

// benchSlowBlob: a blob the upstream takes more than 30 s to send, asked for
// by 8 clients one after another: how long after the upstream's first byte
// (or after asking, for a later client) each got its own first byte.
func benchSlowBlob(b *testing.B, dist *registrytest.Distribution, link *registrytest.Relay) {
	set := benchSet(b, dist.Addr, 1, 0, 0, 1, 32<<20)
	layer := set.layers[0][1]
	c := newTestCache(b)
	mustDocker(b, c.upArgs(link.URL)...)
	defer mustDocker(b, "bkcache", "down", "--purge", "--yes", "--config-dir", c.configDir, c.name)
	link.ResetLog()
	link.SetRate(1 << 20) // 32 MiB at 1 MiB/s
	url := "http://" + c.addr() + "/v2/" + strings.Split(set.refs[0], ":")[0] + "/blobs/" + layer.Digest.String()
	type client struct{ asked, first time.Time }
	clients := make([]client, 8)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 3 * time.Second)
			clients[i].asked = time.Now()
			resp, err := http.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			defer resp.Body.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := resp.Body.Read(buf)
				if n > 0 && clients[i].first.IsZero() {
					clients[i].first = time.Now()
				}
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	settle(link) // the relay logs a request when its handler returns
	var upstream registrytest.RelayRequest
	gets := 0
	for _, q := range link.Log() {
		if q.Method == http.MethodGet && strings.HasSuffix(q.Path, layer.Digest.String()) {
			upstream, gets = q, gets+1
		}
	}
	var worst time.Duration
	for _, cl := range clients {
		from := upstream.Headers
		if cl.asked.After(from) {
			from = cl.asked
		}
		worst = max(worst, cl.first.Sub(from))
	}
	fmt.Fprintf(os.Stderr, "\nslow blob: %.0f MiB sent by the upstream in %.1fs (%d upstream GET); 8 clients asking 3 s apart: first byte at most %.2fs after the upstream's (or after asking); all done %.1fs after the first asked\n",
		float64(layer.Size)/(1<<20), upstream.End.Sub(upstream.Headers).Seconds(), gets, worst.Seconds(), time.Since(t0).Seconds())
}

// benchCutBlob: 8 clients pull one image whose big blob's upstream connection
// breaks half-way: the bytes the break costs beyond the blob itself.
func benchCutBlob(b *testing.B, dist *registrytest.Distribution, link *registrytest.Relay, rateMiB float64) {
	set := benchSet(b, dist.Addr, 1, 0, 0, 1, 64<<20)
	layer := set.layers[0][1]
	c := newTestCache(b)
	mustDocker(b, c.upArgs(link.URL)...)
	defer mustDocker(b, "bkcache", "down", "--purge", "--yes", "--config-dir", c.configDir, c.name)
	link.ResetLog()
	link.SetRate(int64(rateMiB * (1 << 20)))
	link.CutAfter(layer.Digest.String(), layer.Size/2, 1)
	wall, _, failed := pullSetConcurrently(b, c.addr(), set, 8)
	settle(link)
	link.ClearCuts()
	extra := link.BlobBytes(layer.Digest.String()) - layer.Size
	fmt.Fprintf(os.Stderr, "cut blob: a %.0f MiB blob whose upstream connection breaks half-way, 8 clients: %d upstream GETs, %d bytes sent beyond the blob's size, wall %.1fs, %d pulls failed\n",
		float64(layer.Size)/(1<<20), link.BlobGets(layer.Digest.String()), extra, wall.Seconds(), failed)
}
