package front

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// sharedImages pushes n images built on one two-layer base, one repository
// each, and returns them by repo:tag.
func sharedImages(t *testing.T, e *frontEnv, n int, baseLayer, ownLayer int64) map[string]v1.Image {
	t.Helper()
	base, err := registrytest.Image(2, baseLayer, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	imgs := map[string]v1.Image{}
	for i := range n {
		own, err := registrytest.Image(1, ownLayer, "amd64")
		if err != nil {
			t.Fatal(err)
		}
		img, err := registrytest.WithBase(base, own)
		if err != nil {
			t.Fatal(err)
		}
		repoTag := fmt.Sprintf("blueking/app%d:1", i)
		e.push(repoTag, img)
		imgs[repoTag] = img
	}
	return imgs
}

// N clients each pull every image at once, cold: each distinct blob crosses
// the upstream link once, every client gets the right bytes, and afterwards
// storage links every blob into every repository so a second pull costs no
// blob request upstream.
func TestConcurrentColdPulls(t *testing.T) {
	for _, clients := range []int{8, 32} {
		t.Run(fmt.Sprintf("%d clients", clients), func(t *testing.T) {
			e := newEnv(t)
			imgs := sharedImages(t, e, 4, 512<<10, 256<<10)
			e.relay.ResetLog()
			pullAll := func() {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				var wg sync.WaitGroup
				errs := make(chan error, clients*len(imgs))
				for range clients {
					for repoTag, img := range imgs {
						wg.Add(1)
						go func() {
							defer wg.Done()
							got, err := e.pull(ctx, repoTag)
							if err != nil {
								errs <- err
								return
							}
							if want := blobDigests(t, img); !slices.Equal(got, want) {
								errs <- fmt.Errorf("%s: got blobs %v, want %v", repoTag, got, want)
							}
						}()
					}
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Error(err)
				}
			}
			pullAll()
			if t.Failed() {
				t.FailNow()
			}
			distinct := map[string]bool{}
			for _, img := range imgs {
				for _, d := range blobDigests(t, img) {
					distinct[d] = true
				}
			}
			gets := e.relay.BlobGetsByDigest()
			for d := range distinct {
				if gets[d] != 1 {
					t.Errorf("upstream served %s %d times, want once", d, gets[d])
				}
			}
			if len(gets) != len(distinct) {
				t.Errorf("upstream served %d distinct blobs, the images have %d", len(gets), len(distinct))
			}
			e.settle()
			for repoTag, img := range imgs {
				repo, _, _ := strings.Cut(repoTag, ":")
				for _, d := range blobDigests(t, img) {
					if !e.linked(repo, d) {
						t.Errorf("storage does not link %s into %s", d, repo)
					}
				}
			}
			st := e.status()
			if st.Counters.BlobFetches != int64(len(distinct)) || st.Counters.SharedWaiters == 0 {
				t.Errorf("counters %+v: want %d fetches and some shared waiters", st.Counters, len(distinct))
			}

			e.relay.ResetLog()
			pullAll()
			if n := e.relay.BlobGets(""); n != 0 {
				t.Errorf("a warm pull sent %d blob GETs upstream, want 0", n)
			}
		})
	}
}
