//go:build e2e

package disttest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeRelease writes what make dist writes for one architecture, with small
// scripts for binaries and the repository's install.sh: enough for install.sh,
// in seconds instead of a release build. It returns the directory holding the
// archive, SHA256SUMS and the unpacked tree.
func fakeRelease(t *testing.T, repo, arch string) string {
	t.Helper()
	installer, err := os.ReadFile(filepath.Join(repo, "scripts", "install.sh"))
	if err != nil {
		t.Fatal(err)
	}
	top := topDir(arch)
	files := map[string][]byte{
		"docker-bkcache":  []byte("#!/bin/sh\necho docker-bkcache " + testVersion + "\n"),
		"kubectl-bkcache": []byte("#!/bin/sh\necho kubectl-bkcache " + testVersion + "\n"),
		"install.sh":      installer,
		"RELEASE":         []byte("name=bkcache\nversion=" + testVersion + "\nos=linux\narch=" + arch + "\n"),
	}
	var contents strings.Builder
	for _, name := range slices.Sorted(maps.Keys(files)) {
		s := sha256.Sum256(files[name])
		fmt.Fprintf(&contents, "%s  %s\n", hex.EncodeToString(s[:]), name)
	}
	files["CONTENTS.sha256"] = []byte(contents.String())

	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: top + "/", Typeflag: tar.TypeDir, Mode: 0o755})
	for _, name := range slices.Sorted(maps.Keys(files)) {
		mode := int64(0o644)
		if strings.HasSuffix(name, "bkcache") || name == "install.sh" {
			mode = 0o755
		}
		tw.WriteHeader(&tar.Header{Name: top + "/" + name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(files[name]))})
		tw.Write(files[name])
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, archiveName(arch)), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(buf.Bytes())
	sums := hex.EncodeToString(s[:]) + "  " + archiveName(arch) + "\n"
	if err := os.WriteFile(filepath.Join(root, "SHA256SUMS"), []byte(sums), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-xzf", filepath.Join(root, archiveName(arch)), "-C", root).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	return root
}

// install.sh installs the files of the archive it verified, not whatever sits
// unpacked beside it: a binary replaced together with its CONTENTS.sha256
// line is refused. And root is not told to run as root.
func TestInstallUsesTheVerifiedArchive(t *testing.T) {
	repo := repoRoot(t)
	arch := hostArch(t)
	tools := toolbox(t, "docker", "kubectl")
	home := filepath.Join(t.TempDir(), "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	prefix := filepath.Join(t.TempDir(), "prefix")
	env := []string{"PATH=" + tools, "HOME=" + home}

	t.Run("replaced binary and CONTENTS line", func(t *testing.T) {
		root := fakeRelease(t, repo, arch)
		dir := filepath.Join(root, topDir(arch))
		evil := []byte("#!/bin/sh\necho not the released kubectl-bkcache\n")
		if err := os.WriteFile(filepath.Join(dir, "kubectl-bkcache"), evil, 0o755); err != nil {
			t.Fatal(err)
		}
		contents, _ := os.ReadFile(filepath.Join(dir, "CONTENTS.sha256"))
		s := sha256.Sum256(evil)
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(string(contents)), "\n") {
			if strings.HasSuffix(l, "  kubectl-bkcache") {
				l = hex.EncodeToString(s[:]) + "  kubectl-bkcache"
			}
			lines = append(lines, l)
		}
		if err := os.WriteFile(filepath.Join(dir, "CONTENTS.sha256"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		before := tree(t, home, prefix)
		r := sh(t, root, env, "dash", filepath.Join(dir, "install.sh"), "--prefix", prefix)
		if r.code == 0 || !strings.Contains(r.out, "is not the file in "+filepath.Join(root, archiveName(arch))) || !strings.Contains(r.out, "nothing was installed") {
			t.Errorf("install.sh with a replaced binary: %+v; want a refusal naming the archive", r)
		}
		if after := tree(t, home, prefix); !slices.Equal(after, before) {
			t.Errorf("a refused install changed:\n%s", strings.Join(after, "\n"))
		}
	})

	t.Run("untouched release installs from the archive", func(t *testing.T) {
		root := fakeRelease(t, repo, arch)
		tmp := t.TempDir()
		r := sh(t, root, append(env, "TMPDIR="+tmp), "dash", filepath.Join(root, topDir(arch), "install.sh"), "--prefix", prefix)
		if r.code != 0 || !strings.Contains(r.out, "matches "+filepath.Join(root, "SHA256SUMS")+"; installing from it") {
			t.Fatalf("install.sh: %+v", r)
		}
		got, _ := os.ReadFile(filepath.Join(prefix, "bin", "kubectl-bkcache"))
		if !strings.Contains(string(got), "kubectl-bkcache "+testVersion) {
			t.Errorf("installed kubectl-bkcache is %q", got)
		}
		if left, _ := os.ReadDir(tmp); len(left) > 0 {
			t.Errorf("install.sh left %d entries in TMPDIR, e.g. %s", len(left), left[0].Name())
		}
	})

	t.Run("no write access", func(t *testing.T) {
		root := fakeRelease(t, repo, arch)
		locked := filepath.Join(t.TempDir(), "locked")
		if err := os.Mkdir(locked, 0o755); err != nil {
			t.Fatal(err)
		}
		// Root writes anywhere but on a read-only file system; anyone else not in a 0555 directory.
		wantHint, notHint := "run as root", "read-only"
		if os.Geteuid() == 0 {
			if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", locked).CombinedOutput(); err != nil {
				t.Fatalf("mount a read-only tmpfs: %v: %s", err, out)
			}
			t.Cleanup(func() { exec.Command("umount", locked).Run() })
			wantHint, notHint = "read-only", "run as root"
		} else if err := os.Chmod(locked, 0o555); err != nil {
			t.Fatal(err)
		}
		r := sh(t, root, env, "dash", filepath.Join(root, topDir(arch), "install.sh"), "--prefix", locked)
		if r.code == 0 || !strings.Contains(r.out, "cannot write to "+locked) || !strings.Contains(r.out, wantHint) || strings.Contains(r.out, notHint) {
			t.Errorf("install.sh into an unwritable prefix (euid %d): %+v; want a refusal saying %q, not %q", os.Geteuid(), r, wantHint, notHint)
		}
	})
}
