//go:build cluster

// A dead cache costs a node little: with the cache stopped (connections refused) or gone
// silent (connections never answered), the kubelet's pull still lands, from the upstream.
//
//	go test -tags cluster -run TestNodesCacheDown -v ./cmd/kubectl-bkcache/
package main

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
func silentListener(t *testing.T) string {
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

var pulledIn = regexp.MustCompile(`in ([0-9.]+[mµn]?s) \(`)

// TestNodesCacheDown pulls three images of the same size on the first node: with the cache up,
// stopped, and silent. hosts.toml is what mirror writes (server = the upstream, the cache
// first), except that the test upstream speaks plain http. Every pull must land; the log
// gives how much later than with the cache up.
func TestNodesCacheDown(t *testing.T) {
	env := clustertest.Get(t)
	cs := clientset(t, env)
	ns := testNamespace(t, cs)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	upstream, cache := registrytest.Start(t), registrytest.Start(t)
	for _, tag := range []string{"up", "stopped", "silent"} {
		img, err := registrytest.Image(2, 1<<20, runtime.GOARCH)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []*registrytest.Registry{upstream, cache} {
			if _, err := r.Push("blueking/down:"+tag, img); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeHosts := func(cacheAddr string) {
		t.Helper()
		spec := containerd.HostsSpec{Upstream: upstream.Addr, Cache: containerd.Cache{Host: cacheAddr}}
		if containerd.DialTimeoutSupported(nodeRuntime(t, env)) {
			spec.DialTimeout = containerd.DialTimeout
		}
		b, err := containerd.RenderHosts(spec)
		if err != nil {
			t.Fatal(err)
		}
		b = []byte(strings.Replace(string(b), "https://"+upstream.Addr, "http://"+upstream.Addr, 1))
		p := filepath.Join(env.CertsDir, upstream.Addr, "hosts.toml")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Join(env.CertsDir, upstream.Addr)) })

	pull := func(tag string) time.Duration {
		t.Helper()
		start := time.Now()
		name := "down-" + tag
		createPullPod(t, ctx, cs, ns, env.NodeName, name, upstream.Addr+"/blueking/down:"+tag)
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

	writeHosts(cache.Addr)
	upstreamGets := upstream.BlobGets()
	up := pull("up")
	if upstream.BlobGets() != upstreamGets {
		t.Errorf("with the cache up the node fetched %d blobs from the upstream", upstream.BlobGets()-upstreamGets)
	}

	stoppedAddr := cache.Addr
	cache.Close() // refuses connections from now on
	stopped := pull("stopped")

	writeHosts(silentListener(t))
	silent := pull("silent")
	t.Logf("containerd %s: cache up %s; cache stopped %s (+%s); cache silent %s (+%s); stopped cache was %s",
		nodeRuntime(t, env), up.Round(time.Millisecond), stopped.Round(time.Millisecond), (stopped - up).Round(time.Millisecond),
		silent.Round(time.Millisecond), (silent - up).Round(time.Millisecond), stoppedAddr)
}

// nodeRuntime is the first node's containerRuntimeVersion.
func nodeRuntime(t *testing.T, env clustertest.Env) string {
	t.Helper()
	n, err := clientset(t, env).CoreV1().Nodes().Get(context.Background(), env.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n.Status.NodeInfo.ContainerRuntimeVersion
}
