package kubectl

import (
	"bytes"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"

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

func TestPrintReports(t *testing.T) {
	reports := []nodes.NodeReport{
		{Node: "n1", Runtime: "containerd://1.6.20", Status: "planned", CertsRoot: "/etc/containerd/certs.d", RestartNeeded: true, ConfigChanged: true,
			Files: []nodes.FileChange{{Path: "/etc/containerd/certs.d/hub.bktencent.com/hosts.toml", Action: "create", Diff: "--- /dev/null\n+++ x\n"}}},
		{Node: "n2", Runtime: "cri-o://1.30", Status: "skipped", Warnings: []string{"runtime cri-o"}},
		{Node: "n4", Runtime: "docker://20.10", Status: "planned", ReloadNeeded: true, ConfigChanged: true,
			Files: []nodes.FileChange{{Path: "/etc/docker/daemon.json", Action: "update", Diff: "+  \"insecure-registries\"\n"}}},
		{Node: "n3", Runtime: "containerd://1.7.0", Status: "failed", Error: "boom"},
	}
	var b bytes.Buffer
	if err := printReports(&b, "", reports, true); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# node n1", "+++ x", "create hub.bktencent.com/hosts.toml", "would", "boom", "skipped",
		"# node n4 (docker://20.10): 1 file(s), dockerd reload needed", "update /etc/docker/daemon.json", "daemon.json changed"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
	if !nodes.Failed(reports) {
		t.Error("Failed() = false with a failed node")
	}
	b.Reset()
	if err := printReports(&b, "json", reports, false); err != nil || !strings.Contains(b.String(), `"status": "failed"`) {
		t.Errorf("json: %v\n%s", err, b.String())
	}
}
