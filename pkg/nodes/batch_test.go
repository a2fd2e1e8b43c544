package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
)

// The manifest lists the directories the run created, whether they were known before the
// writes (one round trip) or recorded as they came, and --revert removes exactly those.
func TestApplyRecordsCreatedDirs(t *testing.T) {
	for _, plain := range []bool{false, true} {
		n := newMemNode(map[string]string{DefaultContainerdConfig: cfg16, dockerHost: siteMirror})
		before := n.all()
		var node Node = n
		if plain {
			node = plainNode{n}
		}
		r := NodeReport{Runtime: "containerd://1.6.20"}
		if err := applyNode(context.Background(), opts(runID), node, &r, noAccess); err != nil || r.Backup != runDir {
			t.Fatalf("plain %v: %v, backup %q", plain, err, r.Backup)
		}
		var b backup
		if err := json.Unmarshal(n.files[runDir+"/manifest.json"], &b); err != nil {
			t.Fatal(err)
		}
		want := []string{"/etc/containerd/certs.d/hub.bktencent.com", "/etc/containerd/certs.d/10.0.0.5:5500"}
		if !slices.Equal(b.CreatedDirs, want) {
			t.Errorf("plain %v: createdDirs %q, want %q", plain, b.CreatedDirs, want)
		}
		o := opts("20260101T000200Z-cccccc")
		o.Revert = true
		r = NodeReport{Runtime: "containerd://1.6.20"}
		if err := revertNode(context.Background(), o, node, &r); err != nil {
			t.Fatal(err)
		}
		got := n.all()
		maps.DeleteFunc(got, func(p, _ string) bool { return strings.HasPrefix(p, "/var/lib/bkcache") })
		maps.DeleteFunc(before, func(p, _ string) bool { return strings.HasPrefix(p, "/var/lib/bkcache") })
		if !maps.Equal(got, before) {
			t.Errorf("plain %v: after revert\n%v\nwant\n%v", plain, got, before)
		}
	}
}

// A directory that appears or goes between the plan and the writes fails the run, which
// rolls back: the manifest would otherwise name directories the run did not create.
func TestApplyNodeChangedMeanwhile(t *testing.T) {
	n := newMemNode(map[string]string{DefaultContainerdConfig: cfg16, dockerHost: siteMirror})
	before := n.all()
	n.staleMissing = map[string][]string{"/etc/containerd/certs.d/hub.bktencent.com": nil} // seen as there
	r := NodeReport{Runtime: "containerd://1.6.20"}
	err := applyNode(context.Background(), opts(runID), n, &r, noAccess)
	if err == nil || r.FailedStep != stepWrite+"/etc/containerd/certs.d/hub.bktencent.com/hosts.toml" ||
		!strings.Contains(err.Error(), "the node changed during the run; run again") {
		t.Fatalf("err %v, step %q", err, r.FailedStep)
	}
	if got := n.all(); !maps.Equal(got, before) {
		t.Errorf("node not as before:\n got %v\nwant %v", got, before)
	}
	if len(n.files) != 2 || n.restarts != 0 {
		t.Errorf("files %v, restarts %d", slices.Sorted(maps.Keys(n.files)), n.restarts)
	}
}

func TestSplitBatchOutput(t *testing.T) {
	for _, tc := range []struct {
		name  string
		out   string
		outs  []string
		codes []int
	}{
		{"none", "", nil, nil},
		{"two", "abc\nde\n\n#0 0\n/x\n\n#1 0\n", []string{"abc\nde\n\n", "/x\n\n"}, []int{0, 0}},
		{"no newline before", "sha\n#0 0\n", []string{"sha\n"}, []int{0}},
		{"failed", "\n#0 0\n\n#1 4\n", []string{"\n", "\n"}, []int{0, 4}},
		{"cut short", "abc\n\n#0 0\npartial", []string{"abc\n\n"}, []int{0}},
		{"markers in order only", "\n#1 0\n\n#0 0\n", []string{"\n#1 0\n\n"}, []int{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outs, codes := splitBatchOutput([]byte(tc.out))
			if !slices.Equal(outs, tc.outs) || !slices.Equal(codes, tc.codes) {
				t.Errorf("got %q %v, want %q %v", outs, codes, tc.outs, tc.codes)
			}
		})
	}
	if got := stderrOf([]byte("#0\nwarn\n#1\nmkdir: denied\n"), 1); got != "mkdir: denied\n" {
		t.Errorf("stderrOf = %q", got)
	}
	if got := stderrOf([]byte("#0\n#1\n#10\nboom\n"), 1); got != "#10\nboom\n" {
		t.Errorf("stderrOf = %q", got)
	}
}

// Tidying up after a revert (in the writes' round trip when nothing restarts) only warns: a
// directory that cannot be removed does not stop the backup from being marked reverted.
func TestRevertTidyWarns(t *testing.T) {
	for _, tc := range []struct {
		name, fail string
		warn       string
		reverted   bool
	}{
		{"rmdir", "rmdir /etc/containerd/certs.d/10.0.0.5:5500", "could not remove the directory /etc/containerd/certs.d/10.0.0.5:5500", true},
		{"rename", "rename " + runDir, "could not mark backup " + runDir + " reverted", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n"
			n := newMemNode(map[string]string{DefaultContainerdConfig: cfg})
			if err := applyNode(context.Background(), opts(runID), n, &NodeReport{Runtime: "containerd://1.6.20"}, noAccess); err != nil {
				t.Fatal(err)
			}
			n.failOn[tc.fail] = errors.New("busy")
			o := opts("20260101T000200Z-cccccc")
			o.Revert = true
			r := NodeReport{Runtime: "containerd://1.6.20"}
			if err := revertNode(context.Background(), o, n, &r); err != nil || r.Status != StateReverted {
				t.Fatalf("%v %+v", err, r)
			}
			if len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], tc.warn) {
				t.Errorf("warnings %q, want %q", r.Warnings, tc.warn)
			}
			_, marked := n.files[runDir+revertedSuffix+"/manifest.json"]
			if marked != tc.reverted || n.dirs["/etc/containerd/certs.d/hub.bktencent.com"] {
				t.Errorf("backup marked reverted: %v (want %v); dirs %v", marked, tc.reverted, slices.Sorted(maps.Keys(n.dirs)))
			}
			if n.restarts != 0 {
				t.Errorf("restarts %d", n.restarts)
			}
		})
	}
}
