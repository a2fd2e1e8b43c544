package nodes

import (
	"context"
	"maps"
	"testing"
)

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
