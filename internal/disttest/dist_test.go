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
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/version"
	"sigs.k8s.io/yaml"

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

	t.Run("files and SHA256SUMS", func(t *testing.T) {
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
	})

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
		top + "/kubectl-bkcache":            0o755,
		top + "/manifests/":                 0o755,
		top + "/manifests/mirror-rbac.yaml": 0o644,
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
	for f, src := range map[string]string{"install.sh": "scripts/install.sh", "README.md": "README.md", "LICENSE": "LICENSE", "manifests/mirror-rbac.yaml": "manifests/mirror-rbac.yaml"} {
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

	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	home, _ := os.UserHomeDir()
	gomodcache, _ := exec.Command("go", "env", "GOMODCACHE").Output()
	goroot, _ := exec.Command("go", "env", "GOROOT").Output()
	// Build paths as a leak shows them: source file paths under the checkout, the
	// module cache, GOROOT's sources, a home's Go tree or the build's work dir.
	// (Bare "/root/" or "/tmp/" would also match the plugin's own list of system
	// directories it refuses as a data dir.)
	leaks := []string{repo + "/", strings.TrimSpace(string(gomodcache)) + "/", strings.TrimSpace(string(goroot)) + "/src/",
		filepath.Join(home, "go") + "/", filepath.Join(os.TempDir(), "go-build")}
	for _, bin := range []string{"docker-bkcache", "kubectl-bkcache"} {
		data := files[top+"/"+bin]
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
}

// The Plugin manifest as krew reads it (sigs.k8s.io/krew/pkg/index types);
// strict parsing refuses fields krew does not know.
type krewPlugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string         `json:"version"`
		ShortDescription string         `json:"shortDescription"`
		Description      string         `json:"description"`
		Caveats          string         `json:"caveats"`
		Homepage         string         `json:"homepage"`
		Platforms        []krewPlatform `json:"platforms"`
	} `json:"spec"`
}

type krewPlatform struct {
	Selector *metav1.LabelSelector `json:"selector"`
	URI      string                `json:"uri"`
	Sha256   string                `json:"sha256"`
	Files    []struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"files"`
	Bin string `json:"bin"`
}

// checkKrew applies the checks of krew's internal/index/validation.ValidatePlugin
// and cmd/validate-krew-manifest (name from the file name, semver with a v
// prefix, selectors on os/arch only and not overlapping), plus what krew's
// installer does with the archive: each files.from matches an entry and bin
// lands as an executable.
func checkKrew(t *testing.T, dist string, sums map[string]string) {
	raw, err := os.ReadFile(filepath.Join(dist, "bkcache.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var p krewPlugin
	if err := yaml.UnmarshalStrict(raw, &p); err != nil {
		t.Fatalf("bkcache.yaml: %v", err)
	}
	if p.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || p.Kind != "Plugin" {
		t.Errorf("apiVersion/kind = %s/%s", p.APIVersion, p.Kind)
	}
	if p.Metadata.Name != "bkcache" || !regexp.MustCompile(`^[\w-]+$`).MatchString(p.Metadata.Name) {
		t.Errorf("metadata.name = %q, want bkcache (the file name)", p.Metadata.Name)
	}
	if !strings.HasPrefix(p.Spec.Version, "v") {
		t.Errorf("spec.version %q has no v prefix", p.Spec.Version)
	} else if _, err := version.ParseSemantic(p.Spec.Version); err != nil {
		t.Errorf("spec.version %q: %v", p.Spec.Version, err)
	}
	if p.Spec.Version != testVersion {
		t.Errorf("spec.version = %q, want %q", p.Spec.Version, testVersion)
	}
	if p.Spec.ShortDescription == "" || strings.ContainsAny(p.Spec.ShortDescription, "\r\n") || len(p.Spec.ShortDescription) > 70 {
		t.Errorf("shortDescription %q: want one line of at most 70 characters", p.Spec.ShortDescription)
	}
	if !strings.HasPrefix(p.Spec.Homepage, "https://") {
		t.Errorf("homepage = %q", p.Spec.Homepage)
	}
	for _, field := range []string{p.Spec.Description, p.Spec.Caveats} {
		for _, line := range strings.Split(field, "\n") {
			if len(line) > 80 {
				t.Errorf("line longer than 80 characters (krew warns): %q", line)
			}
		}
	}
	if len(p.Spec.Platforms) != len(arches) {
		t.Fatalf("%d platforms, want %d", len(p.Spec.Platforms), len(arches))
	}
	matched := map[string]int{}
	for i, pl := range p.Spec.Platforms {
		if pl.URI == "" || pl.Bin == "" || pl.Selector == nil || len(pl.Selector.MatchLabels) == 0 {
			t.Errorf("platform %d: uri, bin and a selector are required: %+v", i, pl)
			continue
		}
		for k := range pl.Selector.MatchLabels {
			if k != "os" && k != "arch" {
				t.Errorf("platform %d: selector key %q (krew supports os and arch)", i, k)
			}
		}
		for _, e := range pl.Selector.MatchExpressions {
			t.Errorf("platform %d: unexpected matchExpressions %v", i, e)
		}
		sel, err := metav1.LabelSelectorAsSelector(pl.Selector)
		if err != nil {
			t.Fatal(err)
		}
		for _, goos := range []string{"linux", "darwin", "windows"} {
			for _, a := range []string{"amd64", "arm64", "386", "arm"} {
				if sel.Matches(labels.Set{"os": goos, "arch": a}) {
					matched[goos+"/"+a]++
				}
			}
		}
		arch := pl.Selector.MatchLabels["arch"]
		archive := archiveName(arch)
		if pl.URI != testURL+"/"+archive {
			t.Errorf("platform %s: uri %q, want %q", arch, pl.URI, testURL+"/"+archive)
		}
		if !regexp.MustCompile(`^[a-f0-9]{64}$`).MatchString(pl.Sha256) || pl.Sha256 != sums[archive] {
			t.Errorf("platform %s: sha256 %q, SHA256SUMS says %q", arch, pl.Sha256, sums[archive])
		}
		// What krew's installer does: move each `from` match to `to`, then find bin.
		entries := readArchive(t, filepath.Join(dist, archive))
		installed := map[string]int64{}
		for _, f := range pl.Files {
			if f.From == "" || f.To == "" {
				t.Errorf("platform %s: files entry %+v needs from and to", arch, f)
			}
			n := 0
			for _, e := range entries {
				if ok, _ := path.Match(f.From, e.hdr.Name); ok && e.hdr.Typeflag == tar.TypeReg {
					installed[path.Join(f.To, path.Base(e.hdr.Name))] = e.hdr.Mode
					n++
				}
			}
			if n == 0 {
				t.Errorf("platform %s: files.from %q matches nothing in %s", arch, f.From, archive)
			}
		}
		if mode, ok := installed[path.Clean(pl.Bin)]; !ok || mode&0o111 == 0 {
			t.Errorf("platform %s: bin %q is not an executable the files put in place (%v)", arch, pl.Bin, installed)
		}
	}
	want := map[string]int{"linux/amd64": 1, "linux/arm64": 1}
	if !maps.Equal(matched, want) {
		t.Errorf("selectors match %v, want each of %v exactly once", matched, want)
	}
}

// krewVersion is the krew the test installs with (the module proxy serves this one).
const krewVersion = "v0.4.3"

// testKrewInstall installs the plugin with the real krew, offline, from the
// manifest and each archive (KREW_ARCH picks the platform), as
// `kubectl krew install --manifest --archive` does on a site without network;
// krew validates the manifest first. The host's platform then runs through kubectl.
func testKrewInstall(t *testing.T, dist string) {
	gobin := t.TempDir()
	build := exec.Command("go", "install", "sigs.k8s.io/krew/cmd/krew@"+krewVersion)
	build.Dir, build.Env = gobin, append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=")
	start := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go install krew %s: %v\n%s", krewVersion, err, out)
	}
	t.Logf("go install krew %s: %s", krewVersion, time.Since(start).Round(time.Second))
	if err := os.Rename(filepath.Join(gobin, "krew"), filepath.Join(gobin, "kubectl-krew")); err != nil {
		t.Fatal(err)
	}
	tools := toolbox(t, "kubectl")
	for _, arch := range arches {
		root := t.TempDir()
		env := []string{"PATH=" + filepath.Join(root, "bin") + ":" + gobin + ":" + tools, "HOME=" + t.TempDir(),
			"KREW_ROOT=" + root, "KREW_OS=linux", "KREW_ARCH=" + arch}
		r := sh(t, dist, env, "kubectl", "krew", "install", "--manifest="+filepath.Join(dist, "bkcache.yaml"), "--archive="+filepath.Join(dist, archiveName(arch)))
		if r.code != 0 || !strings.Contains(r.out, "Installed plugin: bkcache") {
			t.Errorf("krew install linux/%s: %+v", arch, r)
			continue
		}
		link, err := os.Readlink(filepath.Join(root, "bin", "kubectl-bkcache"))
		if err != nil || !strings.Contains(link, filepath.Join("store", "bkcache", testVersion)) {
			t.Errorf("krew linked %s/bin/kubectl-bkcache to %q (%v)", root, link, err)
		}
		if arch == runtime.GOARCH {
			if r := sh(t, dist, env, "kubectl", "bkcache", "version"); r.code != 0 || strings.TrimSpace(r.out) != "kubectl-bkcache "+testVersion {
				t.Errorf("kubectl bkcache version after krew install: %+v", r)
			}
		}
	}
}

// toolbox is a directory of symlinks to the tools install.sh and the test use,
// and no others: above all no go. extra adds docker and kubectl.
func toolbox(t *testing.T, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	tools := []string{"sh", "dash", "tar", "gzip", "uname", "tr", "sed", "head", "cut", "awk", "grep", "cmp", "sha256sum",
		"mkdir", "cp", "mv", "rm", "rmdir", "chmod", "dirname", "basename", "cat", "ls", "id"}
	for _, tool := range append(tools, extra...) {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%s is needed on PATH: %v", tool, err)
		}
		if err := os.Symlink(p, filepath.Join(dir, tool)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type run struct {
	out  string
	code int
}

// sh runs a command with exactly the environment given (no inherited variables).
func sh(t *testing.T, dir string, env []string, name string, args ...string) run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = dir, env
	for _, e := range env {
		if p, ok := strings.CutPrefix(e, "PATH="); ok {
			// exec.Command resolved name with the test's PATH: resolve it with the child's.
			if !strings.Contains(name, "/") {
				for _, d := range filepath.SplitList(p) {
					if st, err := os.Stat(filepath.Join(d, name)); err == nil && !st.IsDir() {
						cmd.Path = filepath.Join(d, name)
						break
					}
				}
			}
		}
	}
	b, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	}
	return run{string(b), code}
}

// tree lists every path under the roots with its type, mode and content hash.
func tree(t *testing.T, roots ...string) []string {
	t.Helper()
	var out []string
	for _, root := range roots {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) && p == root {
					out = append(out, root+" (absent)")
					return nil
				}
				t.Fatal(err)
			}
			info, _ := d.Info()
			line := fmt.Sprintf("%s %v", p, info.Mode())
			if d.Type().IsRegular() {
				line += " " + sha256File(t, p)[:12]
			}
			out = append(out, line)
			return nil
		})
	}
	return out
}

func hostArch(t *testing.T) string {
	if !slices.Contains(arches, runtime.GOARCH) {
		t.Fatalf("host arch %s has no archive", runtime.GOARCH)
	}
	return runtime.GOARCH
}

// unpack puts the archive and SHA256SUMS into a fresh directory (as a user
// downloads them) and unpacks the archive there with tar; returns the directory.
func unpack(t *testing.T, dist, arch string, tools string) string {
	t.Helper()
	root := t.TempDir()
	for _, f := range []string{archiveName(arch), "SHA256SUMS"} {
		b, err := os.ReadFile(filepath.Join(dist, f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(root, f), b, 0o644)
	}
	if r := sh(t, root, []string{"PATH=" + tools}, "tar", "xzf", archiveName(arch)); r.code != 0 {
		t.Fatalf("tar xzf: %s", r.out)
	}
	return root
}

func testInstall(t *testing.T, dist string) {
	arch := hostArch(t)
	tools := toolbox(t, "docker", "kubectl")
	if r := sh(t, "/", []string{"PATH=" + tools}, "sh", "-c", "command -v go"); r.code == 0 {
		t.Fatalf("go is on the test PATH: %s", r.out)
	}
	root := unpack(t, dist, arch, tools)
	home := filepath.Join(t.TempDir(), "home")
	os.Mkdir(home, 0o755)
	prefix := filepath.Join(t.TempDir(), "prefix")
	env := []string{"PATH=" + tools, "HOME=" + home}
	installer := filepath.Join(root, topDir(arch), "install.sh")
	before := tree(t, home, prefix)

	// As the README says: from the download directory, the script of the unpacked archive.
	r := sh(t, root, env, "dash", installer, "--prefix", prefix)
	if r.code != 0 {
		t.Fatalf("install.sh: %+v", r)
	}
	t.Logf("install.sh:\n%s", r.out)
	plugin := filepath.Join(home, ".docker", "cli-plugins", "docker-bkcache")
	kubectlPlugin := filepath.Join(prefix, "bin", "kubectl-bkcache")
	manifest := filepath.Join(prefix, "share", "bkcache", "install-manifest")
	for _, want := range []string{
		filepath.Join(root, archiveName(arch)) + " matches " + filepath.Join(root, "SHA256SUMS"),
		"installed  docker-bkcache  -> " + plugin,
		"installed  kubectl-bkcache -> " + kubectlPlugin,
		"recorded   " + manifest,
	} {
		if !strings.Contains(r.out, want) {
			t.Errorf("install.sh output lacks %q:\n%s", want, r.out)
		}
	}
	for _, p := range []string{plugin, kubectlPlugin, manifest} {
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	installedTree := tree(t, home, prefix)

	// Through the real CLIs: docker finds the plugin in DOCKER_CONFIG, kubectl on PATH.
	r = sh(t, root, append(env, "DOCKER_CONFIG="+filepath.Join(home, ".docker")), "docker", "bkcache", "version")
	if r.code != 0 || !strings.Contains(r.out, testVersion) {
		t.Errorf("docker bkcache version: %+v, want %s", r, testVersion)
	}
	r = sh(t, root, []string{"PATH=" + filepath.Join(prefix, "bin") + ":" + tools, "HOME=" + home}, "kubectl", "bkcache", "version")
	if r.code != 0 || strings.TrimSpace(r.out) != "kubectl-bkcache "+testVersion {
		t.Errorf("kubectl bkcache version: %+v, want kubectl-bkcache %s", r, testVersion)
	}

	// Again, run as a file (its shebang, its mode from the archive): nothing changes.
	r = sh(t, root, env, installer, "--prefix", prefix)
	if r.code != 0 || strings.Count(r.out, "unchanged  ") != 2 {
		t.Errorf("second install.sh: %+v, want both files unchanged", r)
	}
	if again := tree(t, home, prefix); !slices.Equal(again, installedTree) {
		t.Errorf("second install changed the tree:\n%s\n---\n%s", strings.Join(installedTree, "\n"), strings.Join(again, "\n"))
	}

	// --system --dry-run names the system-wide plugin directory and changes nothing.
	sysPlugin := "/usr/local/lib/docker/cli-plugins/docker-bkcache"
	_, sysErr := os.Stat(sysPlugin)
	r = sh(t, root, env, "dash", installer, "--system", "--dry-run", "--prefix", prefix)
	if r.code != 0 || !strings.Contains(r.out, "would install docker-bkcache  -> "+sysPlugin) {
		t.Errorf("--system --dry-run: %+v", r)
	}
	if _, err := os.Stat(sysPlugin); (err == nil) != (sysErr == nil) {
		t.Errorf("--dry-run changed %s", sysPlugin)
	}

	// --uninstall removes exactly what was installed: the roots are as before.
	r = sh(t, root, env, "dash", installer, "--uninstall", "--prefix", prefix)
	if r.code != 0 {
		t.Fatalf("--uninstall: %+v", r)
	}
	t.Logf("install.sh --uninstall:\n%s", r.out)
	if after := tree(t, home, prefix); !slices.Equal(after, before) {
		t.Errorf("after --uninstall:\n%s\nwant as before install:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
	}
	r = sh(t, root, env, "dash", installer, "--uninstall", "--prefix", prefix)
	if r.code != 0 || !strings.Contains(r.out, "nothing to remove") {
		t.Errorf("second --uninstall: %+v", r)
	}
	r = sh(t, root, append(env, "DOCKER_CONFIG="+filepath.Join(home, ".docker")), "docker", "bkcache", "version")
	if r.code == 0 {
		t.Errorf("docker bkcache still runs after --uninstall: %+v", r)
	}

	// A file changed since the install is not recognised as ours: --uninstall leaves it.
	if r = sh(t, root, env, "dash", installer, "--prefix", prefix); r.code != 0 {
		t.Fatalf("install.sh: %+v", r)
	}
	f, err := os.OpenFile(kubectlPlugin, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("#"))
	f.Close()
	r = sh(t, root, env, "dash", installer, "--uninstall", "--prefix", prefix)
	if r.code != 0 || !strings.Contains(r.out, "left "+kubectlPlugin+" in place") || !strings.Contains(r.out, "removed       "+plugin) {
		t.Errorf("--uninstall with a changed file: %+v", r)
	}
	if _, err := os.Stat(kubectlPlugin); err != nil {
		t.Errorf("--uninstall removed a file that changed since install: %v", err)
	}
	os.Remove(kubectlPlugin)
	os.Remove(filepath.Join(prefix, "bin"))
	os.Remove(prefix)
	if after := tree(t, home, prefix); !slices.Equal(after, before) {
		t.Errorf("after --uninstall and removing the changed file:\n%s", strings.Join(after, "\n"))
	}
}

func testRefusals(t *testing.T, dist string) {
	arch := hostArch(t)
	tools := toolbox(t, "docker", "kubectl")
	home := filepath.Join(t.TempDir(), "home")
	os.Mkdir(home, 0o755)
	prefix := filepath.Join(t.TempDir(), "prefix")
	env := []string{"PATH=" + tools, "HOME=" + home}
	before := tree(t, home, prefix)
	refused := func(t *testing.T, root, installer, want string, env []string) {
		t.Helper()
		r := sh(t, root, env, "dash", installer, "--prefix", prefix)
		t.Logf("install.sh refused:\n%s", r.out)
		if r.code == 0 || !strings.Contains(r.out, want) {
			t.Errorf("install.sh: %+v, want a failure saying %q", r, want)
		}
		if !strings.Contains(r.out, "nothing was installed") && !strings.Contains(r.out, "this host is") {
			t.Errorf("the refusal does not say nothing changed: %s", r.out)
		}
		if after := tree(t, home, prefix); !slices.Equal(after, before) {
			t.Errorf("a refused install changed:\n%s", strings.Join(after, "\n"))
		}
	}

	t.Run("archive does not match SHA256SUMS", func(t *testing.T) {
		// The same files, packed again: the unpacked files are fine, the archive is not the released one.
		root := unpack(t, dist, arch, tools)
		if r := sh(t, root, []string{"PATH=" + tools}, "sh", "-c", "tar -cf - "+topDir(arch)+" | gzip -1 > "+archiveName(arch)); r.code != 0 {
			t.Fatal(r.out)
		}
		refused(t, root, filepath.Join(root, topDir(arch), "install.sh"), "checksum mismatch: "+filepath.Join(root, archiveName(arch)), env)
	})
	t.Run("unpacked file changed", func(t *testing.T) {
		root := unpack(t, dist, arch, tools)
		os.Remove(filepath.Join(root, archiveName(arch)))
		bin := filepath.Join(root, topDir(arch), "kubectl-bkcache")
		f, _ := os.OpenFile(bin, os.O_APPEND|os.O_WRONLY, 0)
		f.Write([]byte{0})
		f.Close()
		refused(t, root, filepath.Join(root, topDir(arch), "install.sh"), "checksum mismatch for "+bin, env)
	})
	t.Run("wrong architecture", func(t *testing.T) {
		other := map[string]string{"amd64": "arm64", "arm64": "amd64"}[arch]
		root := unpack(t, dist, other, tools)
		refused(t, root, filepath.Join(root, topDir(other), "install.sh"), "this archive is for linux/"+other+" but this host is linux/"+arch, env)
	})
	t.Run("no docker", func(t *testing.T) {
		noDocker := toolbox(t, "kubectl")
		root := unpack(t, dist, arch, noDocker)
		refused(t, root, filepath.Join(root, topDir(arch), "install.sh"), "the docker CLI is not on PATH", []string{"PATH=" + noDocker, "HOME=" + home})
	})
}
