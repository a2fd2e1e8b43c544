//go:build e2e

package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/registrytest"
	"github.com/bkcache/bkcache/pkg/cache"
)

// The first mistakes a new user makes, each answered with its fix, through
// the real docker CLI.

func TestMistakeUnknownOrMissingCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"bkcache", "stauts"}, []string{`unknown command "stauts"`, "did you mean status?", "docker bkcache --help"}},
		{[]string{"bkcache"}, []string{"docker bkcache needs a command", "docker bkcache --help"}},
		{[]string{"bkcache", "up", "nb1"}, []string{"takes no arguments", "did you mean --name nb1?"}},
	} {
		r := runDocker(t, "", tc.args...)
		if r.code == 0 {
			t.Errorf("docker %s exited 0, want an error:\n%s", strings.Join(tc.args, " "), r)
		}
		for _, w := range tc.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("docker %s: stderr lacks %q:\n%s", strings.Join(tc.args, " "), w, r)
			}
		}
	}
	// Asking for help is no mistake.
	for _, args := range [][]string{{"bkcache", "--help"}, {"bkcache", "help"}, {"bkcache", "help", "up"}, {"help", "bkcache"}} {
		r := runDocker(t, "", args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage:  docker bkcache") {
			t.Errorf("docker %s: want the usage and exit 0:\n%s", strings.Join(args, " "), r)
		}
	}
}

// A user outside the docker group: the engine runs, its socket refuses them.
func TestMistakeNoPermissionOnTheDockerSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test runs the CLI as user nobody: run it as root (make test does)")
	}
	// nobody must be able to read the plugin: a directory of its own, 0755.
	dir, err := os.MkdirTemp("", "bkcache-e2e-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	plugin, err := os.ReadFile(filepath.Join(dockerConfig, "cli-plugins", "docker-bkcache"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "cli-plugins"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cli-plugins", "docker-bkcache"), plugin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"bkcache", "status"}, {"bkcache", "up", "--name", "bkt-nobody", "--pull", "never"}} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, "docker", args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "DOCKER_CONFIG=" + dir}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		cancel()
		if err == nil {
			t.Errorf("docker %s as nobody succeeded, want a refusal:\n%s", strings.Join(args, " "), out.String())
		}
		for _, w := range []string{"no permission to use the Docker engine", "docker group", "sudo"} {
			if !strings.Contains(errb.String(), w) {
				t.Errorf("docker %s as nobody: stderr lacks %q:\n%s", strings.Join(args, " "), w, errb.String())
			}
		}
		if strings.Contains(errb.String(), "systemctl start docker") {
			t.Errorf("docker %s as nobody tells to start dockerd, which runs:\n%s", strings.Join(args, " "), errb.String())
		}
	}
}

// engineView is a Docker engine socket that shows only the named caches'
// containers in container lists (and passes everything else through), so a
// test sees the engine as a host with just those caches, whatever other
// tests run beside it on the shared engine. It returns a DOCKER_HOST value.
func engineView(t *testing.T, names ...string) string {
	t.Helper()
	keep := map[string]bool{}
	for _, n := range names {
		keep["/"+cache.ContainerName(n)] = true
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host = "http", "docker"
		},
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", "/var/run/docker.sock")
		}},
		ModifyResponse: func(resp *http.Response) error {
			if !strings.HasSuffix(resp.Request.URL.Path, "/containers/json") || resp.StatusCode != http.StatusOK {
				return nil
			}
			var list []map[string]any
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			if err := json.Unmarshal(body, &list); err != nil {
				return err
			}
			var kept []map[string]any
			for _, c := range list {
				ns, _ := c["Names"].([]any)
				for _, n := range ns {
					if s, _ := n.(string); keep[s] {
						kept = append(kept, c)
						break
					}
				}
			}
			if kept == nil {
				kept = []map[string]any{}
			}
			out, _ := json.Marshal(kept)
			resp.Body = io.NopCloser(bytes.NewReader(out))
			resp.ContentLength = int64(len(out))
			resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
			return nil
		},
	}
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "unix://" + sock
}

// runDockerOn runs the docker CLI against the engine at host (DOCKER_HOST).
func runDockerOn(t *testing.T, host string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+dockerConfig, "DOCKER_HOST="+host)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return result{out.String(), errb.String(), code}
}

// One cache of any name is used by verify, logs and down without naming it;
// with several, each lists them and says how to name one; an IMAGE naming a
// cache's address picks that cache.
func TestMistakeCacheNotNamed(t *testing.T) {
	up := registrytest.Start(t)
	img, err := registrytest.Image(1, 64*1024, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Push("blueking/first:1", img); err != nil {
		t.Fatal(err)
	}
	a, b := newTestCache(t), newTestCache(t)
	mustDocker(t, a.upArgs(up.URL)...)

	// A host with one cache (not named bkhub).
	one := engineView(t, a.name)
	if r := runDockerOn(t, one, "bkcache", "verify", "blueking/first:1"); r.code != 0 || !strings.Contains(r.stdout, a.addr()+"/blueking/first:1") {
		t.Errorf("verify with one cache %s did not use it:\n%s", a.name, r)
	}
	if r := runDockerOn(t, one, "bkcache", "logs", "--tail", "5"); r.code != 0 {
		t.Errorf("logs with one cache %s did not use it:\n%s", a.name, r)
	}

	// Two caches of the same upstream.
	mustDocker(t, b.upArgs(up.URL)...)
	two := engineView(t, a.name, b.name)
	for _, args := range [][]string{
		{"bkcache", "verify", "blueking/first:1"},
		{"bkcache", "logs"},
		{"bkcache", "down"},
		{"bkcache", "prune", "--unused-for", "30d", "--yes"},
	} {
		r := runDockerOn(t, two, args...)
		if r.code == 0 {
			t.Errorf("docker %s with two caches exited 0:\n%s", strings.Join(args, " "), r)
		}
		for _, w := range []string{"2 caches on this engine", a.name + " (" + up.URL + " on " + a.addr() + ")", b.name + " (", "name one with"} {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("docker %s with two caches: stderr lacks %q:\n%s", strings.Join(args, " "), w, r)
			}
		}
	}
	// IMAGE naming b's address picks b, on the real engine with whatever else runs.
	r := mustDocker(t, "bkcache", "verify", "-o", "json", b.addr()+"/blueking/first:1")
	var res []cache.VerifyResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res) != 1 || !strings.HasPrefix(res[0].Via, b.addr()+"/") {
		t.Errorf("verify %s/blueking/first:1 did not go through cache %s: %v\n%s", b.addr(), b.name, err, r)
	}
	// IMAGE naming the upstream both proxy: which one is for the user to say.
	upHost := strings.TrimPrefix(up.URL, "http://")
	amb := runDockerOn(t, two, "bkcache", "verify", upHost+"/blueking/first:1")
	if amb.code == 0 || !strings.Contains(amb.stderr, "several caches proxy "+upHost) || !strings.Contains(amb.stderr, "--cache NAME") {
		t.Errorf("verify of an upstream two caches proxy:\n%s", amb)
	}
	// warm without --cache does not pick one of them silently.
	list := filepath.Join(t.TempDir(), "images.txt")
	os.WriteFile(list, []byte(upHost+"/blueking/first:1\n"), 0o644)
	w := runDocker(t, "", "bkcache", "warm", "-f", list)
	if w.code == 0 || !strings.Contains(w.stderr, "several caches proxy "+upHost) || !strings.Contains(w.stderr, a.name) || !strings.Contains(w.stderr, b.name) || !strings.Contains(w.stderr, "--cache NAME") {
		t.Errorf("warm with two caches of one upstream:\n%s", w)
	}

	// down of the only cache, unnamed.
	mustDocker(t, "bkcache", "down", b.name)
	if r := runDockerOn(t, one, "bkcache", "down"); r.code != 0 || !strings.Contains(r.stdout, "cache "+a.name+": container proxy-"+a.name+" removed") {
		t.Errorf("down with one cache %s did not remove it:\n%s", a.name, r)
	}
}

// A typo in a warm list is not a broken link: no retry advice.
func TestMistakeWarmImageNotFound(t *testing.T) {
	up := registrytest.Start(t)
	img, err := registrytest.Image(1, 64*1024, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Push("blueking/there:1", img); err != nil {
		t.Fatal(err)
	}
	c := newTestCache(t)
	mustDocker(t, c.upArgs(up.URL)...)
	host := strings.TrimPrefix(up.URL, "http://")
	list := filepath.Join(t.TempDir(), "images.txt")
	os.WriteFile(list, []byte(host+"/blueking/there:1\n"+host+"/blueking/there:1.0-typo\n"), 0o644)
	r := runDocker(t, "", "bkcache", "warm", "-f", list, "--cache", c.name)
	if r.code == 0 {
		t.Fatalf("warm of a missing tag exited 0:\n%s", r)
	}
	all := r.stdout + r.stderr
	for _, w := range []string{"blueking/there:1.0-typo", "not found upstream: check the name and tag", "1 images were not found upstream", "warmed  " + c.addr() + "/blueking/there:1\n"} {
		if !strings.Contains(all, w) {
			t.Errorf("warm output lacks %q:\n%s", w, r)
		}
	}
	if strings.Contains(all, "run the same command again") {
		t.Errorf("warm advises a retry for a tag that does not exist:\n%s", r)
	}
}

// Ctrl-C during warm: the images listed as warmed are the ones that were.
func TestMistakeWarmInterrupted(t *testing.T) {
	up := registrytest.Start(t)
	small, err := registrytest.Image(1, 32*1024, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	big, err := registrytest.Image(2, 8<<20, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Push("blueking/small:1", small); err != nil {
		t.Fatal(err)
	}
	if _, err := up.Push("blueking/big:1", big); err != nil {
		t.Fatal(err)
	}
	slow := slowProxy(t, up.URL, 256<<10) // 16 MiB at 256 KiB/s: about a minute
	c := newTestCache(t)
	mustDocker(t, c.upArgs("http://"+slow)...)
	tmp := t.TempDir()
	list := filepath.Join(tmp, "images.txt")
	os.WriteFile(list, []byte(slow+"/blueking/small:1\n"+slow+"/blueking/big:1\n"), 0o644)
	stored := func() bool { return allStored(c.dataDir, "blueking/small", small) }
	r := interruptedWhen(t, tmp, "the small image stored", stored, 500*time.Millisecond, true,
		"bkcache", "warm", "-f", list, "--cache", c.name)
	t.Logf("warm, interrupted:\n%s", r)
	if r.code != 130 {
		t.Errorf("warm interrupted: exit %d, want 130\n%s", r.code, r)
	}
	if strings.Contains(r.stderr, "warmed  "+c.addr()+"/blueking/big:1") {
		t.Errorf("warm says the big image was warmed, but it was interrupted:\n%s", r)
	}
	warmed := regexp.MustCompile(`(?m)^warmed  `).FindAllString(r.stderr, -1)
	if want := "interrupted: " + strconv.Itoa(len(warmed)) + " of 2 images were warmed"; !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r)
	}
	if strings.Contains(r.stdout, "cache "+c.name+" (") || strings.Contains(r.stdout, "FAILED") {
		t.Errorf("an interrupted warm printed a summary or failures as if it had ended:\n%s", r)
	}
}

// allStored says whether the cache's storage holds every blob of img for repo.
func allStored(dataDir, repo string, img interface {
	RawManifest() ([]byte, error)
}) bool {
	raw, err := img.RawManifest()
	if err != nil {
		return false
	}
	var m struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	digests := []string{m.Config.Digest}
	for _, l := range m.Layers {
		digests = append(digests, l.Digest)
	}
	for _, d := range digests {
		hex := strings.TrimPrefix(d, "sha256:")
		if _, err := os.Stat(filepath.Join(dataDir, "docker/registry/v2/repositories", repo, "_layers/sha256", hex, "link")); err != nil {
			return false
		}
	}
	return true
}

// A typo in --upstream at the first up: the cache starts, loudly in outage mode.
func TestMistakeUpstreamAnswersNothingAtFirstUp(t *testing.T) {
	c := newTestCache(t)
	dead := "http://127.0.0.1:" + strconv.Itoa(freePort(t))
	r := runDocker(t, "", c.upArgs(dead)...)
	if r.code != 0 {
		t.Fatalf("up with a dead upstream: %s", r)
	}
	for _, w := range []string{"WARNING: cache " + c.name + ": upstream " + dead + " did not answer", "OUTAGE MODE", "nothing: it is new", "check --upstream"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("up stderr lacks %q:\n%s", w, r)
		}
	}
	// A later up of the same cache says it again: the cache still cannot pull.
	again := runDocker(t, "", c.upArgs(dead)...)
	if !strings.Contains(again.stderr, "OUTAGE MODE") || strings.Contains(again.stderr, "nothing: it is new") {
		t.Errorf("second up with the upstream still dead:\n%s", again)
	}
}

// status -o json of a front cache does not carry the plain layout's note
// that blob counters are missing: the front has them.
func TestMistakeStatusNoteOfAFrontCache(t *testing.T) {
	up := registrytest.Start(t)
	c := newTestCache(t)
	mustDocker(t, c.upArgs(up.URL)...)
	r := mustDocker(t, "bkcache", "status", c.name, "-o", "json")
	if strings.Contains(r.stdout, "no usable blob counters") {
		t.Errorf("status -o json of a front cache says registry:2 has no blob counters beside the front's:\n%s", r.stdout)
	}
	var sts []cache.Status
	if err := json.Unmarshal([]byte(r.stdout), &sts); err != nil || len(sts) != 1 || sts[0].Front == nil {
		t.Errorf("status -o json: %v\n%s", err, r.stdout)
	}
}

// A push that finds every image at the target says so instead of "copied".
func TestMistakeNoOpPushSaysPresent(t *testing.T) {
	src := registrytest.Start(t)
	dst := registrytest.Start(t)
	img, err := registrytest.Image(1, 64*1024, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Push("blueking/app:1", img); err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(t.TempDir(), "images.txt")
	os.WriteFile(list, []byte(strings.TrimPrefix(src.URL, "http://")+"/blueking/app:1\n"), 0o644)
	to := strings.TrimPrefix(dst.URL, "http://")
	first := mustDocker(t, "bkcache", "push", "-f", list, "--to", to, "--insecure")
	if !strings.Contains(first.stderr, "copied  ") || !strings.Contains(first.stdout, "copied 1 of 1 images") {
		t.Errorf("first push:\n%s", first)
	}
	second := mustDocker(t, "bkcache", "push", "-f", list, "--to", to, "--insecure")
	if strings.Contains(second.stderr, "copied  ") || !strings.Contains(second.stderr, "already at the target") ||
		!strings.Contains(second.stdout, "copied 0 of 1 images to "+to+" (1 already there, unchanged)") {
		t.Errorf("second push of the same image:\n%s", second)
	}
	if slices.Contains(strings.Fields(second.stdout), "MiB") {
		t.Errorf("push summary in MiB, progress in docker's MB:\n%s", second)
	}
}

// load --cache names its targets where nodes will pull them, not at the
// storage writer's private address.
func TestMistakeLoadIntoCacheShowsTheCachesAddress(t *testing.T) {
	up := registrytest.Start(t)
	img, err := registrytest.Image(1, 64*1024, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Push("blueking/app:1", img); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	list := filepath.Join(tmp, "images.txt")
	os.WriteFile(list, []byte(strings.TrimPrefix(up.URL, "http://")+"/blueking/app:1\n"), 0o644)
	archive := filepath.Join(tmp, "bk.tar")
	mustDocker(t, "bkcache", "save", "-f", list, "-o", archive)
	c := newTestCache(t)
	mustDocker(t, c.upArgs(up.URL)...)
	l := mustDocker(t, "bkcache", "load", "-i", archive, "--cache", c.name, "-o", "json")
	if strings.Contains(l.stdout+l.stderr, "localhost/") || !strings.Contains(l.stdout, `"target": "`+c.addr()+`/blueking/app:1"`) {
		t.Errorf("load --cache should name the target at the cache's address %s:\n%s", c.addr(), l)
	}
}
