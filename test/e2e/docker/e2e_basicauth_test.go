//go:build e2e

package docker

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/bkcache/bkcache/internal/registrytest"
)

// An upstream with Basic auth (registry:2 with htpasswd, as an intranet
// registry or Nexus): a wrong password is named at up; with the right one,
// docker pull gets manifests (by tag and digest) and blobs through the
// front, and the password shows nowhere but the 0600 config file.
func TestFrontBasicAuthUpstream(t *testing.T) {
	const user, secret = "bkuser", "Basic-S3cret-9c1d"
	dir := t.TempDir()
	htpasswd := writeHtpasswd(t, dir, user, secret)
	dist := registrytest.StartDistribution(t, registrytest.WithHtpasswd(htpasswd))
	img, err := registrytest.Image(2, 256<<10, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if err := registrytest.PushTo(dist.Addr, "blueking/basic:1", img, remote.WithAuth(&authn.Basic{Username: user, Password: secret})); err != nil {
		t.Fatal(err)
	}
	upstream := "http://" + dist.Addr
	c := newTestCache(t)

	wrong := runDocker(t, "not-the-password\n", append(c.upArgs(upstream), "--username", user, "--password-stdin")...)
	if wrong.code == 0 || !strings.Contains(wrong.stderr, `rejected the credentials of user "`+user+`"`) {
		t.Fatalf("up with a wrong password:\n%s", wrong)
	}
	up := runDocker(t, secret+"\n", append(c.upArgs(upstream), "--username", user, "--password-stdin")...)
	if up.code != 0 {
		t.Fatalf("up with the right password:\n%s", up)
	}
	byTag := c.addr() + "/blueking/basic:1"
	d, _ := img.Digest()
	byDigest := c.addr() + "/blueking/basic@" + d.String()
	t.Cleanup(func() { dockerRmi(t, byTag, byDigest) })
	mustDocker(t, "pull", "-q", byTag)
	mustDocker(t, "pull", "-q", byDigest)
	st := c.frontStatus(t)
	if st.Counters.BlobFetches != 3 {
		t.Errorf("the front fetched %d blobs from the upstream, want 3 (config and 2 layers)", st.Counters.BlobFetches)
	}

	inspect := mustDocker(t, "inspect", "proxy-"+c.name)
	logs := mustDocker(t, "bkcache", "logs", c.name)
	ps, _ := exec.Command("ps", "-eww", "-o", "args").Output()
	for what, text := range map[string]string{
		"up output": up.stdout + up.stderr, "docker inspect": inspect.stdout, "logs": logs.stdout + logs.stderr, "ps": string(ps),
	} {
		if strings.Contains(text, secret) {
			t.Errorf("the upstream password appears in %s", what)
		}
	}
	info, err := os.Stat(filepath.Join(c.configDir, c.name+".yaml"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("config file: %v, %v", err, info)
	}
}
