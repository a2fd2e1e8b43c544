//go:build cluster

package kubectl

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The deployment the benchmark applies: BlueKing-shaped, four releases of two components
// each, every image on the cluster's busybox (so the pods really start) plus a large runtime
// base all images share (BlueKing's images are mostly a common Python/Java base with a thin
// application on top), a layer per release and one per component: 96 + 4×8 + 8×4 = 160 MiB.
var deployReleases = []string{"bk-paas", "bk-iam", "bk-ssm", "bk-job"}

const (
	sharedMiB    = 96
	releaseMiB   = 8
	componentMiB = 4
)

// deploySet is one image set: repo:tag (under the registry) -> image, and its size.
type deploySet struct {
	images map[string]v1.Image
	bytes  int64 // distinct blobs the nodes fetch (not the busybox layer they hold)
}

// randomLayer is an uncompressed layer holding one file of n pseudo-random bytes.
func randomLayer(name string, n int64, seed int64) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "bk/" + name, Mode: 0o644, Size: n, Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := io.CopyN(tw, rand.New(rand.NewSource(seed)), n); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return static.NewLayer(buf.Bytes(), types.DockerUncompressedLayer), nil
}

// busyboxLayer is the cluster's busybox image's layer, uncompressed: the blob every node holds.
func busyboxLayer(tb testing.TB) v1.Layer {
	tb.Helper()
	cache := os.Getenv("BKCACHE_CACHE")
	if cache == "" {
		cache = "/var/cache/bkcache"
	}
	img, err := tarball.ImageFromPath(filepath.Join(cache, "cluster", "images", "busybox.tar"), nil)
	if err != nil {
		tb.Fatalf("the cluster's busybox image: %v", err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		tb.Fatalf("busybox layers: %v (%d)", err, len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		tb.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		tb.Fatal(err)
	}
	return static.NewLayer(b, types.DockerUncompressedLayer)
}

// newDeploySet builds the 8 images of one run under prefix; seed makes its bytes its own.
func newDeploySet(tb testing.TB, busybox v1.Layer, prefix string, seed int64) deploySet {
	tb.Helper()
	must := func(l v1.Layer, err error) v1.Layer {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
		return l
	}
	set := deploySet{images: map[string]v1.Image{}}
	shared := must(randomLayer("shared", sharedMiB<<20, seed))
	set.bytes += sharedMiB << 20
	for i, rel := range deployReleases {
		relLayer := must(randomLayer(rel, releaseMiB<<20, seed*100+int64(i)))
		set.bytes += releaseMiB << 20
		for j, comp := range []string{"api", "web"} {
			own := must(randomLayer(rel+"-"+comp, componentMiB<<20, seed*1000+int64(10*i+j)))
			set.bytes += componentMiB << 20
			img, err := mutate.AppendLayers(empty.Image, busybox, shared, relLayer, own)
			if err != nil {
				tb.Fatal(err)
			}
			img, err = mutate.Config(img, v1.Config{Env: []string{"PATH=/bin"}, Entrypoint: []string{"/bin/sleep", "3600"}})
			if err != nil {
				tb.Fatal(err)
			}
			set.images[fmt.Sprintf("%s/%s-%s:7.2.0", prefix, rel, comp)] = img
		}
	}
	return set
}

// meter is a TCP relay on 127.0.0.1 that counts the bytes it sends back to its clients: one
// per node, so the benchmark sees what each node pulled.
type meter struct {
	Addr string
	ln   net.Listener
	down atomic.Int64
}

func startMeter(tb testing.TB, target string) *meter {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	m := &meter{Addr: ln.Addr().String(), ln: ln}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go m.serve(c, target)
		}
	}()
	return m
}

func (m *meter) serve(c net.Conn, target string) {
	defer c.Close()
	up, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { _, _ = io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }() //nolint:errcheck // the other side ends it
	// Counted as the bytes go: containerd keeps its connections open between pulls.
	_, _ = io.Copy(countingWriter{c, &m.down}, up)
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}
