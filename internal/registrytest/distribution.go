package registrytest

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Distribution is a real distribution 2.8 registry (Debian's docker-registry,
// the code registry:2 runs) as a process on 127.0.0.1.
type Distribution struct {
	Addr    string
	RootDir string
	cmd     *exec.Cmd
	log     bytes.Buffer
}

// DistributionOption configures StartDistribution.
type DistributionOption func(*distConfig)

type distConfig struct {
	htpasswd string
	port     int
	root     string
}

// WithHtpasswd makes the registry require basic auth from this htpasswd file.
func WithHtpasswd(path string) DistributionOption {
	return func(c *distConfig) { c.htpasswd = path }
}

// WithPort listens on a given port (to restart a registry where it was).
func WithPort(port int) DistributionOption { return func(c *distConfig) { c.port = port } }

// WithRoot keeps the storage in dir (to restart a registry with its data).
func WithRoot(dir string) DistributionOption { return func(c *distConfig) { c.root = dir } }

// DistributionBinary is where Debian's docker-registry package puts the registry.
const DistributionBinary = "/usr/bin/docker-registry"

// StartDistribution runs /usr/bin/docker-registry until the test ends. It fails
// the test (never skips) when the binary is missing: install docker-registry.
func StartDistribution(t testing.TB, opts ...DistributionOption) *Distribution {
	t.Helper()
	var c distConfig
	for _, o := range opts {
		o(&c)
	}
	if _, err := os.Stat(DistributionBinary); err != nil {
		t.Fatalf("%s is missing: apt-get install docker-registry (scripts/setup.sh --test does it)", DistributionBinary)
	}
	if c.root == "" {
		c.root = t.TempDir()
	}
	if c.port == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	d := &Distribution{Addr: "127.0.0.1:" + strconv.Itoa(c.port), RootDir: c.root}
	cfg := fmt.Sprintf("version: 0.1\nlog: {level: info, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}\nhttp: {addr: %s}\n", c.root, d.Addr)
	if c.htpasswd != "" {
		cfg += fmt.Sprintf("auth: {htpasswd: {realm: registrytest, path: %s}}\n", c.htpasswd)
	}
	cfgPath := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(DistributionBinary, "serve", cfgPath)
	d.cmd.Stdout, d.cmd.Stderr = &d.log, &d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", DistributionBinary, err)
	}
	t.Cleanup(d.Stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + d.Addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry on %s did not start: %v\n%s", d.Addr, err, d.log.String())
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// Stop kills the registry (as a crash would) and waits for it; safe to call twice.
func (d *Distribution) Stop() {
	if d.cmd.Process != nil && d.cmd.ProcessState == nil {
		d.cmd.Process.Kill()
		d.cmd.Wait()
	}
}
