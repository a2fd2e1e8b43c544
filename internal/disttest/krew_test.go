//go:build e2e

package disttest

import (
	"archive/tar"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/version"
	"sigs.k8s.io/yaml"
)

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
