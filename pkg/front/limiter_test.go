package front

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// fakeClock runs timers only when the test fires them.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
}

type fakeTimer struct {
	at time.Time
	f  func()
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timers = append(c.timers, fakeTimer{at: c.now.Add(d), f: f})
	return func() bool { return false }
}

// fire moves the clock to the earliest timer and runs it; false when none.
func (c *fakeClock) fire() bool {
	c.mu.Lock()
	if len(c.timers) == 0 {
		c.mu.Unlock()
		return false
	}
	slices.SortFunc(c.timers, func(a, b fakeTimer) int { return a.at.Compare(b.at) })
	t := c.timers[0]
	c.timers = c.timers[1:]
	if t.at.After(c.now) {
		c.now = t.at
	}
	c.mu.Unlock()
	t.f()
	return true
}

// grants records the order in which waiters were let through.
type grants struct {
	mu    sync.Mutex
	order []string
	errs  []error
}

func (g *grants) add(name string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		g.errs = append(g.errs, fmt.Errorf("%s: %w", name, err))
		return
	}
	g.order = append(g.order, name)
}

func (g *grants) len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.order) + len(g.errs)
}

// queued is how many waiters wait in the limiter.
func (l *sharedLimiter) queued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queues[classSmall]) + len(l.queues[classBig])
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Small downloads pass ahead of big ones that wait, but a big one gets a
// grant after bigShareEvery small ones: it never starves. Each waiter asks
// for one burst; the bucket refills one burst per timer.
func TestLimiterSmallFirstBigNeverStarves(t *testing.T) {
	cases := []struct {
		name   string
		asks   []string // in order of arrival; "B…" big, "S…" small; the first one empties the bucket
		cancel string   // a waiter whose context ends before any refill
		want   []string
	}{
		{"smalls overtake a waiting big, then it gets its share",
			[]string{"B1", "B2", "S1", "S2", "S3", "S4", "S5"}, "",
			[]string{"B1", "S1", "S2", "S3", "B2", "S4", "S5"}},
		{"bigs alone are first come first served",
			[]string{"B1", "B2", "B3", "B4"}, "",
			[]string{"B1", "B2", "B3", "B4"}},
		{"smalls alone are first come first served",
			[]string{"S1", "S2", "S3", "S4", "S5"}, "",
			[]string{"S1", "S2", "S3", "S4", "S5"}},
		{"an endless stream of smalls: each big still gets one grant in four",
			[]string{"B1", "B2", "B3", "S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8"}, "",
			[]string{"B1", "S1", "S2", "S3", "B2", "S4", "S5", "S6", "B3", "S7", "S8"}},
		{"a small first in line while a big waits",
			[]string{"S1", "B1", "S2", "S3"}, "",
			[]string{"S1", "S2", "S3", "B1"}},
		{"a waiter that gives up leaves its place",
			[]string{"B1", "B2", "S1", "S2"}, "S1",
			[]string{"B1", "S2", "B2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clk := &fakeClock{now: time.Unix(1000, 0)}
			const burst = 1000
			l := newSharedLimiter(10_000, burst, clk) // one burst per 100 ms
			g := &grants{}
			var wg sync.WaitGroup
			cancels := map[string]context.CancelFunc{}
			for i, name := range c.asks {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				cancels[name] = cancel
				class := classBig
				if name[0] == 'S' {
					class = classSmall
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					g.add(name, l.wait(ctx, burst, class))
				}()
				// In line (or let through) before the next one arrives.
				waitUntil(t, name+" in line", func() bool { return l.queued()+g.len() == i+1 })
			}
			if c.cancel != "" {
				cancels[c.cancel]()
				waitUntil(t, c.cancel+" gone", func() bool { return l.queued()+g.len() == len(c.asks) && g.len() == 2 })
			}
			for g.len() < len(c.asks) {
				before := g.len()
				if !clk.fire() {
					t.Fatalf("no timer armed; granted %v, %d waiting", g.order, l.queued())
				}
				waitUntil(t, "a grant after a refill", func() bool { return g.len() > before })
			}
			wg.Wait()
			want := c.want
			var errs []string
			for _, e := range g.errs {
				errs = append(errs, e.Error())
			}
			if c.cancel != "" && (len(errs) != 1 || errs[0] != c.cancel+": context canceled") {
				t.Errorf("errors %v, want only %s's", errs, c.cancel)
			}
			if c.cancel == "" && len(errs) > 0 {
				t.Errorf("errors %v", errs)
			}
			if !slices.Equal(g.order, want) {
				t.Errorf("grants in order %v, want %v", g.order, want)
			}
		})
	}
}

// The bucket refills at the rate, up to one burst: n bytes wait n/rate.
func TestLimiterRate(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	l := newSharedLimiter(1000, 500, clk)
	start := clk.Now()
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		var err error
		for i := 0; i < 5 && err == nil; i++ {
			err = l.wait(ctx, 500, classBig)
		}
		done <- err
	}()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			// 2500 bytes with a full bucket of 500 at 1000 B/s: 2 s.
			if got := clk.Now().Sub(start); got != 2*time.Second {
				t.Fatalf("2500 bytes took %s of the clock, want 2s", got)
			}
			return
		default:
		}
		if !clk.fire() {
			time.Sleep(time.Millisecond)
		}
	}
}

// A download is small or big by its size, known or declared.
func TestSizedLimitClass(t *testing.T) {
	for _, c := range []struct {
		size  int64
		small bool
	}{{0, false}, {-1, false}, {1, true}, {smallBlobMax, true}, {smallBlobMax + 1, false}, {1 << 30, false}} {
		clk := &fakeClock{now: time.Unix(1000, 0)}
		l := newSharedLimiter(1000, 100, clk)
		l.wait(context.Background(), 100, classBig) //nolint:errcheck // empties the bucket
		v := &sizedLimit{l: l}
		v.size.Store(c.size)
		go v.WaitN(context.Background(), 10) //nolint:errcheck // left waiting
		waitUntil(t, "in line", func() bool { return l.queued() == 1 })
		l.mu.Lock()
		small := len(l.queues[classSmall]) == 1
		l.mu.Unlock()
		if small != c.small {
			t.Errorf("size %d: small %v, want %v", c.size, small, c.small)
		}
		clk.fire()
	}
}

// Through the front on a capped link: while four big layers download, a
// small image takes most of the link (no timing: the bytes the big layers
// got while it was pulled). First come first served, they would get four
// times the small image's bytes; small first, about a third of it.
func TestSmallImageAheadOfBigLayers(t *testing.T) {
	e := newEnv(t, withRate(1<<20)) // bursts of 100 KiB
	small, err := registrytest.Image(1, 900<<10, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	e.push("lib/small:1", small)
	var smallBytes int64
	m, _ := small.Manifest()
	for _, d := range append(m.Layers, m.Config) {
		smallBytes += d.Size
	}
	bigCtx, stopBig := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopBig()
	for i := range 4 {
		repo := fmt.Sprintf("lib/big-%d", i)
		d, _ := oneBlob(t, e, repo, 3<<20)
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(bigCtx, http.MethodGet, "http://"+e.host+blobURLPath(repo, d), nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				io.Copy(io.Discard, resp.Body) //nolint:errcheck // ended by stopBig
				resp.Body.Close()
			}
		}()
	}
	// All four are downloading (and waiting on the cap) first.
	waitFor(t, func() bool { return e.srv.flights.len() == 4 && e.srv.counters.upstreamBytes.Load() > 400<<10 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before := e.srv.counters.upstreamBytes.Load()
	if _, err := e.pull(ctx, "lib/small:1"); err != nil {
		t.Fatal(err)
	}
	bigDuring := e.srv.counters.upstreamBytes.Load() - before - smallBytes
	t.Logf("while the %d-byte image was pulled, the big layers got %d bytes", smallBytes, bigDuring)
	// A third of the small bytes, plus one read each download may have made
	// before waiting on the cap.
	if bigDuring > smallBytes/3+4*(100<<10)+(64<<10) {
		t.Errorf("the big layers got %d bytes while the %d-byte image was pulled: it did not pass ahead", bigDuring, smallBytes)
	}
}
