//go:build e2e

package docker

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// Issue 14: nothing a user types destroys data outside the cache's own files.
// Each test first makes the bad input of a finding, then checks the fixed
// behaviour through the real docker CLI.

// tree lists every file under dir with its content's hash, to prove a command
// left a directory exactly as it was.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		line := rel + " " + d.Type().String()
		if d.Type().IsRegular() {
			data, _ := os.ReadFile(p)
			sum := sha256.Sum256(data)
			line += " " + hex.EncodeToString(sum[:8])
		}
		lines = append(lines, line)
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// Finding 1: save -o /dev/null turned the host's /dev/null into a file, after downloading everything.
func TestSaveRefusesADeviceOrDirectoryBeforeDownloading(t *testing.T) {
	up := registrytest.Start(t)
	img, _ := registrytest.Image(2, 256*1024, "amd64")
	if _, err := up.Push("blueking/app:1", img); err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(t.TempDir(), "images.txt")
	os.WriteFile(list, []byte(up.Addr+"/blueking/app:1\n"), 0o644)
	for _, out := range []string{"/dev/null", t.TempDir()} {
		r := runDocker(t, "", "bkcache", "save", "-f", list, "-o", out, "--insecure")
		if r.code == 0 || !strings.Contains(r.stderr, out) || !strings.Contains(r.stderr, "not a regular file") {
			t.Errorf("save -o %s: want a refusal naming the path\n%s", out, r)
		}
	}
	if info, err := os.Stat("/dev/null"); err != nil || info.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("/dev/null is no longer a character device: %v %v", info.Mode(), err)
	}
	if n := up.BlobGets(); n != 0 {
		t.Errorf("refused saves downloaded %d blobs first", n)
	}
}

// Finding 3: down ../../victim --purge deleted victim.yaml outside the config dir.
func TestDownRefusesANameThatIsAPath(t *testing.T) {
	root := t.TempDir()
	configDir := filepath.Join(root, "etc", "registry")
	os.MkdirAll(configDir, 0o755)
	os.WriteFile(filepath.Join(root, "etc", "victim.yaml"), []byte("version: 0.1\nstorage: {}\n"), 0o600)
	os.WriteFile(filepath.Join(root, "etc", "victim.yaml.bak"), []byte("keep me"), 0o600)
	before := tree(t, root)
	r := runDocker(t, "", "bkcache", "down", "../victim", "--purge", "--yes", "--config-dir", configDir)
	if r.code == 0 || !strings.Contains(r.stderr, "invalid cache name") {
		t.Errorf("down ../victim: want a refusal\n%s", r)
	}
	if after := tree(t, root); after != before {
		t.Errorf("down ../victim changed files outside the config dir:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// Finding 3: one container carrying bkcache's labels made status fail for every cache.
func TestStatusSkipsStrangersWithANote(t *testing.T) {
	up := registrytest.Start(t)
	c := newTestCache(t)
	mustDocker(t, c.upArgs(up.URL)...)
	stray := "bkt-stray-" + c.name
	mustDocker(t, "create", "--name", stray, "--label", "io.bkcache.managed=true", "--label", "io.bkcache.name=../etc", registryImage)
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", stray).Run() })

	r := mustDocker(t, "bkcache", "status")
	if !strings.Contains(r.stdout, c.name) || !strings.Contains(r.stderr, "skipped container "+stray) {
		t.Errorf("status with a stray labelled container: want our cache listed and a note on the stray\n%s", r)
	}
	if exec.Command("docker", "inspect", stray).Run() != nil {
		t.Error("status removed the stray container")
	}
}

// Finding 4: up --data-dir / bind-mounted the host root read-write, and down --purge deleted all of it.
func TestUpRefusesUnsafeDataDirsAndPurgeKeepsForeignFiles(t *testing.T) {
	up := registrytest.Start(t)
	c := newTestCache(t)
	args := func(dataDir string, extra ...string) []string {
		a := c.upArgs(up.URL, extra...)
		for i := range a {
			if a[i] == "--data-dir" {
				a[i+1] = dataDir
			}
		}
		return a
	}
	r := runDocker(t, "", args("/")...)
	if r.code == 0 || !strings.Contains(r.stderr, "system directory") {
		t.Errorf("up --data-dir /: want a refusal\n%s", r)
	}
	if exec.Command("docker", "inspect", "proxy-"+c.name).Run() == nil {
		t.Fatal("a refused up created the container")
	}

	home := filepath.Join(t.TempDir(), "home")
	os.MkdirAll(home, 0o755)
	os.WriteFile(filepath.Join(home, "notes.txt"), []byte("mine"), 0o644)
	r = runDocker(t, "", args(home)...)
	if r.code == 0 || !strings.Contains(r.stderr, "holds notes.txt") || !strings.Contains(r.stderr, "--force") {
		t.Errorf("up --data-dir on a directory with a user's file: want a refusal naming it and --force\n%s", r)
	}
	mustDocker(t, args(home, "--force")...)
	r = mustDocker(t, "bkcache", "down", c.name, "--purge", "--yes", "--config-dir", c.configDir)
	if data, err := os.ReadFile(filepath.Join(home, "notes.txt")); err != nil || string(data) != "mine" {
		t.Errorf("down --purge deleted or changed a file that was not the cache's: %q %v\n%s", data, err, r)
	}
	if !strings.Contains(r.stdout, "left "+filepath.Join(home, "notes.txt")) {
		t.Errorf("down --purge does not say what it left:\n%s", r)
	}
	if _, err := os.Stat(filepath.Join(home, "docker")); !os.IsNotExist(err) {
		t.Errorf("down --purge left the cache's storage: %v", err)
	}
}

// Finding 5: up "adopted" (force-removed) any container named proxy-NAME.
func TestUpRefusesToReplaceAStrangerWithoutReplace(t *testing.T) {
	up := registrytest.Start(t)
	c := newTestCache(t)
	// Not a registry: its entrypoint is another program, and it has no registry mounts.
	mustDocker(t, "create", "--name", "proxy-"+c.name, "--entrypoint", "/bin/sh-not-a-registry", registryImage)
	id := strings.TrimSpace(mustDocker(t, "inspect", "-f", "{{.Id}}", "proxy-"+c.name).stdout)
	r := runDocker(t, "", c.upArgs(up.URL)...)
	if r.code == 0 || !strings.Contains(r.stderr, "is not a registry:2 cache") || !strings.Contains(r.stderr, "--replace") || !strings.Contains(r.stderr, registryImage) {
		t.Errorf("up over a stranger: want a refusal naming its image and --replace\n%s", r)
	}
	if got := strings.TrimSpace(mustDocker(t, "inspect", "-f", "{{.Id}}", "proxy-"+c.name).stdout); got != id {
		t.Fatalf("the stranger was replaced without --replace (%s -> %s)", id, got)
	}
	r = mustDocker(t, c.upArgs(up.URL, "--replace")...)
	if !strings.Contains(r.stdout, "replaced (--replace)") {
		t.Errorf("up --replace does not say what it replaced:\n%s", r)
	}
}

// Finding 10: two ups of one cache at once left labels and config disagreeing.
func TestConcurrentUpsOfOneCacheAgree(t *testing.T) {
	up := registrytest.Start(t)
	c := newTestCache(t)
	// Identical specs race too: each new cache's up draws its own http secret, so
	// without a lock one run's labels end up over another run's config file.
	var wg sync.WaitGroup
	results := make([]result, 3)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = runDocker(t, "", c.upArgs(up.URL)...)
		}(i)
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Errorf("concurrent up %d failed:\n%s", i, r)
		}
	}
	st := mustDocker(t, "bkcache", "status", c.name, "-o", "json")
	var sts []struct{ Health string }
	json.Unmarshal([]byte(st.stdout), &sts)
	if len(sts) != 1 || sts[0].Health != "ok" {
		t.Errorf("after concurrent ups the cache is not healthy:\n%s", st)
	}
	// Config and container agree: the same spec again changes nothing.
	if again := mustDocker(t, c.upArgs(up.URL)...); !strings.Contains(again.stdout, "unchanged") {
		t.Errorf("labels and config disagree after concurrent ups: a re-run did not say unchanged:\n%s", again)
	}
}

// Finding 2 and 6: the storage writer was an open registry on a loopback port,
// left running after Ctrl-C with its temp files.
func TestInterruptedLoadIntoCacheLeavesNoWriter(t *testing.T) {
	for _, tool := range []string{"curl", "runuser"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed to try the planted upload; run scripts/setup.sh --test", tool)
		}
	}
	up := registrytest.Start(t)
	img, _ := registrytest.Image(4, 8<<20, "amd64")
	if _, err := up.Push("blueking/big:1", img); err != nil {
		t.Fatal(err)
	}
	list := filepath.Join(t.TempDir(), "images.txt")
	os.WriteFile(list, []byte(up.Addr+"/blueking/big:1\n"), 0o644)
	archive := filepath.Join(t.TempDir(), "bk.tar")
	mustDocker(t, "bkcache", "save", "-f", list, "-o", archive, "--insecure")

	c := newTestCache(t)
	mustDocker(t, c.upArgs(up.URL)...)
	writer := "proxy-" + c.name + "-writer"
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", writer).Run() })
	tmp := t.TempDir()
	// $TMPDIR as on a host: other users may walk through it (t.TempDir alone is
	// 0700 and would stop them before the writer's own directory does).
	os.Chmod(filepath.Dir(tmp), 0o755)
	os.Chmod(tmp, 0o755)
	var network, socketDir string
	var mode fs.FileMode
	var planted plantResult
	r := interruptedWhen(t, tmp, "the storage writer answering on its socket", func() bool {
		out, err := exec.Command("docker", "inspect", "-f", `{{.HostConfig.NetworkMode}} {{range .Mounts}}{{if eq .Destination "/run/bkcache-writer"}}{{.Source}}{{end}}{{end}}`, writer).Output()
		if err != nil {
			return false
		}
		fields := strings.Fields(string(out))
		if len(fields) != 2 {
			return false
		}
		network, socketDir = fields[0], fields[1]
		if info, err := os.Stat(socketDir); err == nil {
			mode = info.Mode().Perm()
		}
		// The attack of the finding, made while the writer is up: another local
		// user starts a blob upload, the first step of planting a tag.
		planted = plantThroughSocket(filepath.Join(socketDir, "registry.sock"))
		return planted.writerUp
	}, 0, true, "bkcache", "load", "-i", archive, "--cache", c.name)
	// curl exits 7 when it cannot connect: root got 200 on the same socket a
	// moment before, so what stops nobody is the permissions on the way in.
	if planted.otherUserExit != 7 {
		t.Errorf("another local user (nobody) reached the storage writer through its socket (curl exit %d): %s", planted.otherUserExit, planted.otherUser)
	}

	if network != "none" {
		t.Errorf("the storage writer runs with network %q; want none (no port anyone could push to)", network)
	}
	if socketDir == "" || !strings.HasPrefix(socketDir, tmp) || mode != 0o700 {
		t.Errorf("the writer's socket directory %q (mode %04o) is not a private (0700) temp dir of the run", socketDir, mode)
	}
	if r.code != 130 {
		t.Errorf("exit code %d, want 130\n%s", r.code, r)
	}
	if exec.Command("docker", "inspect", writer).Run() == nil {
		t.Errorf("the storage writer %s is still there after the interrupt", writer)
	}
	assertEmpty(t, "TMPDIR", tmp)
	// The cache serves on, and a load to the end works.
	l := mustDocker(t, "bkcache", "load", "-i", archive, "--cache", c.name)
	if !strings.Contains(l.stdout, "loaded 1 of 1") {
		t.Errorf("load after the interrupt:\n%s", l)
	}
}

type plantResult struct {
	writerUp      bool   // the plugin's own user reaches the writer: the socket is live
	otherUser     string // what an upload attempt by user nobody got: a status code or curl's error
	otherUserExit int
}

// plantThroughSocket tries a blob upload into the writer as user nobody, once
// the writer is seen answering root (its owner) on the same socket.
func plantThroughSocket(socket string) plantResult {
	code, err := exec.Command("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", socket, "http://localhost/v2/").Output()
	if err != nil || string(code) != "200" {
		return plantResult{}
	}
	attempt := exec.Command("runuser", "-u", "nobody", "--", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
		"-X", "POST", "--unix-socket", socket, "http://localhost/v2/blueking/big/blobs/uploads/")
	out, _ := attempt.CombinedOutput()
	return plantResult{writerUp: true, otherUser: strings.TrimSpace(string(out)), otherUserExit: attempt.ProcessState.ExitCode()}
}

// Finding 6: warm into a --plain cache's storage, interrupted while its writer
// runs and blobs stream in over a slow link, leaves no writer and no temp files.
func TestInterruptedWarmIntoStorageCleansUp(t *testing.T) {
	up := registrytest.Start(t)
	img, _ := registrytest.Image(3, 4<<20, "amd64")
	if _, err := up.Push("blueking/big:1", img); err != nil {
		t.Fatal(err)
	}
	slow := slowProxy(t, up.URL, 2<<20)
	c := newTestCache(t)
	mustDocker(t, c.upArgs("http://"+slow, "--plain")...)
	list := filepath.Join(t.TempDir(), "images.txt")
	os.WriteFile(list, []byte(slow+"/blueking/big:1\n"), 0o644)
	writer := "proxy-" + c.name + "-writer"
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", writer).Run() })
	tmp := t.TempDir()
	r := interruptedWhen(t, tmp, "a blob download into the writer", func() bool {
		m, _ := filepath.Glob(filepath.Join(tmp, "bkcache-blobs-*", "*"))
		return len(m) > 0 && exec.Command("docker", "inspect", writer).Run() == nil
	}, 200*time.Millisecond, true, "bkcache", "warm", "-f", list, "--cache", c.name)
	if r.code != 130 {
		t.Errorf("exit code %d, want 130\n%s", r.code, r)
	}
	if exec.Command("docker", "inspect", writer).Run() == nil {
		t.Errorf("the storage writer %s is still there after the interrupt", writer)
	}
	assertEmpty(t, "TMPDIR", tmp)
}
