//go:build e2e

package docker

import (
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// uniqueTag is a tag of our own for the registry image: tests untag or delete
// it, never the shared local image itself.
func uniqueTag(t *testing.T, what string) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	tag := "bkcache.local/registry-" + what + ":" + hex.EncodeToString(b)
	t.Cleanup(func() { exec.Command("docker", "rmi", tag).Run() }) // no -f: untags, or deletes an image only this tag names
	return tag
}

func absent(t *testing.T, image string) {
	t.Helper()
	if r := runDocker(t, "", "image", "inspect", image); r.code == 0 {
		t.Fatalf("image %s is on the engine, want it absent", image)
	}
}

// up --image-archive with `docker save` output: the engine lacks the image
// (a unique tag of the local registry image, saved then untagged), up loads it
// through the Engine API and runs the cache from it.
func TestUpLoadsImageArchive(t *testing.T) {
	upstream := registrytest.Start(t)
	img, err := registrytest.Image(2, 128*1024, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := upstream.Push("blueking/app:v1", img); err != nil {
		t.Fatal(err)
	}
	tag := uniqueTag(t, "archive-e2e")
	saved := filepath.Join(t.TempDir(), "registry.tar")
	mustDocker(t, "tag", registryImage, tag)
	mustDocker(t, "save", "-o", saved, tag)
	mustDocker(t, "rmi", tag) // only the tag: registryImage keeps the image
	absent(t, tag)

	// An archive without --image: refused before anything is loaded or created, naming what it holds.
	wrong := newTestCache(t)
	missing := strings.Replace(tag, "archive-e2e:", "archive-e2e:not-", 1)
	r := runDocker(t, "", wrong.upArgs(upstream.URL, "--image", missing, "--image-archive", saved)...)
	if r.code == 0 || !strings.Contains(r.stderr, "does not contain "+missing) || !strings.Contains(r.stderr, "it holds: "+tag) {
		t.Errorf("up with an archive lacking --image: %s", r)
	}
	absent(t, tag)
	if r := runDocker(t, "", "container", "inspect", "proxy-"+wrong.name); r.code == 0 {
		t.Errorf("a refused up created container proxy-%s", wrong.name)
	}

	c := newTestCache(t)
	r = mustDocker(t, c.upArgs(upstream.URL, "--image", tag, "--image-archive", saved)...)
	if !strings.Contains(r.stderr, "loaded "+tag) || !strings.Contains(r.stdout, "cache "+c.name+": created") {
		t.Errorf("up --image-archive did not say it loaded %s and created the cache:\n%s", tag, r)
	}
	if got := strings.TrimSpace(mustDocker(t, "container", "inspect", "-f", "{{.Config.Image}}", "proxy-"+c.name).stdout); got != tag {
		t.Errorf("cache container runs %s, want %s", got, tag)
	}
	ref := c.addr() + "/blueking/app:v1"
	t.Cleanup(func() { dockerRmi(t, ref) })
	mustDocker(t, "pull", ref)

	// Again: the engine has the image now, nothing is loaded and nothing changes.
	r = mustDocker(t, c.upArgs(upstream.URL, "--image", tag, "--image-archive", saved)...)
	if !strings.Contains(r.stderr, "is on the engine already") || !strings.Contains(r.stdout, "unchanged") {
		t.Errorf("second up --image-archive:\n%s", r)
	}
}

// The release's cache image: scripts/registry-image.sh -o writes a gzip'd
// docker save archive without the engine (as make dist does); up loads and runs it.
func TestUpLoadsReleaseRegistryImage(t *testing.T) {
	upstream := registrytest.Start(t)
	tag := uniqueTag(t, "release-e2e")
	archive := filepath.Join(t.TempDir(), "registry-image.tar.gz")
	out, err := exec.Command(filepath.Join(repoRoot(), "scripts", "registry-image.sh"), "-o", archive, tag).CombinedOutput()
	if err != nil {
		t.Fatalf("registry-image.sh -o: %v\n%s", err, out)
	}
	absent(t, tag)
	c := newTestCache(t)
	r := mustDocker(t, c.upArgs(upstream.URL, "--image", tag, "--image-archive", archive)...)
	if !strings.Contains(r.stderr, "loaded "+tag+" (linux/") {
		t.Errorf("up did not load %s from %s:\n%s", tag, archive, r)
	}
	if r := runDocker(t, "", "bkcache", "status", c.name); r.code != 0 || !strings.Contains(r.stdout, "running") {
		t.Errorf("the cache from the release image does not run: %s", r)
	}
}
