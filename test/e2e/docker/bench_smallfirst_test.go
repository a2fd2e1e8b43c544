//go:build e2e

package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// BenchmarkFrontSmallFirst measures what "small first on a slow link" is
// for: a cache capped at 5 MiB/s (up --upstream-rate 5M) downloads 4 big
// layers for nodes when a small image (about 1 MB: config and one layer) is
// asked for. It prints the time until the small image is complete and until
// the big layers are, and what the small image would take behind them first
// come first served (its bytes at a fifth of the link, the big layers
// taking the rest).
func BenchmarkFrontSmallFirst(b *testing.B) {
	if b.N > 1 {
		b.Skip("one run is the measurement; use -benchtime 1x")
	}
	const rate, bigSize = 5 << 20, 16 << 20
	dist := registrytest.StartDistribution(b)
	bigs := benchSet(b, dist.Addr, 4, 0, 0, 1, bigSize)
	small := benchSet(b, dist.Addr, 1, 0, 0, 1, 900<<10)
	c := newTestCache(b)
	mustDocker(b, c.upArgs("http://"+dist.Addr, "--upstream-rate", "5M")...)
	defer mustDocker(b, "bkcache", "down", "--purge", "--yes", "--config-dir", c.configDir, c.name)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	var bigDone time.Duration
	var mu sync.Mutex
	for i, ref := range bigs.refs {
		repo := ref[:len(ref)-2]
		d := bigs.layers[i][1].Digest.String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.addr()+"/v2/"+repo+"/blobs/"+d, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body) //nolint:errcheck // timed only
			resp.Body.Close()
			mu.Lock()
			bigDone = max(bigDone, time.Since(start))
			mu.Unlock()
		}()
	}
	// The big layers hold the link first.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		var st struct {
			InFlight int              `json:"inFlight"`
			Counters map[string]int64 `json:"counters"`
		}
		if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/bkcache/status", c.metricsPort)); err == nil {
			json.NewDecoder(resp.Body).Decode(&st) //nolint:errcheck // polled again
			resp.Body.Close()
		}
		if st.InFlight == 4 && st.Counters["upstreamBytes"] > 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the 4 big layers did not start within a minute: %+v", st)
		}
	}
	asked := time.Now()
	wall, _, failed := pullSetConcurrently(b, c.addr(), small, 1)
	wg.Wait()
	if failed > 0 {
		b.Fatalf("the small image failed")
	}
	fifo := time.Duration(float64(small.bytes) / (rate / 5) * float64(time.Second))
	fmt.Fprintf(os.Stderr, "\nsmall first at 5 MiB/s: a %.0f KiB image asked %.1fs into 4 x %d MiB downloads is complete in %.2fs (first come first served: about %.1fs); the big layers end at %.1fs\n",
		float64(small.bytes)/1024, asked.Sub(start).Seconds(), bigSize>>20, wall.Seconds(), fifo.Seconds(), bigDone.Seconds())
}
