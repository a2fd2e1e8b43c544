//go:build e2e

package disttest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/pkg/cache"
)

const (
	// A release-shaped version, so the krew manifest carries it unchanged.
	testVersion = "v0.9.1-disttest.1"
	testURL     = "https://example.invalid/bkcache/releases/v0.9.1-disttest.1"
)

var arches = []string{"amd64", "arm64"}

func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

// sourceDateEpoch is what `make dist` uses by default: the commit time of HEAD.
// The test passes it explicitly so that a copy of the tree without .git builds the same.
func sourceDateEpoch(t *testing.T, repo string) int64 {
	t.Helper()
	out, err := exec.Command("git", "-C", repo, "log", "-1", "--format=%ct").Output()
	if err != nil {
		t.Fatalf("git log in %s: %v", repo, err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// makeDist runs `make dist` in src into out, with the registry images, and
// returns make's output (the step timings).
func makeDist(t *testing.T, src, out string, epoch int64, env ...string) string {
	t.Helper()
	start := time.Now()
	cmd := exec.Command("make", "--no-print-directory", "-C", src, "dist",
		"VERSION="+testVersion, "DIST_DIR="+out, "DIST_URL="+testURL, "DIST_IMAGE=1")
	cmd.Env = append(os.Environ(), append([]string{"SOURCE_DATE_EPOCH=" + strconv.FormatInt(epoch, 10)}, env...)...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make dist in %s: %v\n%s", src, err, b)
	}
	t.Logf("make dist in %s: %s\n%s", src, time.Since(start).Round(time.Second), b)
	return string(b)
}

func archiveName(arch string) string { return "bkcache-" + testVersion + "-linux-" + arch + ".tar.gz" }

func imageName(arch string) string {
	return "bkcache-" + testVersion + "-registry-image-linux-" + arch + ".tar.gz"
}

func topDir(arch string) string { return "bkcache-" + testVersion + "-linux-" + arch }

func sha256File(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// readSums parses SHA256SUMS: "<hex>  <file>" per line.
func readSums(t *testing.T, p string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		sum, file, ok := strings.Cut(line, "  ")
		if !ok || !regexp.MustCompile(`^[a-f0-9]{64}$`).MatchString(sum) {
			t.Fatalf("SHA256SUMS line %q is not sha256sum's format", line)
		}
		sums[file] = sum
	}
	return sums
}

type entry struct {
	hdr  *tar.Header
	data []byte
}

// readArchive reads a .tar.gz fully, checking the gzip header carries no name or time.
func readArchive(t *testing.T, p string) []entry {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("%s: gzip header has name %q, mtime %v: not reproducible", p, zr.Name, zr.ModTime)
	}
	var entries []entry
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, entry{h, b})
	}
	return entries
}

func TestDist(t *testing.T) {
	repo := repoRoot(t)
	epoch := sourceDateEpoch(t, repo)
	dist := t.TempDir()
	makeDist(t, repo, dist, epoch)
	sums := readSums(t, filepath.Join(dist, "SHA256SUMS"))

	t.Run("files and SHA256SUMS", func(t *testing.T) { checkFiles(t, dist, sums) })

	t.Run("archives", func(t *testing.T) {
		for _, arch := range arches {
			checkArchive(t, repo, filepath.Join(dist, archiveName(arch)), arch, epoch)
		}
	})

	t.Run("krew manifest", func(t *testing.T) {
		checkKrew(t, dist, sums)
	})

	t.Run("krew installs it", func(t *testing.T) { testKrewInstall(t, dist) })

	t.Run("registry image archives", func(t *testing.T) {
		for _, arch := range arches {
			images, err := cache.ReadImageArchive(context.Background(), filepath.Join(dist, imageName(arch)))
			if err != nil {
				t.Fatal(err)
			}
			if len(images) != 1 || !slices.Equal(images[0].Tags, []string{"bkcache.local/registry:2"}) || images[0].OS != "linux" || images[0].Architecture != arch {
				t.Errorf("%s holds %+v, want bkcache.local/registry:2 for linux/%s", imageName(arch), images, arch)
			}
		}
	})

	t.Run("install", func(t *testing.T) { testInstall(t, dist) })
	t.Run("refusals change nothing", func(t *testing.T) { testRefusals(t, dist) })

	t.Run("reproducible", func(t *testing.T) {
		// A second make dist from a copy of the tree at another path, without .git.
		// With -trimpath the compile actions do not depend on the directory, so the
		// shared Go build cache serves every compiled package: this build links
		// every binary again and writes every archive and image again (a time, a
		// path or VCS state in any of them shows up here), but compiles nothing.
		copyDir := filepath.Join(t.TempDir(), "elsewhere", "bkcache")
		copyTree(t, repo, copyDir)
		dist2 := t.TempDir()
		makeDist(t, copyDir, dist2, epoch)
		for _, f := range []string{"SHA256SUMS", "bkcache.yaml"} {
			a, _ := os.ReadFile(filepath.Join(dist, f))
			b, _ := os.ReadFile(filepath.Join(dist2, f))
			if !bytes.Equal(a, b) {
				t.Errorf("%s differs between the two builds:\n%s\n---\n%s", f, a, b)
			}
		}
		for _, arch := range arches {
			for _, f := range []string{archiveName(arch), imageName(arch)} {
				if sha256File(t, filepath.Join(dist, f)) != sha256File(t, filepath.Join(dist2, f)) {
					t.Errorf("%s differs between the two builds", f)
				}
			}
			// The files inside, so a difference names its file.
			a, b := readArchive(t, filepath.Join(dist, archiveName(arch))), readArchive(t, filepath.Join(dist2, archiveName(arch)))
			for i := range min(len(a), len(b)) {
				if a[i].hdr.Name != b[i].hdr.Name || !bytes.Equal(a[i].data, b[i].data) {
					t.Errorf("%s: %s differs between the two builds", archiveName(arch), a[i].hdr.Name)
				}
			}
		}

		// The compiler's side, with an empty build cache: one binary (the smaller,
		// linux/amd64 docker-bkcache), built the release's way from the copy.
		// Every package it links is compiled from scratch (~180 s of CPU here;
		// all four binaries, or GOFLAGS=-a, would cost ~1060 s).
		fresh := filepath.Join(t.TempDir(), "docker-bkcache")
		cmd := exec.Command("bash", filepath.Join(copyDir, "scripts", "dist.sh"), "--build", "amd64", "docker-bkcache", fresh)
		cmd.Env = append(os.Environ(), "VERSION="+testVersion, "GOCACHE="+t.TempDir())
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("dist.sh --build with an empty GOCACHE: %v\n%s", err, out)
		}
		t.Logf("docker-bkcache linux/amd64 with an empty GOCACHE: %s", time.Since(start).Round(time.Second))
		got, _ := os.ReadFile(fresh)
		for _, e := range readArchive(t, filepath.Join(dist, archiveName("amd64"))) {
			if path.Base(e.hdr.Name) == "docker-bkcache" && !bytes.Equal(e.data, got) {
				t.Errorf("docker-bkcache built with an empty GOCACHE differs from the archive's")
			}
		}
	})
}

// copyTree copies the files git knows of (tracked and untracked, not ignored).

// checkFiles checks that dist holds the archives, image archives, SHA256SUMS
// and bkcache.yaml, and that SHA256SUMS lists every archive with its sha256.
func checkFiles(t *testing.T, dist string, sums map[string]string) {
	var want, sumWant []string
	for _, a := range arches {
		want = append(want, archiveName(a), imageName(a))
	}
	sumWant = slices.Sorted(slices.Values(want))
	want = append(want, "SHA256SUMS", "bkcache.yaml")
	got, err := os.ReadDir(dist)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range got {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, slices.Sorted(slices.Values(want))) {
		t.Fatalf("dist holds %v, want %v", names, slices.Sorted(slices.Values(want)))
	}
	if keys := slices.Sorted(maps.Keys(sums)); !slices.Equal(keys, sumWant) {
		t.Fatalf("SHA256SUMS lists %v, want %v", keys, sumWant)
	}
	for file, sum := range sums {
		if got := sha256File(t, filepath.Join(dist, file)); got != sum {
			t.Errorf("%s: sha256 %s, SHA256SUMS says %s", file, got, sum)
		}
	}
	for _, a := range arches {
		for _, f := range []string{archiveName(a), imageName(a)} {
			st, _ := os.Stat(filepath.Join(dist, f))
			t.Logf("%-60s %6.1f MiB", f, float64(st.Size())/(1<<20))
		}
	}
}

func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	out, err := exec.Command("git", "-C", src, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, rel := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		st, err := os.Lstat(filepath.Join(src, rel))
		if err != nil {
			continue // deleted in the work tree
		}
		b, err := os.ReadFile(filepath.Join(src, rel))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, rel), b, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}

func checkArchive(t *testing.T, repo, p, arch string, epoch int64) {
	t.Helper()
	top := topDir(arch)
	want := map[string]int64{ // name -> mode
		top + "/":                           0o755,
		top + "/CONTENTS.sha256":            0o644,
		top + "/LICENSE":                    0o644,
		top + "/README.md":                  0o644,
		top + "/RELEASE":                    0o644,
		top + "/docker-bkcache":             0o755,
		top + "/install.sh":                 0o755,
		top + "/registry-image.sh":          0o755,
		top + "/kubectl-bkcache":            0o755,
		top + "/manifests/":                 0o755,
		top + "/manifests/mirror-rbac.yaml": 0o644,
	}
	// docs/ ships as it is in the repository (the README links into it).
	sources := map[string]string{"install.sh": "scripts/install.sh", "registry-image.sh": "scripts/registry-image.sh", "README.md": "README.md", "LICENSE": "LICENSE", "manifests/mirror-rbac.yaml": "manifests/mirror-rbac.yaml"}
	err := filepath.WalkDir(filepath.Join(repo, "docs"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repo, path)
		if d.IsDir() {
			want[top+"/"+rel+"/"] = 0o755
		} else {
			want[top+"/"+rel] = 0o644
			sources[rel] = rel
		}
		return nil
	})
	if err != nil {
		t.Fatalf("docs/ of %s: %v", repo, err)
	}
	entries := readArchive(t, p)
	var names []string
	files := map[string][]byte{}
	for _, e := range entries {
		h := e.hdr
		names = append(names, h.Name)
		files[h.Name] = e.data
		if mode, ok := want[h.Name]; !ok || h.Mode != mode {
			t.Errorf("%s: %s mode %o, want %o", p, h.Name, h.Mode, mode)
		}
		if h.Uid != 0 || h.Gid != 0 || h.ModTime.Unix() != epoch {
			t.Errorf("%s: %s uid %d gid %d mtime %v, want 0 0 %v", p, h.Name, h.Uid, h.Gid, h.ModTime.Unix(), epoch)
		}
	}
	if !slices.IsSorted(names) || !slices.Equal(names, slices.Sorted(maps.Keys(want))) {
		t.Errorf("%s holds %v, want (sorted) %v", p, names, slices.Sorted(maps.Keys(want)))
	}
	if got, want := string(files[top+"/RELEASE"]), "name=bkcache\nversion="+testVersion+"\nos=linux\narch="+arch+"\n"; got != want {
		t.Errorf("RELEASE = %q, want %q", got, want)
	}
	for f, src := range sources {
		b, err := os.ReadFile(filepath.Join(repo, src))
		if err != nil || !bytes.Equal(b, files[top+"/"+f]) {
			t.Errorf("%s: %s is not the repository's %s (%v)", p, f, src, err)
		}
	}
	// CONTENTS.sha256 lists every other file with its sha256.
	listed := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(files[top+"/CONTENTS.sha256"])), "\n") {
		sum, name, _ := strings.Cut(line, "  ")
		s := sha256.Sum256(files[top+"/"+name])
		if hex.EncodeToString(s[:]) != sum {
			t.Errorf("CONTENTS.sha256: %s does not match", name)
		}
		listed[name] = true
	}
	for name := range want {
		rel := strings.TrimPrefix(name, top+"/")
		if !strings.HasSuffix(name, "/") && rel != "CONTENTS.sha256" && !listed[rel] {
			t.Errorf("CONTENTS.sha256 does not list %s", rel)
		}
	}

	leaks := buildPaths(repo)
	for _, bin := range []string{"docker-bkcache", "kubectl-bkcache"} {
		checkBinary(t, arch, bin, files[top+"/"+bin], leaks)
	}
}

// buildPaths are build paths as a leak shows them: source file paths under the
// checkout, the module cache, GOROOT's sources, a home's Go tree or the build's
// work dir. (Bare "/root/" or "/tmp/" would also match the plugin's own list of
// system directories it refuses as a data dir.)
func buildPaths(repo string) []string {
	home, _ := os.UserHomeDir()
	gomodcache, _ := exec.Command("go", "env", "GOMODCACHE").Output()
	goroot, _ := exec.Command("go", "env", "GOROOT").Output()
	return []string{repo + "/", strings.TrimSpace(string(gomodcache)) + "/", strings.TrimSpace(string(goroot)) + "/src/",
		filepath.Join(home, "go") + "/", filepath.Join(os.TempDir(), "go-build")}
}

// checkBinary checks one release binary: its machine, static linking, build
// settings, stamped version, and no build path inside.
func checkBinary(t *testing.T, arch, bin string, data []byte, leaks []string) {
	t.Helper()
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s/%s: %v", arch, bin, err)
	}
	if f.Machine != machine {
		t.Errorf("%s/%s is for %v, want %v", arch, bin, f.Machine, machine)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Errorf("%s/%s is dynamically linked: want CGO_ENABLED=0", arch, bin)
		}
	}
	info, err := buildinfo.Read(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s/%s build info: %v", arch, bin, err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	// With -trimpath Go records no -ldflags; -buildvcs=false shows as no vcs.* keys.
	want := map[string]string{"-trimpath": "true", "CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": arch}
	if arch == "amd64" {
		want["GOAMD64"] = "v1"
	} else {
		want["GOARM64"] = "v8.0"
	}
	for k, v := range want {
		if settings[k] != v {
			t.Errorf("%s/%s: build setting %s=%q, want %q", arch, bin, k, settings[k], v)
		}
	}
	for k := range settings {
		if strings.HasPrefix(k, "vcs") {
			t.Errorf("%s/%s carries VCS state %s=%s", arch, bin, k, settings[k])
		}
	}
	if !bytes.Contains(data, []byte(testVersion)) {
		t.Errorf("%s/%s does not contain the stamped version %s", arch, bin, testVersion)
	}
	for _, leak := range leaks {
		if len(leak) > 3 && bytes.Contains(data, []byte(leak)) {
			t.Errorf("%s/%s contains the build path %q", arch, bin, leak)
		}
	}
}
