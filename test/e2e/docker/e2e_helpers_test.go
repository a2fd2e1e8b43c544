//go:build e2e

package docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/crypto/bcrypt"
)

// These tests drive the real docker CLI with the plugin installed into a
// temporary DOCKER_CONFIG, against the real Docker engine, with the cache
// container made from a registry:2 image and upstreams on 127.0.0.1.

var (
	dockerConfig  string // temporary DOCKER_CONFIG holding cli-plugins/docker-bkcache
	registryImage string // the registry:2 image tests run (--image)
)

func TestMain(m *testing.M) {
	code, err := setup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e setup failed: %v\n", err)
		os.Exit(1)
	}
	code = m.Run()
	os.RemoveAll(dockerConfig)
	os.Exit(code)
}

func setup() (int, error) {
	if out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		return 1, fmt.Errorf("the Docker engine does not answer (docker version: %v: %s); start dockerd — these tests never skip", err, bytes.TrimSpace(out))
	}
	dir, err := os.MkdirTemp("", "bkcache-e2e-docker-config-")
	if err != nil {
		return 1, err
	}
	dockerConfig = dir
	plugin := filepath.Join(dir, "cli-plugins", "docker-bkcache")
	// Static, as `make build` makes it: the cache container runs it as its front.
	build := exec.Command("go", "build", "-ldflags", "-X github.com/bkcache/bkcache/pkg/version.Version=e2e-test", "-o", plugin, "github.com/bkcache/bkcache/cmd/docker-bkcache")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return 1, fmt.Errorf("build plugin: %w", err)
	}
	registryImage = os.Getenv("BKCACHE_TEST_IMAGE")
	if registryImage == "" {
		registryImage = "bkcache.local/registry:2"
	}
	if exec.Command("docker", "image", "inspect", registryImage).Run() != nil {
		script := filepath.Join(repoRoot(), "scripts", "registry-image.sh")
		out, err := exec.Command(script, registryImage).CombinedOutput()
		if err != nil {
			return 1, fmt.Errorf("build %s with %s: %v: %s", registryImage, script, err, out)
		}
	}
	return 0, nil
}

func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Clean(filepath.Join(wd, "..", "..", ".."))
}

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// docker runs the real docker CLI with the test's plugin directory.
func runDocker(t testing.TB, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+dockerConfig)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return result{out.String(), errb.String(), code}
}

// mustDocker runs docker and fails the test on a non-zero exit.
func mustDocker(t testing.TB, args ...string) result {
	t.Helper()
	r := runDocker(t, "", args...)
	if r.code != 0 {
		t.Fatalf("docker %s: %s", strings.Join(args, " "), r)
	}
	return r
}

func freePort(t testing.TB) int {
	t.Helper()
	return freePorts(t, 1)[0]
}

// handedOut holds every port freePorts gave in this test process: a port
// closed after picking may come back from the kernel for the next pick, and
// two caches given one port clash (they did: two metrics ports in one caches file).
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// freePorts picks n loopback ports free now and never handed out before.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[int]bool{}
	}
	var held []net.Listener // kept open so the kernel offers another port
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	var ports []int
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
		if p := l.Addr().(*net.TCPAddr).Port; !handedOut.ports[p] {
			handedOut.ports[p] = true
			ports = append(ports, p)
		}
	}
	return ports
}

// testCache is one cache a test creates, removed with its files when the test ends.
type testCache struct {
	name, configDir, dataDir string
	port, metricsPort        int
}

func newTestCache(t testing.TB) *testCache {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	root := t.TempDir()
	ports := freePorts(t, 2)
	c := &testCache{
		name:        "bkt-" + hex.EncodeToString(b),
		configDir:   filepath.Join(root, "etc"),
		dataDir:     filepath.Join(root, "data"),
		port:        ports[0],
		metricsPort: ports[1],
	}
	t.Cleanup(func() {
		exec.Command("docker", "rm", "-f", "proxy-"+c.name).Run()
		// The registry writes as root inside the container; the test may not own the files.
		os.RemoveAll(root)
	})
	return c
}

func (c *testCache) addr() string { return "127.0.0.1:" + strconv.Itoa(c.port) }

// upArgs are the flags every test passes: host network so the cache reaches a
// loopback upstream, the local registry image, and the test's own directories.
func (c *testCache) upArgs(upstream string, extra ...string) []string {
	args := []string{"bkcache", "up", "--name", c.name, "--upstream", upstream, "--port", strconv.Itoa(c.port),
		"--network", "host", "--bind", "127.0.0.1", "--image", registryImage, "--pull", "never",
		"--config-dir", c.configDir, "--data-dir", c.dataDir, "--metrics-port", strconv.Itoa(c.metricsPort), "--wait", "30s"}
	return append(args, extra...)
}

// waitStored waits until the cache's storage holds every blob of img for repo:
// registry:2 stores a cold blob in the background after serving it, and links
// it into the repository last.
func waitStored(t testing.TB, dataDir, repo string, img v1.Image) {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	digests := []v1.Hash{m.Config.Digest}
	for _, l := range m.Layers {
		digests = append(digests, l.Digest)
	}
	root := filepath.Join(dataDir, "docker/registry/v2")
	deadline := time.Now().Add(60 * time.Second)
	for _, d := range digests {
		for _, p := range []string{
			filepath.Join(root, "blobs", d.Algorithm, d.Hex[:2], d.Hex, "data"),
			filepath.Join(root, "repositories", repo, "_layers", d.Algorithm, d.Hex, "link"),
		} {
			for {
				if _, err := os.Stat(p); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("cache never stored blob %s of %s (%s)", d, repo, p)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
}

func dockerRmi(t testing.TB, refs ...string) {
	t.Helper()
	args := append([]string{"rmi", "-f"}, refs...)
	exec.Command("docker", args...).Run()
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

// writeHtpasswd writes an htpasswd file (0600) with one bcrypt entry and
// returns its path.
func writeHtpasswd(t testing.TB, dir, user, password string) string {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(p, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
