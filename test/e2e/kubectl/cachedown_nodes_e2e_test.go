//go:build cluster

// A dead cache costs a node little: with the cache stopped (connections refused) or gone
// silent (connections never answered), the kubelet's pull still lands, from the upstream.
//
//	go test -tags cluster -run TestNodesCacheDown -v ./test/e2e/kubectl/
package kubectl

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bkcache/bkcache/internal/clustertest"
	"github.com/bkcache/bkcache/internal/registrytest"
	"github.com/bkcache/bkcache/pkg/containerd"
)

// silentListener is a loopback port that takes no connection: its accept queue (backlog 0,
// room for one) is filled once and never drained, so the kernel drops every later SYN and a
// client's connect hangs until its own dial timeout, as with a host that went away.
func silentListener(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	filler, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("fill the accept queue of %s: %v", addr, err)
	}
	t.Cleanup(func() { filler.Close() })
	if c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond); err == nil {
		c.Close()
		t.Fatalf("%s accepted a second connection: not silent", addr)
	}
	return addr
}

var pulledIn = regexp.MustCompile(`in ([0-9.a-zµ]+) \(`)

// downSetup is an upstream and a cache holding the same images, one per tag, and a way to
// point the first node's hosts.toml for the upstream at a cache address: what mirror writes
// (server = the upstream, the cache first), except that the test upstream speaks plain http.
type downSetup struct {
	upstream, cache *registrytest.Registry
	writeHosts      func(cacheAddr string)
	pull            func(tag string) time.Duration
}

func newDownSetup(t testing.TB, ctx context.Context, env clustertest.Env, tags ...string) *downSetup {
	t.Helper()
	cs := clientset(t, env)
	ns := testNamespace(t, cs)
	d := &downSetup{upstream: registrytest.Start(t), cache: registrytest.Start(t)}
	for _, tag := range tags {
		img, err := registrytest.Image(2, 1<<20, runtime.GOARCH)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []*registrytest.Registry{d.upstream, d.cache} {
			if _, err := r.Push("blueking/down:"+tag, img); err != nil {
				t.Fatal(err)
			}
		}
	}
	up := d.upstream.Addr
	dir := filepath.Join(env.CertsDir, up)
	t.Cleanup(func() { os.RemoveAll(dir) })
	rt := nodeRuntime(t, env)
	d.writeHosts = func(cacheAddr string) {
		t.Helper()
		spec := containerd.HostsSpec{Upstream: up, Cache: containerd.Cache{Host: cacheAddr}}
		if containerd.DialTimeoutSupported(rt) {
			spec.DialTimeout = containerd.DialTimeout
		}
		b, err := containerd.RenderHosts(spec)
		if err != nil {
			t.Fatal(err)
		}
		b = []byte(strings.Replace(string(b), "https://"+up, "http://"+up, 1))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d.pull = func(tag string) time.Duration {
		t.Helper()
		start := time.Now()
		name := "down-" + tag
		createPullPod(t, ctx, cs, ns, env.NodeName, name, up+"/blueking/down:"+tag)
		reason, msg, err := pullEvent(ctx, cs, ns, name)
		if err != nil || reason != "Pulled" {
			t.Fatalf("cache %s: pull = %s %s (%v), want Pulled", tag, reason, msg, err)
		}
		took := time.Since(start)
		if m := pulledIn.FindStringSubmatch(msg); m != nil {
			if d, err := time.ParseDuration(m[1]); err == nil {
				took = d // the kubelet's own measure of the pull
			}
		}
		t.Logf("cache %s: pulled in %s (%s)", tag, took.Round(time.Millisecond), msg)
		return took
	}
	return d
}

// TestNodesCacheDown pulls two images of the same size on the first node, with the cache up
// and with the cache stopped (connections refused): both pulls land, the second from the
// upstream; the log gives how much later.
func TestNodesCacheDown(t *testing.T) {
	env := clustertest.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := newDownSetup(t, ctx, env, "up", "stopped")

	d.writeHosts(d.cache.Addr)
	gets := d.upstream.BlobGets()
	up := d.pull("up")
	if d.upstream.BlobGets() != gets {
		t.Errorf("with the cache up the node fetched %d blobs from the upstream", d.upstream.BlobGets()-gets)
	}
	d.cache.Close() // refuses connections from now on
	gets = d.upstream.BlobGets()
	stopped := d.pull("stopped")
	if d.upstream.BlobGets() == gets {
		t.Errorf("with the cache stopped the node fetched nothing from the upstream")
	}
	t.Logf("%s: cache up %s; cache stopped %s (+%s)", nodeRuntime(t, env), up.Round(time.Millisecond),
		stopped.Round(time.Millisecond), (stopped - up).Round(time.Millisecond))
}

// BenchmarkNodesCacheSilent measures a pull while the cache host is silent (connections never
// answered, as when its machine is gone): containerd waits on every request to the cache for
// its dial timeout (30 s before 2.1; the dial_timeout mirror writes from 2.1 on) before it asks
// the upstream. The pull with the cache up is the baseline.
//
//	go test -tags cluster -run '^$' -bench BenchmarkNodesCacheSilent -benchtime 1x ./test/e2e/kubectl/
func BenchmarkNodesCacheSilent(b *testing.B) {
	env := clustertest.Get(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for i := 0; i < b.N; i++ {
		up, silent := fmt.Sprintf("up%d", i), fmt.Sprintf("silent%d", i)
		d := newDownSetup(b, ctx, env, up, silent)
		d.writeHosts(d.cache.Addr)
		tUp := d.pull(up)
		d.writeHosts(silentListener(b))
		tSilent := d.pull(silent)
		b.ReportMetric(tUp.Seconds(), "s-cache-up")
		b.ReportMetric(tSilent.Seconds(), "s-cache-silent")
		b.Logf("%s: cache up %s; cache silent %s (+%s)", nodeRuntime(b, env), tUp.Round(time.Millisecond),
			tSilent.Round(time.Millisecond), (tSilent - tUp).Round(time.Millisecond))
	}
}

// nodeRuntime is the first node's containerRuntimeVersion.
func nodeRuntime(t testing.TB, env clustertest.Env) string {
	t.Helper()
	n, err := clientset(t, env).CoreV1().Nodes().Get(context.Background(), env.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n.Status.NodeInfo.ContainerRuntimeVersion
}
