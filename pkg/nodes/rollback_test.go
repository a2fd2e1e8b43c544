package nodes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/bkcache/bkcache/pkg/dockerd"
)

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
		{name: "mkdir of a hosts dir", setup: func(n *memNode, _ *memAccess, _ *MirrorOptions) {
			n.failOn["mkdir /etc/containerd/certs.d/10.0.0.5:5500"] = boom
		}, step: stepWrite + "/etc/containerd/certs.d/10.0.0.5:5500/hosts.toml",
			want: []string{"removed /etc/containerd/certs.d/hub.bktencent.com/hosts.toml", "restored " + dockerHost}},
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
		t.Run(tc.name, func(t *testing.T) {
			n := newMemNode(map[string]string{DefaultContainerdConfig: cfg16, dockerHost: siteMirror})
			before := n.all()
			o, a := opts(runID), &memAccess{}
			tc.setup(n, a, &o)
			r := NodeReport{Node: "node-1", Runtime: "containerd://1.6.20"}
			err := applyNode(context.Background(), o, n, &r, a)
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

// A revert that fails half-way leaves the node as applied, and the backup ready for a retry.
func TestRevertAllOrNothing(t *testing.T) {
	ctx := context.Background()
	n := newMemNode(map[string]string{DefaultContainerdConfig: cfg16, dockerHost: siteMirror})
	if err := applyNode(ctx, opts(runID), n, &NodeReport{Runtime: "containerd://1.6.20"}, noAccess); err != nil {
		t.Fatal(err)
	}
	applied := n.all()
	n.restartErr = &CommandNotRunError{Node: "node-1", Command: "x", Flag: "--restart-command", Err: &ExitError{Code: 127}}
	o := opts("20260101T000100Z-bbbbbb")
	o.Revert = true
	r := NodeReport{Runtime: "containerd://1.6.20"}
	err := revertNode(ctx, o, n, &r)
	if err == nil || r.FailedStep != stepRestart || !maps.Equal(applied, n.all()) {
		t.Fatalf("err %v, step %q; node changed: %v", err, r.FailedStep, !maps.Equal(applied, n.all()))
	}
	n.restartErr = nil
	if err := revertNode(ctx, o, n, &NodeReport{Runtime: "containerd://1.6.20"}); err != nil {
		t.Fatalf("second revert: %v", err)
	}
	if string(n.files[DefaultContainerdConfig]) != cfg16 {
		t.Error("not reverted")
	}
}
