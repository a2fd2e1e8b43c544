//go:build e2e

package docker

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/bkcache/bkcache/internal/registrytest"
	"github.com/bkcache/bkcache/pkg/cache"
	"github.com/bkcache/bkcache/pkg/transfer"
)

// warmSet pushes three images built on one base, and an index, to up; it
// returns the list file, the amd64 images and the bytes of their distinct blobs.
func warmSet(t *testing.T, up *registrytest.Registry) (list string, imgs []v1.Image, setBytes int64) {
	t.Helper()
	base, _ := registrytest.Image(2, 300*1024, "amd64")
	var lines []string
	seen := map[v1.Hash]bool{}
	add := func(img v1.Image) {
		m, _ := img.Manifest()
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if !seen[d.Digest] {
				seen[d.Digest] = true
				setBytes += d.Size
			}
		}
		imgs = append(imgs, img)
	}
	for i := 0; i < 3; i++ {
		top, _ := registrytest.Image(1, 200*1024, "amd64")
		img, err := registrytest.WithBase(base, top)
		if err != nil {
			t.Fatal(err)
		}
		ref := fmt.Sprintf("blueking/svc-%d:v1", i)
		if _, err := up.Push(ref, img); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, up.Addr+"/"+ref)
		add(img)
	}
	idx, err := up.PushIndex("blueking/multi:v1", 1, 200*1024)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	for _, d := range im.Manifests {
		if d.Platform.Architecture == "amd64" {
			img, _ := idx.Image(d.Digest)
			add(img)
		}
	}
	lines = append(lines, "# the multi-arch one", up.Addr+"/blueking/multi:v1")
	list = filepath.Join(t.TempDir(), "images.txt")
	os.WriteFile(list, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	return list, imgs, setBytes
}

func pullAllWarm(t *testing.T, c *testCache, up *registrytest.Registry, list string) {
	t.Helper()
	data, _ := os.ReadFile(list)
	before := up.BlobGets()
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		ref := c.addr() + strings.TrimPrefix(line, up.Addr)
		t.Cleanup(func() { dockerRmi(t, ref) })
		mustDocker(t, "pull", "-q", ref)
	}
	if n := up.BlobGets() - before; n != 0 {
		t.Errorf("after warm, docker pull through the cache asked the upstream for %d blobs, want 0", n)
	}
}

// A front cache is warmed through its front: the upstream sends each distinct
// blob exactly once, no writer container runs, nodes then pull everything
// from the cache, and off a terminal the progress is one plain line per image.
func TestWarmThroughTheFrontFetchesEachBlobOnce(t *testing.T) {
	up := registrytest.Start(t)
	list, _, setBytes := warmSet(t, up)
	c := newTestCache(t)
	mustDocker(t, c.upArgs(up.URL)...)

	bytesBefore := up.BlobBytes()
	r := mustDocker(t, "bkcache", "warm", "-f", list, "-j", "16", "-o", "json")
	var reps []cache.WarmResult
	if err := json.Unmarshal([]byte(r.stdout), &reps); err != nil {
		t.Fatalf("warm -o json: %v\n%s", err, r)
	}
	if len(reps) != 1 || reps[0].Mode != "front" || reps[0].Images != 4 || reps[0].Cache != c.name {
		t.Errorf("warm report %+v, want 4 images through the front of %s", reps, c.name)
	}
	if got := up.BlobBytes() - bytesBefore; got != setBytes || reps[0].Upstream == nil || reps[0].Upstream.BytesFetched != setBytes {
		t.Errorf("upstream sent %d blob bytes for a set of %d (the front counted %+v): want exactly 1.00x", got, setBytes, reps[0].Upstream)
	}
	if n := strings.Count(r.stderr, "warmed  "); n != 4 || strings.Contains(r.stderr, "\x1b[") {
		t.Errorf("off a terminal warm should print one plain line per image:\n%s", r.stderr)
	}
	if exec := runDocker(t, "", "inspect", "proxy-"+c.name+"-writer"); exec.code == 0 {
		t.Errorf("warm through the front started a storage writer")
	}
	pullAllWarm(t, c, up, list)

	again := mustDocker(t, "bkcache", "warm", "-f", list)
	if !strings.Contains(again.stdout, "(front): 4 images") || !strings.Contains(again.stdout, "0B in 0 blobs from the upstream") {
		t.Errorf("second warm did not skip what the cache holds:\n%s", again)
	}
}

// A cache of registry:2 alone is warmed into its storage: the upstream sends
// each distinct blob exactly once, and nodes then pull everything from the cache.
func TestWarmIntoStorageFetchesEachBlobOnce(t *testing.T) {
	up := registrytest.Start(t)
	list, _, setBytes := warmSet(t, up)
	c := newTestCache(t)
	mustDocker(t, c.upArgs(up.URL, "--plain")...)

	bytesBefore := up.BlobBytes()
	r := mustDocker(t, "bkcache", "warm", "-f", list, "-o", "json")
	var reps []transfer.WarmReport
	if err := json.Unmarshal([]byte(r.stdout), &reps); err != nil {
		t.Fatalf("warm -o json: %v\n%s", err, r)
	}
	if len(reps) != 1 || reps[0].Mode != "storage" || reps[0].Images != 4 {
		t.Errorf("warm report %+v, want 4 images in storage mode", reps)
	}
	if got := up.BlobBytes() - bytesBefore; got != setBytes {
		t.Errorf("upstream sent %d blob bytes for a set of %d: want exactly 1.00x", got, setBytes)
	}
	pullAllWarm(t, c, up, list)

	again := mustDocker(t, "bkcache", "warm", "-f", list, "-o", "json")
	json.Unmarshal([]byte(again.stdout), &reps)
	if len(reps) != 1 || reps[0].BlobsCached != reps[0].Blobs || reps[0].Upstream == nil || reps[0].Upstream.BytesFetched != 0 {
		t.Errorf("second warm did not skip what the cache holds: %+v", reps)
	}
	if exec := runDocker(t, "", "inspect", "proxy-"+c.name+"-writer"); exec.code == 0 {
		t.Errorf("warm left its storage writer container running")
	}
}

func TestWarmThroughProxy(t *testing.T) {
	up := registrytest.Start(t)
	list, _, _ := warmSet(t, up)
	c := newTestCache(t)
	mustDocker(t, c.upArgs(up.URL, "--plain")...)
	// The list comes on stdin, as from kubectl bkcache images.
	data, _ := os.ReadFile(list)
	r := runDocker(t, string(data), "bkcache", "warm", "-f", "-", "--cache", c.name, "--through-proxy")
	if r.code != 0 || !strings.Contains(r.stdout, "(proxy)") {
		t.Fatalf("warm --through-proxy:\n%s", r)
	}
	pullAllWarm(t, c, up, list)
}

func TestWarmReportsImagesNoCacheServes(t *testing.T) {
	up := registrytest.Start(t)
	list, _, _ := warmSet(t, up)
	c := newTestCache(t)
	mustDocker(t, c.upArgs(up.URL)...)
	other := filepath.Join(t.TempDir(), "other.txt")
	data, _ := os.ReadFile(list)
	os.WriteFile(other, append(data, []byte("quay.io/elsewhere/app:1\n")...), 0o644)
	r := runDocker(t, "", "bkcache", "warm", "-f", other)
	if r.code == 0 || !strings.Contains(r.stdout, "quay.io/elsewhere/app:1") || !strings.Contains(r.stdout, "no bkcache cache on this engine proxies quay.io") {
		t.Errorf("an image on an unserved registry was not reported:\n%s", r)
	}
}

func TestPushCopiesAList(t *testing.T) {
	up := registrytest.Start(t)
	list, imgs, _ := warmSet(t, up)
	target := registrytest.StartDistribution(t)
	r := mustDocker(t, "bkcache", "push", "-f", list, "--to", target.Addr, "--prefix", "intra")
	if !strings.Contains(r.stdout, "copied 4 of 4 images") {
		t.Errorf("push output:\n%s", r)
	}
	for i, img := range imgs[:3] {
		want, _ := img.Digest()
		ref, _ := name.ParseReference(fmt.Sprintf("%s/intra/blueking/svc-%d:v1", target.Addr, i), name.Insecure)
		got, err := remote.Head(ref)
		if err != nil || got.Digest != want {
			t.Errorf("%s at the target: %v, %v; want digest %s", ref, got, err, want)
		}
	}
	again := mustDocker(t, "bkcache", "push", "-f", list, "--to", target.Addr, "--prefix", "intra", "-o", "json")
	var rep transfer.Report
	if err := json.Unmarshal([]byte(again.stdout), &rep); err != nil || rep.BlobsFetched != 0 || rep.Failed != 0 {
		t.Errorf("re-run of push fetched blobs again or failed: %v %+v", err, rep)
	}
	bad := runDocker(t, "", "bkcache", "push", "-f", list, "--to", "127.0.0.1:1")
	if bad.code == 0 || !strings.Contains(bad.stdout, "FAILED") {
		t.Errorf("push to a dead registry should fail with a table:\n%s", bad)
	}
}

// The disconnected-site hop: save from the upstream, load into a cache's
// storage; nodes then pull through the cache without the upstream's blobs.
func TestSaveThenLoadIntoCache(t *testing.T) {
	up := registrytest.Start(t)
	list, _, _ := warmSet(t, up)
	archive := filepath.Join(t.TempDir(), "bk-images.tar.zst")
	s := mustDocker(t, "bkcache", "save", "-f", list, "-o", archive, "--zstd", "--platform", "linux/amd64")
	if !strings.Contains(s.stdout, "saved 4 images") {
		t.Errorf("save output:\n%s", s)
	}
	c := newTestCache(t)
	mustDocker(t, c.upArgs(up.URL)...)
	l := mustDocker(t, "bkcache", "load", "-i", archive, "--cache", c.name)
	if !strings.Contains(l.stdout, "loaded 4 of 4 images") {
		t.Errorf("load output:\n%s", l)
	}
	pullAllWarm(t, c, up, list)

	os.Truncate(archive, 1000)
	bad := runDocker(t, "", "bkcache", "load", "-i", archive, "--cache", c.name)
	if bad.code == 0 || !strings.Contains(bad.stderr, "truncated or damaged") {
		t.Errorf("a truncated archive was not refused:\n%s", bad)
	}
}

// The two plugins meet in a pipe: kubectl bkcache images | docker bkcache warm -f -.
func TestImagesPipeIntoWarm(t *testing.T) {
	up := registrytest.Start(t)
	list, _, _ := warmSet(t, up)
	c := newTestCache(t)
	mustDocker(t, c.upArgs(up.URL)...)
	// Manifests that run the set, as a deployment's render would.
	data, _ := os.ReadFile(list)
	var manifests strings.Builder
	for i, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		fmt.Fprintf(&manifests, "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d%d}\nspec:\n  template:\n    spec:\n      containers:\n      - {name: c, image: %q}\n", i, line)
	}
	rendered := filepath.Join(t.TempDir(), "rendered.yaml")
	os.WriteFile(rendered, []byte(manifests.String()), 0o644)

	images := exec.Command(kubectlPlugin(t), "images", "--from-manifests", rendered)
	warm := exec.Command("docker", "bkcache", "warm", "-f", "-", "--cache", c.name)
	warm.Env = append(os.Environ(), "DOCKER_CONFIG="+dockerConfig)
	pipe, err := images.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	warm.Stdin = pipe
	var out strings.Builder
	warm.Stdout, warm.Stderr = &out, &out
	if err := images.Start(); err != nil {
		t.Fatal(err)
	}
	if err := warm.Run(); err != nil {
		t.Fatalf("kubectl bkcache images | docker bkcache warm -f -: %v\n%s", err, out.String())
	}
	if err := images.Wait(); err != nil {
		t.Fatalf("kubectl bkcache images: %v", err)
	}
	if !strings.Contains(out.String(), "4 images") {
		t.Errorf("warm did not get the 4 images from the pipe:\n%s", out.String())
	}
	pullAllWarm(t, c, up, list)
}

// On a terminal, warm shows what docker pull shows: bars with bytes, rate and
// time left per image and for the whole list, drawn in place.
func TestWarmShowsProgressOnATerminal(t *testing.T) {
	dist, relay := frontUpstream(t)
	set := pushSet(t, dist.Addr, "blueking/tty", 3, 1, 2<<20, 1, 1<<20)
	c := newTestCache(t)
	mustDocker(t, c.upArgs(relay.URL)...)
	var lines []string
	for _, r := range set.refs {
		lines = append(lines, relay.Addr+"/"+r)
	}
	list := filepath.Join(t.TempDir(), "images.txt")
	os.WriteFile(list, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	relay.SetRate(2 << 20) // about 3 s: several redraws

	// script(1) gives the plugin a terminal, as an operator's shell does.
	cmd := exec.Command("script", "-qec", "docker bkcache warm -f "+list+" --cache "+c.name, "/dev/null")
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+dockerConfig, "COLUMNS=160", "LINES=40")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("warm on a terminal: %v\n%q", err, out)
	}
	s := string(out)
	for _, want := range []string{"\x1b[2K", "/3 images", "MB/", "B/s", "[=", "warmed  " + c.addr() + "/blueking/tty-0:v1", "(front): 3 images"} {
		if !strings.Contains(s, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, s)
		}
	}
}

var kubectlBuild struct {
	once sync.Once
	path string
	err  error
}

// kubectlPlugin builds kubectl-bkcache once for the tests that pipe it into docker bkcache.
func kubectlPlugin(t *testing.T) string {
	t.Helper()
	kubectlBuild.once.Do(func() {
		kubectlBuild.path = filepath.Join(dockerConfig, "kubectl-bkcache")
		out, err := exec.Command("go", "build", "-o", kubectlBuild.path, "github.com/bkcache/bkcache/cmd/kubectl-bkcache").CombinedOutput()
		if err != nil {
			kubectlBuild.err = fmt.Errorf("build kubectl-bkcache: %v\n%s", err, out)
		}
	})
	if kubectlBuild.err != nil {
		t.Fatal(kubectlBuild.err)
	}
	return kubectlBuild.path
}

// The site set-up from a helmfile: `kubectl bkcache images --upstreams` prints a
// caches file that `docker bkcache up -f` takes as it is (a dry run here: the
// upstreams are public registries this machine cannot reach).
func TestImagesUpstreamsIntoUpDryRun(t *testing.T) {
	tree := filepath.Join(repoRoot(), "pkg/helmfile/testdata/bkdocs/base.yaml.gotmpl")
	out, err := exec.Command(kubectlPlugin(t), "images", "--from-helmfile", tree, "--upstreams", "--cache-host", "10.0.0.5").Output()
	if err != nil {
		t.Fatalf("kubectl bkcache images --upstreams: %v", err)
	}
	caches := filepath.Join(t.TempDir(), "caches.yaml")
	os.WriteFile(caches, out, 0o644)
	configDir := filepath.Join(t.TempDir(), "etc")
	r := mustDocker(t, "bkcache", "up", "-f", caches, "--dry-run", "--config-dir", configDir, "--image", registryImage, "--pull", "never")
	for _, want := range []string{"cache bkhub: would be created", "cache docker-io: would be created", "cache quay-io: would be created", "https://hub.bktencent.com", "https://registry-1.docker.io"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("up -f (--upstreams output) --dry-run lacks %q:\n%s\ncaches file:\n%s", want, r, out)
		}
	}
	if _, err := os.Stat(configDir); !os.IsNotExist(err) {
		t.Errorf("a dry run created %s", configDir)
	}
}
