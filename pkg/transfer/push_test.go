package transfer

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// seed puts a small BlueKing-shaped set into a real registry: two images built
// on one base (shared layers), and a multi-arch index.
func seed(t *testing.T, addr string) (refs []string, digests map[string]v1.Hash) {
	t.Helper()
	digests = map[string]v1.Hash{}
	base, err := registrytest.Image(2, 200*1024, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		top, _ := registrytest.Image(1, 100*1024, "amd64")
		img, err := registrytest.WithBase(base, top)
		if err != nil {
			t.Fatal(err)
		}
		ref := fmt.Sprintf("blueking/app-%d:1.0.%d", i, i)
		if err := registrytest.PushTo(addr, ref, img); err != nil {
			t.Fatal(err)
		}
		digests[ref], _ = img.Digest()
		refs = append(refs, ref)
	}
	idx, err := registrytest.Index(2, 100*1024)
	if err != nil {
		t.Fatal(err)
	}
	if err := registrytest.PushTo(addr, "library/multi:2", idx); err != nil {
		t.Fatal(err)
	}
	digests["library/multi:2"], _ = idx.Digest()
	refs = append(refs, "library/multi:2")
	return refs, digests
}

func entries(t *testing.T, addr string, refs ...string) []Entry {
	t.Helper()
	var lines []string
	for _, r := range refs {
		lines = append(lines, addr+"/"+r)
	}
	es, errs := ParseList(strings.NewReader(strings.Join(lines, "\n")), name.Insecure)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return es
}

// staticKeychain answers with fixed credentials for one registry.
type staticKeychain struct {
	registry string
	auth     authn.Authenticator
}

func (k staticKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if r.RegistryStr() == k.registry {
		return k.auth, nil
	}
	return authn.Anonymous, nil
}

func htpasswdFile(t *testing.T, user, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "htpasswd")
	os.WriteFile(p, []byte(user+":"+string(h)+"\n"), 0o600)
	return p
}

func digestAt(t *testing.T, ref string, opts ...remote.Option) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Head(r, opts...)
	if err != nil {
		t.Fatalf("HEAD %s: %v", ref, err)
	}
	return d.Digest
}

func TestPushKeepsDigestsAndFetchesEachBlobOnce(t *testing.T) {
	src := registrytest.StartDistribution(t)
	dst := registrytest.StartDistribution(t, registrytest.WithHtpasswd(htpasswdFile(t, "intra", "intra-pw")))
	refs, digests := seed(t, src.Addr)
	keys := staticKeychain{registry: dst.Addr, auth: &authn.Basic{Username: "intra", Password: "intra-pw"}}

	report, err := Push(context.Background(), entries(t, src.Addr, refs...), PushOptions{To: dst.Addr, Insecure: true, SourceInsecure: true, Keychain: keys})
	if err != nil {
		t.Fatalf("push: %v\n%+v", err, report)
	}
	for _, r := range refs {
		got := digestAt(t, dst.Addr+"/"+r, remote.WithAuthFromKeychain(keys))
		if got != digests[r] {
			t.Errorf("%s: target digest %s, source %s", r, got, digests[r])
		}
	}
	// 2 shared base layers + 2 own layers + 2 configs for the apps; 2 x (2 layers + config) for the index.
	if report.BlobsFetched != 12 {
		t.Errorf("fetched %d blobs from the source, want each of the 12 distinct blobs once", report.BlobsFetched)
	}

	again, err := Push(context.Background(), entries(t, src.Addr, refs...), PushOptions{To: dst.Addr, Insecure: true, SourceInsecure: true, Keychain: keys})
	if err != nil || again.BlobsFetched != 0 {
		t.Errorf("re-run fetched %d blobs (err %v), want 0", again.BlobsFetched, err)
	}
}

func TestPushPlatformSubsetAndPrefix(t *testing.T) {
	src := registrytest.StartDistribution(t)
	dst := registrytest.StartDistribution(t)
	seed(t, src.Addr)
	report, err := Push(context.Background(), entries(t, src.Addr, "library/multi:2"), PushOptions{
		To: dst.Addr, Prefix: "mirror", Insecure: true, SourceInsecure: true,
		Platforms: []v1.Platform{{OS: "linux", Architecture: "arm64"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(dst.Addr+"/mirror/library/multi:2", name.Insecure)
	idx, err := remote.Index(ref)
	if err != nil {
		t.Fatalf("no index at the prefixed target: %v", err)
	}
	m, _ := idx.IndexManifest()
	if len(m.Manifests) != 1 || m.Manifests[0].Platform.Architecture != "arm64" {
		t.Errorf("platform subset kept %+v, want only linux/arm64", m.Manifests)
	}
	if report.Images[0].Children != 1 {
		t.Errorf("report: %+v", report.Images[0])
	}
}

func TestPushContinuesPastAFailedImage(t *testing.T) {
	src := registrytest.StartDistribution(t)
	dst := registrytest.StartDistribution(t)
	refs, _ := seed(t, src.Addr)
	list := src.Addr + "/" + refs[0] + "\nnot a reference!\n" + src.Addr + "/blueking/missing:9\n" + src.Addr + "/" + refs[1] + "\n"
	es, errs := ParseList(strings.NewReader(list), name.Insecure)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "line 2") {
		t.Errorf("bad line not reported with its number: %v", errs)
	}
	report, err := Push(context.Background(), es, PushOptions{To: dst.Addr, Insecure: true, SourceInsecure: true})
	if err == nil || report.Failed != 1 {
		t.Fatalf("want exactly one failed image and an error, got %v %+v", err, report)
	}
	for _, r := range report.Images {
		if strings.Contains(r.Source, "missing") != (r.Error != "") {
			t.Errorf("image %s: error %q", r.Source, r.Error)
		}
	}
	digestAt(t, dst.Addr+"/"+refs[1]) // the image after the failed one was copied
}

// The target dies mid-copy; the same command run again completes the set.
func TestPushResumesAfterTargetCrash(t *testing.T) {
	src := registrytest.StartDistribution(t)
	root := t.TempDir()
	dst := registrytest.StartDistribution(t, registrytest.WithRoot(root))
	var refs []string
	for i := 0; i < 6; i++ {
		img, _ := registrytest.Image(2, 1<<20, "amd64")
		ref := fmt.Sprintf("blueking/big-%d:1", i)
		if err := registrytest.PushTo(src.Addr, ref, img); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}
	// A relay that kills the target after some blob bytes went through.
	target, _ := url.Parse("http://" + dst.Addr)
	var sent atomic.Int64
	var once sync.Once
	relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch || r.Method == http.MethodPut {
			if sent.Add(r.ContentLength) > 3<<20 {
				once.Do(dst.Stop)
			}
		}
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	defer relay.Close()
	relayAddr := strings.TrimPrefix(relay.URL, "http://")
	_, err := Push(context.Background(), entries(t, src.Addr, refs...), PushOptions{To: relayAddr, Insecure: true, SourceInsecure: true, Jobs: 2, Backoff: quick})
	if err == nil {
		t.Fatalf("the copy did not notice the target dying")
	}
	port := strings.Split(dst.Addr, ":")[1]
	var p int
	fmt.Sscan(port, &p)
	dst = registrytest.StartDistribution(t, registrytest.WithRoot(root), registrytest.WithPort(p))
	report, err := Push(context.Background(), entries(t, src.Addr, refs...), PushOptions{To: relayAddr, Insecure: true, SourceInsecure: true, Jobs: 2, Backoff: quick})
	if err != nil {
		t.Fatalf("re-run after the crash: %v %+v", err, report)
	}
	for _, r := range refs {
		if digestAt(t, dst.Addr+"/"+r) != digestAt(t, src.Addr+"/"+r) {
			t.Errorf("%s differs after the resumed copy", r)
		}
	}
}

// 429 and 503 from the source are retried.
func TestPushRetriesBusySource(t *testing.T) {
	src := registrytest.StartDistribution(t)
	dst := registrytest.StartDistribution(t)
	refs, _ := seed(t, src.Addr)
	target, _ := url.Parse("http://" + src.Addr)
	// Every manifest and blob request fails once, alternately 429 and 503.
	var mu sync.Mutex
	failed := map[string]bool{}
	var injected atomic.Int64
	relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		first := r.URL.Path != "/v2/" && !failed[r.Method+r.URL.Path]
		failed[r.Method+r.URL.Path] = true
		mu.Unlock()
		if first {
			if injected.Add(1)%2 == 0 {
				http.Error(w, "slow down", http.StatusTooManyRequests)
			} else {
				http.Error(w, "busy", http.StatusServiceUnavailable)
			}
			return
		}
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	defer relay.Close()
	relayAddr := strings.TrimPrefix(relay.URL, "http://")
	if rep, err := Push(context.Background(), entries(t, relayAddr, refs...), PushOptions{To: dst.Addr, Insecure: true, SourceInsecure: true, Backoff: quick}); err != nil {
		t.Fatalf("push through a flaky source: %v %+v", err, rep)
	}
	for _, r := range refs {
		if digestAt(t, dst.Addr+"/"+r) != digestAt(t, src.Addr+"/"+r) {
			t.Errorf("%s differs", r)
		}
	}
	if injected.Load() == 0 {
		t.Errorf("no failure was injected: the test proves nothing")
	}
}

// quick retries keep tests of failures short.
var quick = &remote.Backoff{Duration: 20 * time.Millisecond, Factor: 2, Steps: 4}

func TestPushDryRunCopiesNothing(t *testing.T) {
	src := registrytest.StartDistribution(t)
	dst := registrytest.StartDistribution(t)
	refs, _ := seed(t, src.Addr)
	report, err := Push(context.Background(), entries(t, src.Addr, refs...), PushOptions{To: dst.Addr, Insecure: true, SourceInsecure: true, DryRun: true})
	if err != nil || len(report.Images) != 3 || report.Images[0].Digest == "" {
		t.Fatalf("dry run: %v %+v", err, report)
	}
	ref, _ := name.ParseReference(dst.Addr+"/"+refs[0], name.Insecure)
	if _, err := remote.Head(ref); err == nil {
		t.Errorf("dry run copied %s", refs[0])
	}
}

// Images on one base: the base is uploaded to the target once and mounted into
// the other repositories.
func TestPushMountsSharedLayers(t *testing.T) {
	src := registrytest.StartDistribution(t)
	dst := registrytest.StartDistribution(t)
	base, _ := registrytest.Image(2, 512*1024, "amd64")
	var refs []string
	var distinct int64 // bytes of distinct blobs, manifests included
	seen := map[v1.Hash]bool{}
	for i := 0; i < 4; i++ {
		top, _ := registrytest.Image(1, 64*1024, "amd64")
		img, err := registrytest.WithBase(base, top)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := img.Manifest()
		raw, _ := img.RawManifest()
		distinct += int64(len(raw))
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if !seen[d.Digest] {
				seen[d.Digest] = true
				distinct += d.Size
			}
		}
		ref := fmt.Sprintf("blueking/on-base-%d:1", i)
		if err := registrytest.PushTo(src.Addr, ref, img); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}
	target, _ := url.Parse("http://" + dst.Addr)
	var uploaded, mounts atomic.Int64
	relay := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch || r.Method == http.MethodPut {
			uploaded.Add(r.ContentLength)
		}
		if r.Method == http.MethodPost && r.URL.Query().Get("mount") != "" {
			mounts.Add(1)
		}
		httputil.NewSingleHostReverseProxy(target).ServeHTTP(w, r)
	}))
	defer relay.Close()
	to := strings.TrimPrefix(relay.URL, "http://")
	if _, err := Push(context.Background(), entries(t, src.Addr, refs...), PushOptions{To: to, Insecure: true, SourceInsecure: true, Jobs: 4}); err != nil {
		t.Fatal(err)
	}
	if mounts.Load() < 2*3 {
		t.Errorf("%d mount requests, want the 2 base layers mounted into each of the 3 other repositories", mounts.Load())
	}
	// Any second upload of a base layer (> 512 KiB) would break this bound.
	if up := uploaded.Load(); up > distinct+32*1024 {
		t.Errorf("uploaded %d bytes for %d bytes of distinct blobs: the shared base went up more than once", up, distinct)
	}
	for _, r := range refs {
		if digestAt(t, dst.Addr+"/"+r) != digestAt(t, src.Addr+"/"+r) {
			t.Errorf("%s differs", r)
		}
	}
}
