//go:build e2e

package disttest

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// toolbox is a directory of symlinks to the tools install.sh and the test use,
// and no others: above all no go. extra adds docker and kubectl.
func toolbox(t *testing.T, extra ...string) string {
	t.Helper()
	dir := t.TempDir()
	tools := []string{"sh", "dash", "tar", "gzip", "uname", "tr", "sed", "head", "cut", "awk", "grep", "cmp", "sha256sum",
		"mkdir", "mktemp", "cp", "mv", "rm", "rmdir", "chmod", "dirname", "basename", "cat", "ls", "id"}
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
		"docker bkcache up ", // Next: the first step after installing
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

	testUninstall(t, root, installer, prefix, home, env, before)
}

// testUninstall checks --uninstall after testInstall: it removes exactly what
// was installed, and leaves a file changed since the install.
func testUninstall(t *testing.T, root, installer, prefix, home string, env, before []string) {
	t.Helper()
	plugin := filepath.Join(home, ".docker", "cli-plugins", "docker-bkcache")
	kubectlPlugin := filepath.Join(prefix, "bin", "kubectl-bkcache")
	var r run
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
