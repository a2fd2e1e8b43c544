//go:build e2e

package front

import (
	"runtime"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/containerdtest"
	"github.com/bkcache/bkcache/internal/registrytest"
)

// containerd 1.6 through hosts.toml, as nodes pull, while the upstream is a
// black hole: a cached image pulls in ≤ 20 s, an uncached one fails in
// ≤ 45 s; with the link back the uncached one pulls through within 40 s.
func TestContainerdThroughBlackHole(t *testing.T) {
	e := newEnv(t, withRealProbes())
	ctrd := containerdtest.Start(t, "")
	if err := ctrd.WriteHosts(e.relay.Addr, "http://"+freePort(t), "http://"+e.host); err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"cached", "later"} {
		img, err := registrytest.Image(2, 256<<10, runtime.GOARCH)
		if err != nil {
			t.Fatal(err)
		}
		e.push("blueking/hole:"+tag, img)
	}
	pull := func(tag string) (string, error) { return ctrd.Pull("bkcache-test", e.relay.Addr+"/blueking/hole:"+tag) }
	if out, err := pull("cached"); err != nil {
		t.Fatalf("first pull: %v: %s", err, out)
	}
	e.settle()
	if out, err := ctrd.Ctr("-n", "bkcache-test", "images", "rm", "--sync", e.relay.Addr+"/blueking/hole:cached"); err != nil {
		t.Fatalf("images rm: %v: %s", err, out)
	}
	if out, err := ctrd.Ctr("-n", "bkcache-test", "content", "prune", "references"); err != nil {
		t.Logf("content prune: %v: %s", err, out)
	}

	e.relay.BlackHole(true)
	start := time.Now()
	if out, err := pull("cached"); err != nil {
		t.Fatalf("cached image in a black hole: %v: %s", err, out)
	}
	took := time.Since(start)
	t.Logf("cached image in a black hole: %s", took.Round(100*time.Millisecond))
	if took > 20*time.Second {
		t.Errorf("cached image in a black hole took %s, want ≤ 20 s", took)
	}
	start = time.Now()
	if out, err := pull("later"); err == nil {
		t.Errorf("an uncached image pulled from a black hole: %s", out)
	}
	took = time.Since(start)
	t.Logf("uncached image in a black hole failed after %s", took.Round(100*time.Millisecond))
	if took > 45*time.Second {
		t.Errorf("uncached image in a black hole failed after %s, want ≤ 45 s", took)
	}

	e.relay.BlackHole(false)
	back := time.Now()
	for {
		out, err := pull("later")
		if err == nil {
			break
		}
		if time.Since(back) > 40*time.Second {
			t.Fatalf("link back for %s, still no pull: %v: %s", time.Since(back), err, out)
		}
		time.Sleep(time.Second)
	}
	t.Logf("pulled through %s after the link came back", time.Since(back).Round(100*time.Millisecond))
}
