//go:build e2e

package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// BenchmarkFrontWarmServe measures the cache's cost of serving what it holds
// (most of a cache's life): N clients at once pull a stored image set
// (manifest, config and layers of every image, bytes read and counted, not
// hashed, so the clients cost little) from
//
//	(a) registry:2 alone (up --plain),
//	(b) the front through its local registry:2 child (--stored-via-child),
//	(c) the front serving stored blobs from the file (sendfile; the default).
//
// It prints, per way and N, the CPU seconds per GiB sent by the cache
// container (from its cgroup) and the wall time until every client has the
// set. Targets: (c) at most 0.5x (a) in CPU per GiB, wall at most (a).
//
// BKCACHE_BENCH_WARM_SCALE (default 1: 4 images x 2 x 24 MiB = 192 MiB)
// scales the set, BKCACHE_BENCH_WARM_CLIENTS (default "8,32") picks the N.
func BenchmarkFrontWarmServe(b *testing.B) {
	if b.N > 1 {
		b.Skip("one run is the measurement; use -benchtime 1x")
	}
	scale := envFloat("BKCACHE_BENCH_WARM_SCALE", 1)
	clients := envInts(b, "BKCACHE_BENCH_WARM_CLIENTS", []int{8, 32})
	dist := registrytest.StartDistribution(b)
	set := benchSet(b, dist.Addr, 4, 0, 0, 2, int64(24<<20*scale))
	upstream := "http://" + dist.Addr
	fmt.Fprintf(os.Stderr, "\nwarm serve: %d images, %d blobs, %.1f MiB stored\n", len(set.refs), len(set.blobs), float64(set.bytes)/(1<<20))

	type row struct {
		way        string
		n          int
		gib        float64
		cpu        float64
		wall       time.Duration
		failed     int
		fileServes int64
		cpuPerGiB  float64
		wallOverA  float64
		cpuOverA   float64
	}
	var rows []row
	measure := func(way string, c *testCache, metrics string) {
		for _, n := range clients {
			container := "proxy-" + c.name
			files0 := fileServes(metrics)
			cpu0 := containerCPU(container)
			wall, sent, failed := warmPull(b, c.addr(), set, n)
			r := row{way: way, n: n, cpu: containerCPU(container) - cpu0, wall: wall, failed: failed,
				gib: float64(sent) / (1 << 30), fileServes: fileServes(metrics) - files0}
			r.cpuPerGiB = r.cpu / r.gib
			fmt.Fprintf(os.Stderr, "  %-30s N=%-3d %6.2f GiB  wall %6.1fs  cache CPU %6.1fs  %5.2f CPU-s/GiB  from file %d  failed %d\n",
				way, n, r.gib, wall.Seconds(), r.cpu, r.cpuPerGiB, r.fileServes, failed)
			rows = append(rows, r)
		}
	}
	fill := func(c *testCache) {
		if _, _, failed := pullSetConcurrently(b, c.addr(), set, 1); failed > 0 {
			b.Fatalf("filling the cache: %d pulls failed", failed)
		}
		waitSetStored(b, c.dataDir, set)
	}

	// (a) registry:2 alone.
	plain := newTestCache(b)
	mustDocker(b, plain.upArgs(upstream, "--plain")...)
	fill(plain)
	measure("(a) registry:2 alone", plain, "")
	mustDocker(b, "bkcache", "down", "--purge", "--yes", "--config-dir", plain.configDir, plain.name)

	// (c), then (b) on the same stored data with the front told to use its child.
	front := newTestCache(b)
	mustDocker(b, front.upArgs(upstream)...)
	defer mustDocker(b, "bkcache", "down", "--purge", "--yes", "--config-dir", front.configDir, front.name)
	fill(front)
	metrics := fmt.Sprintf("127.0.0.1:%d", front.metricsPort)
	measure("(c) front, sendfile", front, metrics)
	recreateWithFlag(b, "proxy-"+front.name, "--stored-via-child")
	waitServing(b, front.addr())
	measure("(b) front via local child", front, metrics)

	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%-30s %4s %8s %10s %12s %10s %9s %9s\n", "warm serve of the set", "N", "GiB", "wall s", "CPU-s/GiB", "CPU/(a)", "wall/(a)", "failed")
	for i := range rows {
		r := &rows[i]
		for _, a := range rows {
			if strings.HasPrefix(a.way, "(a)") && a.n == r.n {
				r.cpuOverA, r.wallOverA = r.cpuPerGiB/a.cpuPerGiB, r.wall.Seconds()/a.wall.Seconds()
			}
		}
		fmt.Fprintf(&sb, "%-30s %4d %8.2f %10.1f %12.2f %10.2f %9.2f %9d\n", r.way, r.n, r.gib, r.wall.Seconds(), r.cpuPerGiB, r.cpuOverA, r.wallOverA, r.failed)
	}
	fmt.Fprintf(&sb, "targets: (c) CPU/(a) <= 0.5, (c) wall/(a) <= 1\n")
	fmt.Fprint(os.Stderr, sb.String())
}

// warmPull has n clients pull every image of set from registry at once:
// manifest by tag, then config and layers in parallel, bodies counted. It
// returns the wall time, the bytes received and how many images failed.
func warmPull(b *testing.B, registry string, set imageSet, n int) (time.Duration, int64, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	var sent atomic.Int64
	var failed atomic.Int32
	var wg sync.WaitGroup
	start := time.Now()
	for k := 0; k < n; k++ {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}}
		for _, ref := range set.refs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := warmPullImage(ctx, client, registry, ref, &sent); err != nil {
					failed.Add(1)
					b.Logf("client %d: %s: %v", k, ref, err)
				}
			}()
		}
	}
	wg.Wait()
	return time.Since(start), sent.Load(), int(failed.Load())
}

func warmPullImage(ctx context.Context, client *http.Client, registry, ref string, sent *atomic.Int64) error {
	repo, tag, _ := strings.Cut(ref, ":")
	body, err := warmGet(ctx, client, "http://"+registry+"/v2/"+repo+"/manifests/"+tag, -1, sent,
		"application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
	if err != nil {
		return err
	}
	var m struct {
		Config struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"config"`
		Layers []struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	errs := make(chan error, len(m.Layers)+1)
	get := func(d string, size int64) {
		_, err := warmGet(ctx, client, "http://"+registry+"/v2/"+repo+"/blobs/"+d, size, sent, "")
		errs <- err
	}
	go get(m.Config.Digest, m.Config.Size)
	for _, l := range m.Layers {
		go get(l.Digest, l.Size)
	}
	for range len(m.Layers) + 1 {
		if e := <-errs; e != nil && err == nil {
			err = e
		}
	}
	return err
}

// warmGet reads one answer; a blob's body (size >= 0) is counted, not kept.
func warmGet(ctx context.Context, client *http.Client, url string, size int64, sent *atomic.Int64, accept string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if size < 0 {
		body, err := io.ReadAll(resp.Body)
		sent.Add(int64(len(body)))
		return body, err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	sent.Add(n)
	if err == nil && n != size {
		err = fmt.Errorf("GET %s: %d bytes, want %d", url, n, size)
	}
	return nil, err
}

// waitSetStored waits until the cache's storage holds every blob of the set,
// linked into its repository (registry:2 stores in the background).
func waitSetStored(b *testing.B, dataDir string, set imageSet) {
	root := filepath.Join(dataDir, "docker/registry/v2")
	deadline := time.Now().Add(5 * time.Minute)
	for i, ref := range set.refs {
		repo, _, _ := strings.Cut(ref, ":")
		for _, d := range set.layers[i] {
			for _, p := range []string{
				filepath.Join(root, "blobs", d.Digest.Algorithm, d.Digest.Hex[:2], d.Digest.Hex, "data"),
				filepath.Join(root, "repositories", repo, "_layers", d.Digest.Algorithm, d.Digest.Hex, "link"),
			} {
				for {
					if _, err := os.Stat(p); err == nil {
						break
					}
					if time.Now().After(deadline) {
						b.Fatalf("%s not stored within 5 minutes", p)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}
	}
}

// recreateWithFlag replaces container by one alike (image, mounts, tmpfs,
// network, labels, restart policy) whose entrypoint has flag added.
func recreateWithFlag(b *testing.B, container, flag string) {
	var info []struct {
		Config struct {
			Image      string
			Entrypoint []string
			Labels     map[string]string
		}
		HostConfig struct {
			Binds         []string
			Tmpfs         map[string]string
			NetworkMode   string
			RestartPolicy struct{ Name string }
		}
	}
	out := mustDocker(b, "inspect", container)
	if err := json.Unmarshal([]byte(out.stdout), &info); err != nil || len(info) != 1 || len(info[0].Config.Entrypoint) == 0 {
		b.Fatalf("inspect %s: %v: %s", container, err, out.stdout)
	}
	c := info[0]
	args := []string{"run", "-d", "--name", container, "--network", c.HostConfig.NetworkMode, "--entrypoint", c.Config.Entrypoint[0]}
	if c.HostConfig.RestartPolicy.Name != "" {
		args = append(args, "--restart", c.HostConfig.RestartPolicy.Name)
	}
	for _, v := range c.HostConfig.Binds {
		args = append(args, "-v", v)
	}
	for k, v := range c.HostConfig.Tmpfs {
		args = append(args, "--tmpfs", k+":"+v)
	}
	for k, v := range c.Config.Labels {
		args = append(args, "--label", k+"="+v)
	}
	args = append(args, c.Config.Image)
	args = append(args, c.Config.Entrypoint[1:]...)
	args = append(args, flag)
	mustDocker(b, "rm", "-f", container)
	mustDocker(b, args...)
}

// waitServing waits until a registry answers GET /v2/.
func waitServing(b *testing.B, addr string) {
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s does not serve within a minute: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fileServes is the front's count of blobs sent from the storage file; 0
// without a metrics address.
func fileServes(metrics string) int64 {
	if metrics == "" {
		return 0
	}
	resp, err := http.Get("http://" + metrics + "/bkcache/status")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var st struct {
		Counters map[string]int64 `json:"counters"`
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return 0
	}
	return st.Counters["blobFileServes"]
}

// envInts reads a comma-separated list of positive numbers, or def.
func envInts(b *testing.B, key string, def []int) []int {
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(f), "%d", &n); err != nil || n < 1 {
			b.Fatalf("%s=%q: want numbers like 8,32", key, s)
		}
		out = append(out, n)
	}
	return out
}
