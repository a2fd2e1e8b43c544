package transfer

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// A push whose source connection breaks mid-blob continues with Range from
// the byte it stopped at: the source (the real distribution registry) sends
// each blob's bytes once, the copy is complete and correct, and the report
// counts the resumes.
func TestPushResumesABrokenBlobWithRange(t *testing.T) {
	src := registrytest.StartDistribution(t)
	relay := registrytest.StartRelay(t, "http://"+src.Addr)
	img, err := registrytest.Image(2, 1<<20, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if err := registrytest.PushTo(src.Addr, "blueking/big:1", img); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	var setBytes int64
	const cutAt = 300_000
	for _, l := range layers {
		n, _ := l.Size()
		setBytes += n
		d, _ := l.Digest()
		relay.CutAfter(d.String(), cutAt, 1) // each layer's first GET breaks after cutAt bytes
	}
	cfg, _ := img.RawConfigFile()
	setBytes += int64(len(cfg))
	target := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(target.Close)
	to := strings.TrimPrefix(target.URL, "http://")
	rep, err := Push(context.Background(), entries(t, relay.Addr, "blueking/big:1"), PushOptions{To: to, Insecure: true, SourceInsecure: true})
	if err != nil {
		t.Fatalf("push over a breaking link: %v (%+v)", err, rep)
	}
	want, _ := img.Digest()
	if got := digestAt(t, to+"/blueking/big:1"); got != want {
		t.Errorf("target has %s, want %s", got, want)
	}
	var cuts, ranged int
	for _, q := range relay.Log() {
		if q.Cut {
			cuts++
		}
		if strings.HasPrefix(q.Range, "bytes=300000-") { // open or closed: both resume at the first missing byte
			ranged++
		}
	}
	if cuts != 2 || ranged != 2 {
		t.Errorf("%d cut responses and %d resumed with Range bytes=300000-, want 2 and 2:\n%+v", cuts, ranged, relay.Log())
	}
	if got := relay.BlobBytes(""); got != setBytes {
		t.Errorf("the source sent %d blob bytes for a set of %d: a broken blob was fetched again from zero", got, setBytes)
	}
	if rep.BytesFetched != setBytes || rep.Resumes != 2 || rep.BlobsFetched != 3 {
		t.Errorf("report counts %d bytes, %d resumes, %d blobs; want %d, 2, 3", rep.BytesFetched, rep.Resumes, rep.BlobsFetched, setBytes)
	}
}
