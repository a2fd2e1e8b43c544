package nodes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/bkcache/bkcache/pkg/dockerd"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/bkcache/bkcache/manifests"
)

const cfg16 = `# site config
version = 2
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = ""
`

func opts(runID string) MirrorOptions {
	o := MirrorOptions{Registry: "10.0.0.5:5500", Upstreams: []string{"hub.bktencent.com", "docker.io"}}
	o.Access.RunID = runID
	if err := o.complete(); err != nil {
		panic(err)
	}
	if err := o.checkTarget(); err != nil {
		panic(err)
	}
	return o
}

var noAccess = &memAccess{}

func TestApplySecondRunRevert(t *testing.T) {
	ctx := context.Background()
	existing := "server = \"https://registry-1.docker.io\"\n\n[host.\"https://site-mirror:443\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
	n := newMemNode(map[string]string{
		DefaultContainerdConfig:                        cfg16,
		"/etc/containerd/certs.d/docker.io/hosts.toml": existing,
	})
	before := n.snapshot()
	o := opts("20260101T000000Z-aaaaaa")

	// Dry run: plan only.
	o.DryRun = true
	var r NodeReport
	r.Runtime = "containerd://1.6.20"
	if err := applyNode(ctx, o, n, &r, noAccess); err != nil {
		t.Fatal(err)
	}
	if r.Status != StatePlanned || !r.RestartNeeded || len(r.Files) != 4 {
		t.Fatalf("dry run: %+v", r)
	}
	if !maps.Equal(before, n.snapshot()) || n.restarts != 0 {
		t.Fatal("dry run changed the node")
	}

	o.DryRun = false
	r = NodeReport{Runtime: "containerd://1.6.20"}
	if err := applyNode(ctx, o, n, &r, noAccess); err != nil {
		t.Fatal(err)
	}
	if r.Status != StateChanged || !r.ConfigChanged || !r.Restarted || n.restarts != 1 {
		t.Fatalf("apply: %+v", r)
	}
	if got := string(n.files[DefaultContainerdConfig]); !strings.Contains(got, `config_path = "/etc/containerd/certs.d"`) || !strings.HasPrefix(got, "# site config\n") {
		t.Errorf("config.toml:\n%s", got)
	}
	dockerio := string(n.files["/etc/containerd/certs.d/docker.io/hosts.toml"])
	if i, j := strings.Index(dockerio, "http://10.0.0.5:5500"), strings.Index(dockerio, "https://site-mirror:443"); i < 0 || j < i {
		t.Errorf("docker.io hosts.toml: ours not first or the site mirror lost:\n%s", dockerio)
	}
	for _, p := range []string{"hub.bktencent.com", "10.0.0.5:5500"} {
		if _, ok := n.files["/etc/containerd/certs.d/"+p+"/hosts.toml"]; !ok {
			t.Errorf("no hosts.toml for %s", p)
		}
	}
	applied := n.snapshot()

	// Second run: nothing to do, no backup, no restart.
	o2 := opts("20260101T000100Z-bbbbbb")
	r = NodeReport{Runtime: "containerd://1.6.20"}
	if err := applyNode(ctx, o2, n, &r, noAccess); err != nil {
		t.Fatal(err)
	}
	if r.Status != StateUnchanged || len(r.Files) != 0 || n.restarts != 1 || r.Backup != "" {
		t.Fatalf("second run: %+v", r)
	}
	if !maps.Equal(applied, n.snapshot()) {
		t.Fatal("second run changed files")
	}

	// Revert: exact bytes back, created dirs gone, restart for config.toml.
	o3 := opts("20260101T000200Z-cccccc")
	o3.Revert = true
	r = NodeReport{Runtime: "containerd://1.6.20"}
	if err := revertNode(ctx, o3, n, &r); err != nil {
		t.Fatal(err)
	}
	if r.Status != StateReverted || n.restarts != 2 {
		t.Fatalf("revert: %+v", r)
	}
	if got := n.snapshot(); !maps.Equal(before, got) {
		t.Fatalf("after revert:\n%v\nwant:\n%v", got, before)
	}
	// Nothing left to revert.
	r = NodeReport{}
	if err := revertNode(ctx, o3, n, &r); err != nil || r.Status != StateUnchanged {
		t.Fatalf("second revert: %+v %v", r, err)
	}
}

func TestRevertKeepsLaterEdits(t *testing.T) {
	ctx := context.Background()
	n := newMemNode(map[string]string{DefaultContainerdConfig: "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n"})
	o := opts("20260101T000000Z-aaaaaa")
	if err := applyNode(ctx, o, n, &NodeReport{Runtime: "containerd://1.7.0"}, noAccess); err != nil {
		t.Fatal(err)
	}
	p := "/etc/containerd/certs.d/hub.bktencent.com/hosts.toml"
	n.files[p] = []byte("# edited by someone later\n")
	o.Revert = true
	var r NodeReport
	if err := revertNode(ctx, o, n, &r); err != nil {
		t.Fatal(err)
	}
	if string(n.files[p]) != "# edited by someone later\n" || !strings.Contains(strings.Join(r.Warnings, "\n"), "changed since") {
		t.Fatalf("revert overwrote a later edit: %+v", r)
	}
}

func TestApplyRefusesAndRollsBack(t *testing.T) {
	ctx := context.Background()
	legacy := "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n  endpoint = [\"http://m:5000\"]\n"
	n := newMemNode(map[string]string{DefaultContainerdConfig: legacy})
	o := opts("20260101T000000Z-aaaaaa")
	err := applyNode(ctx, o, n, &NodeReport{Runtime: "containerd://1.6.20"}, noAccess)
	if err == nil || !strings.Contains(err.Error(), "--migrate-legacy") || string(n.files[DefaultContainerdConfig]) != legacy {
		t.Fatalf("legacy mirrors: err %v", err)
	}
	o.MigrateLegacy = true
	if err := applyNode(ctx, o, n, &NodeReport{Runtime: "containerd://1.6.20"}, noAccess); err != nil {
		t.Fatal(err)
	}
	if b := string(n.files["/etc/containerd/certs.d/docker.io/hosts.toml"]); !strings.Contains(b, "http://m:5000") || !strings.Contains(b, "http://10.0.0.5:5500") {
		t.Errorf("migrated docker.io hosts.toml:\n%s", b)
	}

	// k3s: the generated config is found and refused with the registries.yaml hint.
	k := newMemNode(map[string]string{generatedConfigs[0]: "version = 3\n"})
	err = applyNode(ctx, opts("x"), k, &NodeReport{Runtime: "containerd://2.0.5-k3s1"}, noAccess)
	if err == nil || !strings.Contains(err.Error(), "registries.yaml") {
		t.Fatalf("k3s: %v", err)
	}

	// A restart that fails puts config.toml back and restarts again.
	f := newMemNode(map[string]string{DefaultContainerdConfig: cfg16})
	f.restartErr = errors.New("boom")
	err = applyNode(ctx, opts("y"), f, &NodeReport{Runtime: "containerd://1.6.20"}, noAccess)
	if err == nil || string(f.files[DefaultContainerdConfig]) != cfg16 || f.restarts != 2 {
		t.Fatalf("restart failure: err %v, restarts %d, config:\n%s", err, f.restarts, f.files[DefaultContainerdConfig])
	}
}

func TestCAFile(t *testing.T) {
	n := newMemNode(map[string]string{DefaultContainerdConfig: "version = 3\n"})
	o := opts("z")
	o.CA = []byte("-----BEGIN CERTIFICATE-----\n")
	if err := applyNode(context.Background(), o, n, &NodeReport{Runtime: "containerd://2.1.0"}, noAccess); err != nil {
		t.Fatal(err)
	}
	ca := "/etc/containerd/certs.d/10.0.0.5:5500/bkcache-ca.crt"
	if string(n.files[ca]) != string(o.CA) {
		t.Fatal("CA not copied")
	}
	if b := string(n.files["/etc/containerd/certs.d/hub.bktencent.com/hosts.toml"]); !strings.Contains(b, `ca = "`+ca+`"`) || !strings.Contains(b, "https://10.0.0.5:5500") {
		t.Errorf("hosts.toml does not use the CA over https:\n%s", b)
	}
}

func TestOptionsAndPaths(t *testing.T) {
	for _, p := range []string{"/etc/x", "/a/b.toml", "/etc/containerd/certs.d/10.0.0.5:5500/hosts.toml"} {
		if err := CheckPath(p); err != nil {
			t.Errorf("CheckPath(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", "rel", "/", "/a/../b", "/a//b", "/a\nb", "/a/"} {
		if CheckPath(p) == nil {
			t.Errorf("CheckPath(%q) accepted", p)
		}
	}
	for _, o := range []MirrorOptions{{Registry: "bad host"}, {Registry: "h:1", Restart: "sometimes"}, {Registry: "h:1", Upstreams: []string{"../x"}},
		{Registry: "h:1", Upstreams: []string{"_default"}}, {Registry: "h:1", BackupDir: "rel"}, {Registry: "http://h:1"}} {
		if err := o.complete(); err == nil && o.checkTarget() == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
	// Status and --revert need no registry: complete alone accepts them.
	st := MirrorOptions{}
	if err := st.complete(); err != nil || st.Restart != RestartAuto || st.Parallel != DefaultParallel {
		t.Errorf("complete() without a registry: %v %+v", err, st)
	}
	if a, b := NewRunID(), NewRunID(); a == b || len(a) > 63 {
		t.Errorf("run ids %q %q", a, b)
	}
}

func TestNodeAccessPodManifest(t *testing.T) {
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(manifests.NodeAccessPod, &pod); err != nil {
		t.Fatal(err)
	}
	c := pod.Spec.Containers[0]
	if !pod.Spec.HostPID || !pod.Spec.HostNetwork || c.SecurityContext == nil || !*c.SecurityContext.Privileged ||
		pod.Spec.Volumes[0].HostPath.Path != "/" || c.VolumeMounts[0].MountPath != hostMount ||
		pod.Labels[LabelManagedBy] != "bkcache" || pod.Spec.Tolerations[0].Operator != corev1.TolerationOpExists {
		t.Errorf("node-access pod: %+v", pod.Spec)
	}
}

func TestCacheName(t *testing.T) {
	for in, want := range map[string]string{
		"hub.bktencent.com/library/registry:2": "10.0.0.5:5500/library/registry:2",
		"busybox:1.36":                         "10.0.0.5:5500/library/busybox:1.36",
		"bitnami/redis:7":                      "10.0.0.5:5500/bitnami/redis:7",
		"localhost/x:1":                        "10.0.0.5:5500/x:1",
		"vm:4000/blueking/app@sha256:abc":      "10.0.0.5:5500/blueking/app@sha256:abc",
	} {
		if got := CacheName(in, "10.0.0.5:5500"); got != want {
			t.Errorf("CacheName(%q) = %q, want %q", in, got, want)
		}
	}
}

const (
	runID      = "20260101T000000Z-aaaaaa"
	runDir     = DefaultBackupDir + "/" + runID
	dockerHost = "/etc/containerd/certs.d/docker.io/hosts.toml"
	siteMirror = "server = \"https://registry-1.docker.io\"\n\n[host.\"https://site-mirror:443\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
)

// A run that fails at any step leaves the node exactly as it began: every file and
// directory, backups included, and the report names the step and what was undone.
func TestApplyAllOrNothing(t *testing.T) {
	boom := errors.New("boom")
	notRunnable := &CommandNotRunError{Node: "node-1", Command: "restart-it", Flag: "--restart-command", Err: &ExitError{Code: 127, Stderr: "sh: restart-it: not found"}}
	for _, tc := range []struct {
		name     string
		setup    func(n *memNode, a *memAccess, o *MirrorOptions)
		step     string
		restarts int      // restarts the run did in all
		want     []string // in the error
		dontWant []string
	}{
		{name: "backup dir", setup: func(n *memNode, _ *memAccess, _ *MirrorOptions) { n.failOn["mkdir "+DefaultBackupDir] = boom },
			step: stepBackup, want: []string{"backup failed: boom", "removed /var/lib/bkcache/"}},
		{name: "backup copy", setup: func(n *memNode, _ *memAccess, _ *MirrorOptions) { n.failOn["write "+runDir+"/001-hosts.toml"] = boom },
			step: stepBackup, want: []string{"backup failed", "removed " + runDir + "/"}},
		{name: "manifest", setup: func(n *memNode, _ *memAccess, _ *MirrorOptions) { n.failOn["write "+runDir+"/manifest.json"] = boom },
			step: stepBackup, want: []string{"the node is as it was before the run"}},
		// The directories are made with the backup, before any file is written.
		{name: "mkdir of a hosts dir", setup: func(n *memNode, _ *memAccess, _ *MirrorOptions) {
			n.failOn["mkdir /etc/containerd/certs.d/10.0.0.5:5500"] = boom
		}, step: stepWrite + "/etc/containerd/certs.d/10.0.0.5:5500/hosts.toml",
			want: []string{"removed /etc/containerd/certs.d/hub.bktencent.com/, " + runDir + "/"}, dontWant: []string{"restored"}},
		{name: "hosts.toml write", setup: func(n *memNode, _ *memAccess, _ *MirrorOptions) { n.failOn["write "+dockerHost] = boom },
			step: stepWrite + dockerHost, want: []string{"restored " + dockerHost, "removed /etc/containerd/certs.d/hub.bktencent.com/hosts.toml", "removed /etc/containerd/certs.d/hub.bktencent.com/"}},
		{name: "config.toml write", setup: func(n *memNode, _ *memAccess, _ *MirrorOptions) { n.failOn["write "+DefaultContainerdConfig] = boom },
			step: stepWrite + DefaultContainerdConfig, want: []string{"restored " + DefaultContainerdConfig, "removed /etc/containerd/certs.d/10.0.0.5:5500/hosts.toml"}},
		{name: "restart command cannot run", setup: func(n *memNode, _ *memAccess, _ *MirrorOptions) { n.restartErr = notRunnable },
			step: stepRestart, restarts: 1,
			want:     []string{`the command "restart-it" could not run (exit status 127: sh: restart-it: not found): nothing was restarted`, "restored " + DefaultContainerdConfig, "removed /etc/containerd/certs.d/hub.bktencent.com/hosts.toml"},
			dontWant: []string{"did not come back", "restarted containerd on the restored"}},
		{name: "restart fails, restart on the old config works", setup: func(n *memNode, _ *memAccess, _ *MirrorOptions) {
			n.restartErr, n.restartErrOnce = errors.New("the CRI did not answer within 2m"), true
		}, step: stepRestart, restarts: 2, want: []string{"restart containerd failed: the CRI did not answer", "restarted containerd on the restored " + DefaultContainerdConfig}},
		{name: "verify", setup: func(_ *memNode, a *memAccess, o *MirrorOptions) {
			o.Verify = "hub.bktencent.com/library/registry:2"
			a.pulls = map[string]PullResult{"10.0.0.5:5500/library/registry:2": {Error: "ErrImagePull: not found"}}
		}, step: stepVerify, restarts: 2, want: []string{"verify failed: pull failed: 10.0.0.5:5500/library/registry:2: ErrImagePull", "restarted containerd on the restored"}},
	} {
		// Both ways of writing: in the backup's round trip when the plan saw the missing
		// directories, after it when the node cannot tell (plainNode).
		for _, plain := range []bool{false, true} {
			name := tc.name
			if plain {
				name += " (directories unknown)"
			}
			t.Run(name, func(t *testing.T) {
				n := newMemNode(map[string]string{DefaultContainerdConfig: cfg16, dockerHost: siteMirror})
				before := n.all()
				o, a := opts(runID), &memAccess{}
				tc.setup(n, a, &o)
				r := NodeReport{Node: "node-1", Runtime: "containerd://1.6.20"}
				var node Node = n
				if plain {
					node = plainNode{n}
				}
				err := applyNode(context.Background(), o, node, &r, a)
				if err == nil {
					t.Fatal("no error")
				}
				if r.Status != StateFailed || r.FailedStep != tc.step || r.Backup != "" {
					t.Errorf("report: status %s, step %q (want %q), backup %q", r.Status, r.FailedStep, tc.step, r.Backup)
				}
				if got := n.all(); !maps.Equal(before, got) {
					t.Errorf("node not as before:\n got %v\nwant %v", got, before)
				}
				if n.restarts != tc.restarts {
					t.Errorf("restarts = %d, want %d", n.restarts, tc.restarts)
				}
				for _, w := range append(tc.want, "rolled back: ") {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error lacks %q:\n%v", w, err)
					}
				}
				for _, w := range tc.dontWant {
					if strings.Contains(err.Error(), w) {
						t.Errorf("error says %q:\n%v", w, err)
					}
				}
				if len(r.RolledBack) == 0 || !strings.HasPrefix(err.Error(), tc.step+" failed: ") {
					t.Errorf("rolled back %q; error %v", r.RolledBack, err)
				}
			})
		}
	}
}

// When the rollback itself cannot finish, the backup stays and the message says what to do.
func TestRollbackThatFails(t *testing.T) {
	n := newMemNode(map[string]string{DefaultContainerdConfig: cfg16, dockerHost: siteMirror})
	n.restartErr = errors.New("the CRI did not answer within 2m")
	n.onRestart = func(n *memNode) { n.failOn["write "+DefaultContainerdConfig] = errors.New("exec: containerd is down") }
	r := NodeReport{Runtime: "containerd://1.6.20"}
	err := applyNode(context.Background(), opts(runID), n, &r, noAccess)
	if err == nil || r.Status != StateFailed {
		t.Fatalf("err %v, report %+v", err, r)
	}
	for _, w := range []string{"FAILED to put back " + DefaultContainerdConfig + " (exec: containerd is down)", "restored " + dockerHost,
		"runtime not restarted on a half-restored node", "the backup " + runDir + " is kept: run kubectl bkcache mirror --revert"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
	if _, ok := n.files[runDir+"/manifest.json"]; !ok || n.restarts != 1 {
		t.Errorf("backup gone or restarted again (%d)", n.restarts)
	}
	// --revert then finishes the job from that backup.
	delete(n.failOn, "write "+DefaultContainerdConfig)
	n.restartErr = nil
	o := opts("20260101T000100Z-bbbbbb")
	o.Revert = true
	r = NodeReport{Runtime: "containerd://1.6.20"}
	if err := revertNode(context.Background(), o, n, &r); err != nil || r.Status != StateReverted {
		t.Fatalf("revert: %v %+v", err, r)
	}
	if string(n.files[DefaultContainerdConfig]) != cfg16 || string(n.files[dockerHost]) != siteMirror {
		t.Errorf("after revert:\n%s", n.files[DefaultContainerdConfig])
	}
}

// Docker nodes: a reload command that cannot run is not run again on the old file.
func TestDockerReloadCannotRun(t *testing.T) {
	n := newMemNode(map[string]string{dockerd.DefaultPath: siteDaemon})
	n.dockerd = &memDockerd{running: []byte(siteDaemon)}
	before := n.all()
	o := opts(runID)
	o.DockerReloadCmd = "no-such-reload"
	r := NodeReport{Runtime: docker}
	err := applyNode(context.Background(), o, n, &r, noAccess)
	if err == nil || r.FailedStep != stepReload || !maps.Equal(before, n.all()) {
		t.Fatalf("err %v, step %q, node %v", err, r.FailedStep, n.all())
	}
	if !strings.Contains(err.Error(), `the command "no-such-reload" could not run`) || strings.Contains(err.Error(), "reloaded dockerd") ||
		fmt.Sprint(n.hostCmds) != "[no-such-reload]" {
		t.Errorf("err %v; host commands %q", err, n.hostCmds)
	}
}
