//go:build e2e

package docker

import (
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/registrytest"
)

func TestDownAndPurge(t *testing.T) {
	up := registrytest.Start(t)
	c := newTestCache(t)
	mustDocker(t, c.upArgs(up.URL)...)
	cfg := filepath.Join(c.configDir, c.name+".yaml")

	// Without a terminal to ask and without --yes, --purge refuses and removes nothing.
	r := runDocker(t, "", "bkcache", "down", "--purge", c.name)
	if r.code == 0 || !strings.Contains(r.stderr, "--yes") {
		t.Errorf("down --purge without --yes from a pipe should refuse:\n%s", r)
	}
	if exec.Command("docker", "inspect", "proxy-"+c.name).Run() != nil {
		t.Fatalf("a refused purge removed the container")
	}

	mustDocker(t, "bkcache", "down", c.name)
	if exec.Command("docker", "inspect", "proxy-"+c.name).Run() == nil {
		t.Errorf("down left container proxy-%s", c.name)
	}
	if _, err := os.Stat(cfg); err != nil {
		t.Errorf("down without --purge removed the config: %v", err)
	}
	again := mustDocker(t, "bkcache", "down", c.name)
	if !strings.Contains(again.stdout, "already gone") {
		t.Errorf("second down:\n%s", again)
	}

	// Another upstream changes the registry config: the old one is kept as .bak.
	mustDocker(t, c.upArgs(registrytest.Start(t).URL)...)
	if _, err := os.Stat(cfg + ".bak"); err != nil {
		t.Errorf("a changed config was not backed up: %v", err)
	}
	p := mustDocker(t, "bkcache", "down", "--purge", "--yes", "--config-dir", c.configDir, c.name)
	front := filepath.Join(c.configDir, c.name+".front")
	for _, path := range []string{cfg, cfg + ".bak", front, c.dataDir} {
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("down --purge left %s (%v):\n%s", path, err, p)
		}
	}
	if exec.Command("docker", "inspect", "proxy-"+c.name).Run() == nil {
		t.Errorf("down --purge left the container")
	}
}

// registry:2 proxies one remote: two upstreams are two caches from one file,
// one of them with credentials from a 0600 file.
func TestTwoUpstreamsFromFile(t *testing.T) {
	hub := registrytest.Start(t)
	private := registrytest.Start(t, registrytest.WithTokenAuth("bkuser", "pa55-Two-Upstreams"))
	img1, _ := registrytest.Image(1, 128*1024, "amd64")
	img2, _ := registrytest.Image(1, 128*1024, "amd64")
	if _, err := hub.Push("blueking/one:1", img1); err != nil {
		t.Fatal(err)
	}
	if _, err := private.Push("team/two:1", img2); err != nil {
		t.Fatal(err)
	}
	a, b := newTestCache(t), newTestCache(t)
	dir := t.TempDir()
	cred := filepath.Join(dir, "private.yaml")
	os.WriteFile(cred, []byte("username: bkuser\npassword: pa55-Two-Upstreams\n"), 0o600)
	file := filepath.Join(dir, "caches.yaml")
	os.WriteFile(file, []byte(`caches:
- name: `+a.name+`
  upstream: `+hub.URL+`
  port: `+itoa(a.port)+`
  metricsPort: `+itoa(a.metricsPort)+`
  dataDir: `+a.dataDir+`
- name: `+b.name+`
  upstream: `+private.URL+`
  port: `+itoa(b.port)+`
  metricsPort: `+itoa(b.metricsPort)+`
  dataDir: `+b.dataDir+`
  credentials: `+cred+`
`), 0o644)
	r := mustDocker(t, "bkcache", "up", "-f", file, "--network", "host", "--image", registryImage, "--pull", "never", "--config-dir", a.configDir)
	if strings.Count(r.stdout, ": created") != 2 {
		t.Fatalf("up -f did not create both caches:\n%s", r)
	}
	for _, v := range [][2]string{{a.name, "blueking/one:1"}, {b.name, "team/two:1"}} {
		out := mustDocker(t, "bkcache", "verify", "--cache", v[0], v[1])
		if !strings.Contains(out.stdout, "ok: the warm pass") {
			t.Errorf("cache %s does not serve %s:\n%s", v[0], v[1], out)
		}
	}
	if strings.Contains(r.stdout+r.stderr, "pa55-Two-Upstreams") {
		t.Errorf("up printed the upstream password")
	}
}

func TestErrorsSayWhatToDo(t *testing.T) {
	up := registrytest.Start(t, registrytest.WithTokenAuth("bkuser", "right-password"))
	c := newTestCache(t)

	wrong := runDocker(t, "wrong-password\n", append(c.upArgs(up.URL), "--username", "bkuser", "--password-stdin")...)
	if wrong.code == 0 || !strings.Contains(wrong.stderr, `rejected the credentials of user "bkuser"`) {
		t.Errorf("wrong password:\n%s", wrong)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port
	args := c.upArgs(up.URL, "--username", "bkuser", "--password-stdin")
	for i := range args {
		if args[i] == "--port" {
			args[i+1] = itoa(busy)
		}
	}
	inUse := runDocker(t, "right-password\n", args...)
	if inUse.code == 0 || !strings.Contains(inUse.stderr, "port "+itoa(busy)+" is in use") || !strings.Contains(inUse.stderr, "--port") {
		t.Errorf("port in use:\n%s", inUse)
	}

	// A port another bkcache cache holds names that cache and how to free it.
	holder := newTestCache(t)
	hold := runDocker(t, "right-password\n", append(holder.upArgs(up.URL), "--username", "bkuser", "--password-stdin")...)
	if hold.code != 0 {
		t.Fatalf("up of the holder: %s", hold)
	}
	taken := c.upArgs(up.URL, "--username", "bkuser", "--password-stdin")
	for i := range taken {
		if taken[i] == "--port" {
			taken[i+1] = itoa(holder.port)
		}
	}
	byCache := runDocker(t, "right-password\n", taken...)
	if byCache.code == 0 || !strings.Contains(byCache.stderr, "in use by container proxy-"+holder.name) || !strings.Contains(byCache.stderr, "docker bkcache down "+holder.name) {
		t.Errorf("port held by another cache:\n%s", byCache)
	}

	missing := runDocker(t, "right-password\n", append(withoutFlag(c.upArgs(up.URL), "--image"), "--image", "bkcache.local/missing:0", "--username", "bkuser", "--password-stdin")...)
	if missing.code == 0 || !strings.Contains(missing.stderr, "bkcache.local/missing:0 is not on this Docker engine") || !strings.Contains(missing.stderr, "--image") {
		t.Errorf("missing image:\n%s", missing)
	}

	// An unreachable upstream: TestFrontStartsWithoutItsUpstream.

	bad := runDocker(t, "", c.upArgs("https://hub.bktencent.com/some/path")...)
	if bad.code == 0 || !strings.Contains(bad.stderr, "ignores a path") {
		t.Errorf("upstream URL with a path:\n%s", bad)
	}
	file := filepath.Join(t.TempDir(), "a-file")
	os.WriteFile(file, nil, 0o644)
	unwritable := runDocker(t, "right-password\n", append(withoutFlag(c.upArgs(up.URL), "--config-dir"), "--config-dir", file+"/etc", "--username", "bkuser", "--password-stdin")...)
	if unwritable.code == 0 || !strings.Contains(unwritable.stderr, "cannot create directory "+file+"/etc") || !strings.Contains(unwritable.stderr, "--config-dir") {
		t.Errorf("unwritable config dir:\n%s", unwritable)
	}

	noEngine := exec.Command("docker", "bkcache", "status")
	noEngine.Env = append(os.Environ(), "DOCKER_CONFIG="+dockerConfig, "DOCKER_HOST=unix:///nonexistent/docker.sock")
	out, err := noEngine.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cannot reach the Docker engine at unix:///nonexistent/docker.sock") {
		t.Errorf("Docker unreachable: %v\n%s", err, out)
	}

	noUser := runDocker(t, "pw\n", append(c.upArgs(up.URL), "--password-stdin")...)
	if noUser.code == 0 || !strings.Contains(noUser.stderr, "--username") {
		t.Errorf("--password-stdin without --username:\n%s", noUser)
	}
}

func TestSecretsStayInTheConfigFile(t *testing.T) {
	const secret = "S3cret-Never-Shown-7f2a"
	up := registrytest.Start(t, registrytest.WithTokenAuth("bkuser", secret))
	img, _ := registrytest.Image(1, 64*1024, "amd64")
	if _, err := up.Push("blueking/private:1", img); err != nil {
		t.Fatal(err)
	}
	c := newTestCache(t)
	args := append(c.upArgs(up.URL), "--username", "bkuser", "--password-stdin")
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+dockerConfig)
	stdin, _ := cmd.StdinPipe()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// While up waits for its password, no process list shows it: read the
	// list once the plugin's process is in it.
	var ps []byte
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ps, _ = exec.Command("ps", "-eww", "-o", "args").Output()
		if strings.Contains(string(ps), "--password-stdin") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the plugin's process never showed in ps:\n%s", ps)
		}
	}
	stdin.Write([]byte(secret + "\n"))
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("up with credentials: %v\n%s", err, out.String())
	}
	ps2, _ := exec.Command("ps", "-eww", "-o", "args").Output()
	inspect := mustDocker(t, "inspect", "proxy-"+c.name)
	status := mustDocker(t, "bkcache", "status", c.name, "-o", "json")
	logs := mustDocker(t, "bkcache", "logs", c.name)
	verify := mustDocker(t, "bkcache", "verify", "--cache", c.name, "blueking/private:1")
	for what, text := range map[string]string{
		"up output": out.String(), "ps": string(ps) + string(ps2), "docker inspect": inspect.stdout,
		"status": status.stdout, "logs": logs.stdout + logs.stderr, "verify": verify.stdout + verify.stderr,
	} {
		if strings.Contains(text, secret) {
			t.Errorf("the upstream password appears in %s", what)
		}
	}
	cfg := filepath.Join(c.configDir, c.name+".yaml")
	info, err := os.Stat(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("config %s has mode %v, want 0600", cfg, info.Mode().Perm())
	}
	data, _ := os.ReadFile(cfg)
	if !strings.Contains(string(data), secret) {
		t.Errorf("the password is not in the config file, so registry:2 cannot use it")
	}
}

// The cache itself can serve HTTPS and require basic auth from its clients.
func TestTLSAndHtpasswd(t *testing.T) {
	up := registrytest.Start(t)
	c := newTestCache(t)
	dir := t.TempDir()
	cert, key, _ := registrytest.SelfSigned(t, dir)
	htpasswd := writeHtpasswd(t, dir, "client", "client-pw")
	mustDocker(t, c.upArgs(up.URL, "--tls-cert", cert, "--tls-key", key, "--htpasswd", htpasswd)...)

	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := httpc.Get("https://" + c.addr() + "/v2/")
	if err != nil {
		t.Fatalf("cache does not serve HTTPS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /v2/ without credentials = %d, want 401", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+c.addr()+"/v2/", nil)
	req.SetBasicAuth("client", "client-pw")
	resp, err = httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/ with credentials = %d, want 200", resp.StatusCode)
	}
	st := mustDocker(t, "bkcache", "status", c.name)
	if !strings.Contains(st.stdout, " ok ") {
		t.Errorf("status of a TLS+auth cache is not ok:\n%s", st)
	}
}
