package kubectl

import (
	"bytes"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/bkcache/bkcache/internal/golden"
	"github.com/bkcache/bkcache/pkg/containerd"
	"github.com/bkcache/bkcache/pkg/dockerd"
	"github.com/bkcache/bkcache/pkg/nodes"
)

func TestMirrorFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"mirror"}, "--registry HOST:PORT is required"},
		{[]string{"mirror", "--registry", "h:1", "-o", "xml"}, "unknown output format"},
		{[]string{"mirror", "status", "-o", "xml"}, "unknown output format"},
		{[]string{"mirror", "--registry", "h:1", "--ca-file", "/nonexistent/ca.crt"}, "--ca-file"},
		{[]string{"mirror", "--registry", "h:1", "--restart", "sometimes"}, `--restart "sometimes": want auto or never`},
	} {
		var out, errOut bytes.Buffer
		root := NewRootCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		root.SetArgs(tc.args)
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}

// Reports as a four-node run produces them: containerd, Docker, a node that could not be
// reached (its files never read), a runtime bkcache does not configure.
var (
	unreachable = nodes.NodeReport{Node: "n3", Runtime: "containerd://1.7.0", Status: nodes.StateUnreachable, Seconds: 4.2,
		AccessImage: &nodes.AccessImage{Image: nodes.DefaultAccessImage, Source: nodes.ImagePull},
		Error:       "node n3: node-access pod kube-system/bkcache-node-x7k2p: ErrImagePull: failed to resolve reference; the node cannot pull " + nodes.DefaultAccessImage}
	skipped   = nodes.NodeReport{Node: "n4", Runtime: "cri-o://1.30.0", Status: nodes.StateSkipped, Warnings: []string{`runtime "cri-o://1.30.0": only containerd and docker are supported`}}
	hubHosts  = nodes.FileChange{Path: "/etc/containerd/certs.d/hub.bktencent.com/hosts.toml", Action: nodes.ActionCreate, Diff: "--- /dev/null\n+++ /etc/containerd/certs.d/hub.bktencent.com/hosts.toml\n@@ -0,0 +1,5 @@\n+# Written by kubectl bkcache mirror: pulls of hub.bktencent.com try the cache first.\n+server = \"https://hub.bktencent.com\"\n+\n+[host.\"http://10.0.0.5:5500\"]\n+  capabilities = [\"pull\", \"resolve\"]\n"}
	cfgChange = nodes.FileChange{Path: "/etc/containerd/config.toml", Action: nodes.ActionUpdate, Diff: "--- /etc/containerd/config.toml\n+++ /etc/containerd/config.toml\n@@ -1,3 +1,3 @@\n version = 2\n [plugins.\"io.containerd.grpc.v1.cri\".registry]\n-  config_path = \"\"\n+  config_path = \"/etc/containerd/certs.d\"\n"}
	daemon    = nodes.FileChange{Path: "/etc/docker/daemon.json", Action: nodes.ActionUpdate, Diff: "--- /etc/docker/daemon.json\n+++ /etc/docker/daemon.json\n@@ -1,3 +1,6 @@\n {\n-  \"log-driver\": \"json-file\"\n+  \"log-driver\": \"json-file\",\n+  \"insecure-registries\": [\n+    \"10.0.0.5:5500\"\n+  ]\n }\n"}
	onNode    = &nodes.AccessImage{Image: nodes.DefaultAccessImage, Source: nodes.ImageOnNode}
)

func planReports() []nodes.NodeReport {
	return []nodes.NodeReport{
		{Node: "n1", Runtime: "containerd://1.6.20", Status: nodes.StatePlanned, AccessImage: onNode, ConfigFile: "/etc/containerd/config.toml", CertsRoot: "/etc/containerd/certs.d",
			Files: []nodes.FileChange{hubHosts, cfgChange}, ConfigChanged: true, RestartNeeded: true, Seconds: 1.3},
		{Node: "n2", Runtime: "docker://20.10.24", Status: nodes.StatePlanned, ConfigFile: "/etc/docker/daemon.json", Files: []nodes.FileChange{daemon},
			AccessImage:   &nodes.AccessImage{Image: "docker.io/library/busybox:1.36", Source: nodes.ImageSubstitute},
			ConfigChanged: true, ReloadNeeded: true, Seconds: 1.1,
			Warnings: []string{"docker: registry-mirrors only apply to docker.io, so pulls of hub.bktencent.com do not use the cache on this node"}},
		unreachable, skipped,
	}
}

func applyReports() []nodes.NodeReport {
	rs := planReports()
	rs[0].Status, rs[0].Restarted, rs[0].RestartSeconds, rs[0].Backup, rs[0].Seconds = nodes.StateChanged, true, 2.4, "/var/lib/bkcache/backups/20260101T000000Z-aaaaaa", 4.8
	rs[1].Status, rs[1].Reloaded, rs[1].RestartSeconds, rs[1].Backup = nodes.StateChanged, true, 0.6, "/var/lib/bkcache/backups/20260101T000000Z-aaaaaa"
	rs[1].Verified = []nodes.PullResult{{Image: "10.0.0.5:5500/library/registry:2", Pulled: true, Seconds: 1.2}, {Image: "hub.bktencent.com/library/registry:2", Pulled: true, Seconds: 0.4}}
	rs[3] = nodes.NodeReport{Node: "n5", Runtime: "containerd://1.6.20", Status: nodes.StateFailed, AccessImage: onNode, ConfigFile: "/etc/containerd/config.toml",
		CertsRoot: "/etc/containerd/certs.d", Files: []nodes.FileChange{hubHosts, cfgChange}, ConfigChanged: true, RestartNeeded: true, Seconds: 1.9,
		FailedStep: "restart containerd", RolledBack: []string{"restored /etc/containerd/config.toml", "removed /etc/containerd/certs.d/hub.bktencent.com/hosts.toml",
			"removed /var/lib/bkcache/backups/20260101T000000Z-aaaaaa/, /etc/containerd/certs.d/hub.bktencent.com/"},
		Error: `restart containerd failed: node n5: the command "restart-containerd" could not run (exit status 127: sh: restart-containerd: not found): nothing was restarted; give the right command with --restart-command; rolled back: restored /etc/containerd/config.toml, removed /etc/containerd/certs.d/hub.bktencent.com/hosts.toml, removed /var/lib/bkcache/backups/20260101T000000Z-aaaaaa/, /etc/containerd/certs.d/hub.bktencent.com/; the node is as it was before the run`}
	return rs
}

func revertReports() []nodes.NodeReport {
	cfg := cfgChange
	cfg.Action = nodes.ActionRestore
	hub := hubHosts
	hub.Action = nodes.ActionRemove
	return []nodes.NodeReport{
		{Node: "n1", Runtime: "containerd://1.6.20", Status: nodes.StateReverted, AccessImage: onNode, ConfigFile: "/etc/containerd/config.toml", CertsRoot: "/etc/containerd/certs.d",
			Backup: "/var/lib/bkcache/backups/20260101T000000Z-aaaaaa", Files: []nodes.FileChange{cfg, hub}, ConfigChanged: true, RestartNeeded: true, Restarted: true, RestartSeconds: 2.2, Seconds: 3.9},
		{Node: "n2", Runtime: "docker://20.10.24", Status: nodes.StateUnchanged, Warnings: []string{"no backup to revert in /var/lib/bkcache/backups"}, Seconds: 0.9},
		unreachable,
	}
}

func statusReports() []nodes.NodeStatus {
	return []nodes.NodeStatus{
		{Node: "n1", Runtime: "containerd://1.6.20", Status: nodes.StateOK, AccessImage: onNode, ConfigFile: "/etc/containerd/config.toml",
			Config: &containerd.ConfigInfo{Exists: true, Version: 2, Flavor: containerd.FlavorContainerd, Registry: `plugins."io.containerd.grpc.v1.cri".registry`,
				ConfigPath: "/etc/containerd/certs.d", CertsRoot: "/etc/containerd/certs.d"},
			Hosts: map[string]containerd.HostsFile{"hub.bktencent.com": {Server: "https://hub.bktencent.com", Hosts: []string{"http://10.0.0.5:5500"}},
				"10.0.0.5:5500": {Server: "http://10.0.0.5:5500", Hosts: []string{"http://10.0.0.5:5500"}}},
			Backups: []string{"20260101T000000Z-aaaaaa"}},
		{Node: "n2", Runtime: "docker://20.10.24", Status: nodes.StateOK, ConfigFile: "/etc/docker/daemon.json",
			Docker: &dockerd.Config{InsecureRegistries: []string{"10.0.0.5:5500"}, RegistryMirrors: []string{"http://10.0.0.5:5500"}}},
		{Node: "n3", Runtime: "containerd://1.7.0", Status: nodes.StateUnreachable, AccessImage: unreachable.AccessImage, Error: unreachable.Error},
		{Node: "n4", Runtime: "cri-o://1.30.0", Status: nodes.StateSkipped, Warnings: skipped.Warnings},
	}
}

// TestMirrorGolden: the table and -o json|yaml of plan, apply, revert and status, byte for
// byte (go test ./plugins/kubectl/ -run Golden -update rewrites testdata/mirror/).
func TestMirrorGolden(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reports []nodes.NodeReport
		dryRun  bool
	}{
		{"plan", planReports(), true},
		{"apply", applyReports(), false},
		{"revert", revertReports(), false},
	} {
		for _, format := range []string{"", "json", "yaml"} {
			var b bytes.Buffer
			if err := printReports(&b, format, tc.reports, tc.dryRun); err != nil {
				t.Fatal(err)
			}
			golden.Assert(t, b.Bytes(), "mirror/"+tc.name+"."+orDefault(format, "txt"))
		}
	}
	for _, format := range []string{"", "json", "yaml"} {
		var b bytes.Buffer
		if err := printStatus(&b, format, statusReports()); err != nil {
			t.Fatal(err)
		}
		golden.Assert(t, b.Bytes(), "mirror/status."+orDefault(format, "txt"))
	}
	if !nodes.Failed(applyReports()) || !nodes.Failed(planReports()) || nodes.Failed(planReports()[:2]) {
		t.Error("Failed(): failed and unreachable nodes fail the command, planned ones do not")
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
