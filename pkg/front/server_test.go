package front

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"bytes"
	"net"
	"os/exec"
	"syscall"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// TestMain lets the test binary run as the front process itself
// (docker-bkcache front …) for the process-level test below.
func TestMain(m *testing.M) {
	if os.Getenv("BKCACHE_TEST_FRONT_MAIN") == "1" {
		os.Exit(Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// The front as a process: it serves, its children's lines reach its stderr
// prefixed, and SIGTERM stops the children and exits 0.
func TestProcessSIGTERM(t *testing.T) {
	e := newEnv(t) // for the config and the upstream; its in-process front is not used
	e.stop()
	img, _ := registrytest.Image(1, 10<<10, "amd64")
	e.push("lib/p:1", img)
	runDir := t.TempDir()
	addr, metrics := freePort(t), freePort(t)
	cmd := exec.Command(os.Args[0], "--registry-config", e.config, "--listen", addr, "--metrics-listen", metrics,
		"--run-dir", runDir, "--registry-bin", registrytest.DistributionBinary, "--upstream-rate", "10M")
	cmd.Env = append(os.Environ(), "BKCACHE_TEST_FRONT_MAIN=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	e.host = addr
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.pull(ctx, "lib/p:1"); err != nil {
		t.Fatalf("pull through the front process: %v\n%s", err, out.String())
	}
	children := childPIDs(t, runDir)
	if len(children) != 2 {
		t.Fatalf("want 2 registry children, found %v", children)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit within 30 s of SIGTERM\n%s", out.String())
	}
	if strings.Contains(out.String(), "not kept") {
		t.Errorf("SIGTERM lost blobs already fetched:\n%s", out.String())
	}
	for _, pid := range children {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("registry child %d still runs", pid)
		}
	}
	log := out.String()
	for _, want := range []string{"bkcache front ", "registry-proxy: ", "fetched blob", "stopping"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

// childPIDs finds the processes serving a config of runDir.
func childPIDs(t *testing.T, runDir string) []int {
	t.Helper()
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, en := range entries {
		var pid int
		if _, err := fmt.Sscanf(en.Name(), "%d", &pid); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", en.Name(), "cmdline"))
		if err == nil && strings.HasPrefix(string(cmdline), registrytest.DistributionBinary) && strings.Contains(string(cmdline), runDir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

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

// A blob stored for one repository is linked into another that asks for it,
// never fetched again; the first pull of an image sharing a base costs only
// its own blobs.
func TestStoredBlobLinkedIntoAnotherRepository(t *testing.T) {
	e := newEnv(t)
	imgs := sharedImages(t, e, 2, 100<<10, 100<<10)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.pull(ctx, "blueking/app0:1"); err != nil {
		t.Fatal(err)
	}
	e.settle()
	e.relay.ResetLog()
	if _, err := e.pull(ctx, "blueking/app1:1"); err != nil {
		t.Fatal(err)
	}
	// app1 shares the two base layers; its config and own layer are new.
	if n := e.relay.BlobGets(""); n != 2 {
		t.Errorf("pulling a second image on the same base sent %d blob GETs upstream, want 2", n)
	}
	e.settle()
	for _, d := range blobDigests(t, imgs["blueking/app1:1"]) {
		if !e.linked("blueking/app1", d) {
			t.Errorf("%s not linked into blueking/app1", d)
		}
	}
	if st := e.status(); st.Counters.BlobLinks != 2 || st.Counters.BlobHits < 2 {
		t.Errorf("counters %+v: want 2 links", st.Counters)
	}

	// A stored blob that no repository links (left by an interrupted upload)
	// is uploaded from storage, not fetched.
	d := blobDigests(t, imgs["blueking/app0:1"])[1]
	layerDir := filepath.Join(e.root, "docker/registry/v2/repositories")
	for _, repo := range []string{"blueking/app0", "blueking/app1"} {
		if err := os.RemoveAll(filepath.Join(layerDir, repo, "_layers/sha256", strings.TrimPrefix(d, "sha256:"))); err != nil {
			t.Fatal(err)
		}
	}
	e.srv.flights.holders = map[string]string{}
	e.relay.ResetLog()
	resp, _, err := e.get(http.MethodGet, "/v2/other/repo/blobs/"+d, nil)
	if err != nil || resp.StatusCode != 200 || e.relay.BlobGets("") != 0 || !e.linked("other/repo", d) {
		t.Errorf("orphan blob: %v %v, upstream GETs %d", err, resp, e.relay.BlobGets(""))
	}
}

// The upstream's error answers reach the client as registry errors.
func TestUpstreamErrorRelayed(t *testing.T) {
	e := newEnv(t)
	img, _ := registrytest.Image(1, 1000, "amd64")
	e.push("lib/x:1", img)
	missing := "sha256:" + strings.Repeat("0", 64)
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		resp, body, err := e.get(method, "/v2/lib/x/blobs/"+missing, nil)
		if err != nil || resp.StatusCode != 404 || (method == http.MethodGet && !strings.Contains(string(body), "BLOB_UNKNOWN")) {
			t.Errorf("%s of a blob the upstream lacks: %v %v %s", method, err, resp, body)
		}
	}
	if st := e.status(); st.Mode != "online" {
		t.Errorf("a 404 turned the front %s", st.Mode)
	}
}
