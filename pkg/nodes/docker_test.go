package nodes

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/pkg/dockerd"
)

const (
	docker = "docker://20.10.24"
	// A typical node's daemon.json: keys bkcache must not disturb, and a site mirror.
	siteDaemon = "{\n    \"exec-opts\": [\"native.cgroupdriver=systemd\"],\n    \"log-driver\": \"json-file\",\n    \"log-opts\": {\"max-size\": \"100m\"},\n    \"registry-mirrors\": [\"https://mirror.site\"],\n    \"data-root\": \"/data/docker\"\n}\n"
)

func running(t *testing.T, n *memNode) dockerd.Config {
	t.Helper()
	c, err := dockerd.Parse(n.dockerd.running)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDockerApplySecondRunRevert(t *testing.T) {
	ctx := context.Background()
	n := newMemNode(map[string]string{dockerd.DefaultPath: siteDaemon, DefaultContainerdConfig: cfg16})
	n.dockerd = &memDockerd{running: []byte(siteDaemon)}
	before := n.snapshot()
	o := opts("20260101T000000Z-aaaaaa") // upstreams hub.bktencent.com and docker.io

	o.DryRun = true
	r := NodeReport{Runtime: docker}
	if err := applyNode(ctx, o, n, &r, noAccess); err != nil {
		t.Fatal(err)
	}
	if r.Status != StatePlanned || !r.ReloadNeeded || r.RestartNeeded || len(r.Files) != 1 || r.Files[0].Path != dockerd.DefaultPath ||
		!strings.Contains(r.Files[0].Diff, `+        "10.0.0.5:5500"`) {
		t.Fatalf("dry run: %+v", r)
	}
	if !maps.Equal(before, n.snapshot()) || len(n.hostCmds) != 0 {
		t.Fatalf("dry run changed the node or ran %q", n.hostCmds)
	}

	o.DryRun = false
	r = NodeReport{Runtime: docker}
	if err := applyNode(ctx, o, n, &r, noAccess); err != nil {
		t.Fatal(err)
	}
	if r.Status != StateChanged || !r.Reloaded || r.Restarted || n.restarts != 0 || r.Backup == "" {
		t.Fatalf("apply: %+v (containerd restarts %d)", r, n.restarts)
	}
	got := running(t, n)
	if !slices.Equal(got.InsecureRegistries, []string{"10.0.0.5:5500"}) || !slices.Equal(got.RegistryMirrors, []string{"http://10.0.0.5:5500", "https://mirror.site"}) {
		t.Errorf("dockerd runs with %+v", got)
	}
	daemon := string(n.files[dockerd.DefaultPath])
	for _, keep := range []string{`"native.cgroupdriver=systemd"`, `"max-size": "100m"`, `"data-root": "/data/docker"`} {
		if !strings.Contains(daemon, keep) {
			t.Errorf("daemon.json lost %s:\n%s", keep, daemon)
		}
	}
	if string(n.files[DefaultContainerdConfig]) != cfg16 || n.dirs["/etc/containerd/certs.d"] {
		t.Error("containerd files touched on a Docker node")
	}
	if w := strings.Join(r.Warnings, "\n"); !strings.Contains(w, "pulls of hub.bktencent.com do not use the cache") {
		t.Errorf("no warning about non-docker.io upstreams: %q", r.Warnings)
	}
	applied, cmds := n.snapshot(), len(n.hostCmds)

	r = NodeReport{Runtime: docker}
	if err := applyNode(ctx, opts("20260101T000100Z-bbbbbb"), n, &r, noAccess); err != nil {
		t.Fatal(err)
	}
	if r.Status != StateUnchanged || r.Reloaded || r.Backup != "" || len(n.hostCmds) != cmds || !maps.Equal(applied, n.snapshot()) {
		t.Fatalf("second run: %+v, host commands %q", r, n.hostCmds[cmds:])
	}

	o3 := opts("20260101T000200Z-cccccc")
	o3.Revert = true
	r = NodeReport{Runtime: docker}
	if err := revertNode(ctx, o3, n, &r); err != nil {
		t.Fatal(err)
	}
	if r.Status != StateReverted || !r.Reloaded || n.restarts != 0 || !maps.Equal(before, n.snapshot()) {
		t.Fatalf("revert: %+v\n%v", r, n.snapshot())
	}
	if string(n.dockerd.running) != siteDaemon {
		t.Errorf("dockerd not reloaded on the old file: %s", n.dockerd.running)
	}
}

func TestDockerMissingFileTLSAndCA(t *testing.T) {
	ctx := context.Background()
	n := newMemNode(nil)
	n.dockerd = &memDockerd{}
	before := n.snapshot()
	o := opts("20260101T000000Z-aaaaaa")
	o.CA = []byte("-----BEGIN CERTIFICATE-----\n")
	r := NodeReport{Runtime: docker}
	if err := applyNode(ctx, o, n, &r, noAccess); err != nil {
		t.Fatal(err)
	}
	ca := "/etc/docker/certs.d/10.0.0.5:5500/bkcache-ca.crt"
	if string(n.files[ca]) != string(o.CA) {
		t.Errorf("CA not in %s: %v", ca, slices.Sorted(maps.Keys(n.files)))
	}
	got := running(t, n)
	if len(got.InsecureRegistries) != 0 || !slices.Equal(got.RegistryMirrors, []string{"https://10.0.0.5:5500"}) {
		t.Errorf("with a CA: %+v\n%s", got, n.files[dockerd.DefaultPath])
	}
	o.Revert = true
	if err := revertNode(ctx, o, n, &NodeReport{Runtime: docker}); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(before, n.snapshot()) || n.dockerd.running != nil {
		t.Fatalf("revert left %v (dockerd runs %q)", n.snapshot(), n.dockerd.running)
	}
}

func TestDockerRefusedReloadRollsBack(t *testing.T) {
	ctx := context.Background()
	n := newMemNode(map[string]string{dockerd.DefaultPath: siteDaemon})
	n.dockerd = &memDockerd{running: []byte(siteDaemon), refuse: true}
	o := opts("20260101T000000Z-aaaaaa")
	o.ReloadTimeout = time.Second
	err := applyNode(ctx, o, n, &NodeReport{Runtime: docker}, noAccess)
	if err == nil || !strings.Contains(err.Error(), "journalctl -u docker") || !strings.Contains(err.Error(), "rolled back: restored /etc/docker/daemon.json, reloaded dockerd on the restored") {
		t.Fatalf("refused reload: %v", err)
	}
	if string(n.files[dockerd.DefaultPath]) != siteDaemon {
		t.Fatalf("daemon.json not restored:\n%s", n.files[dockerd.DefaultPath])
	}

	// A node without the docker CLI: applied and reloaded, with a warning that it is unconfirmed.
	n = newMemNode(map[string]string{dockerd.DefaultPath: "{}"})
	n.dockerd = &memDockerd{noCLI: true}
	r := NodeReport{Runtime: docker}
	if err := applyNode(ctx, o, n, &r, noAccess); err != nil || !strings.Contains(strings.Join(r.Warnings, "\n"), "could not confirm") {
		t.Fatalf("no CLI: %v %+v", err, r)
	}

	// --restart never: written, not reloaded, said so.
	n = newMemNode(nil)
	n.dockerd = &memDockerd{}
	o.Restart = RestartNever
	r = NodeReport{Runtime: docker}
	if err := applyNode(ctx, o, n, &r, noAccess); err != nil || r.Reloaded || len(n.hostCmds) != 0 || !strings.Contains(strings.Join(r.Warnings, "\n"), "--restart never") {
		t.Fatalf("--restart never: %v %+v %q", err, r, n.hostCmds)
	}
}

func TestDockerInvalidDaemonJSON(t *testing.T) {
	bad := "{\n  \"log-driver\": \"json-file\",\n}\n"
	n := newMemNode(map[string]string{dockerd.DefaultPath: bad})
	n.dockerd = &memDockerd{}
	err := applyNode(context.Background(), opts("x"), n, &NodeReport{Runtime: docker}, noAccess)
	if err == nil || !strings.Contains(err.Error(), "node-1: /etc/docker/daemon.json: not valid JSON") {
		t.Fatalf("err %v", err)
	}
	if string(n.files[dockerd.DefaultPath]) != bad || len(n.hostCmds) != 0 || n.dirs[DefaultBackupDir] {
		t.Fatal("an invalid daemon.json led to changes")
	}
}
