package nodes

import (
	"context"
	"strings"
	"testing"
)

// TestPlanDialTimeout: the cache's dial_timeout is written where the node's containerd reads
// it (2.1 and later); an older containerd gets no key and a warning in the report; without a
// fallback there is nothing to time out to, so neither.
func TestPlanDialTimeout(t *testing.T) {
	const hub = "/etc/containerd/certs.d/hub.bktencent.com/hosts.toml"
	for _, tc := range []struct {
		runtime    string
		noFallback bool
		wantKey    bool
		wantWarn   bool
	}{
		{runtime: "containerd://1.6.20~ds1", wantWarn: true},
		{runtime: "containerd://1.7.35", wantWarn: true},
		{runtime: "containerd://2.0.5-k3s1", wantWarn: true},
		{runtime: "containerd://2.1.0", wantKey: true},
		{runtime: "containerd://2.3.1", wantKey: true},
		{runtime: "containerd://1.6.20", noFallback: true},
		{runtime: "containerd://2.3.1", noFallback: true},
	} {
		n := newMemNode(map[string]string{DefaultContainerdConfig: cfg16})
		o := opts("20260101T000000Z-aaaaaa")
		o.NoFallback = tc.noFallback
		r := NodeReport{Runtime: tc.runtime}
		if err := applyNode(context.Background(), o, n, &r, noAccess); err != nil {
			t.Fatalf("%s: %v", tc.runtime, err)
		}
		hosts := string(n.files[hub])
		if got := strings.Contains(hosts, `dial_timeout = "2s"`); got != tc.wantKey {
			t.Errorf("%s no-fallback=%v: dial_timeout written = %v, want %v:\n%s", tc.runtime, tc.noFallback, got, tc.wantKey, hosts)
		}
		warned := strings.Contains(strings.Join(r.Warnings, "\n"), "ignores dial_timeout (2.1+)")
		if warned != tc.wantWarn {
			t.Errorf("%s no-fallback=%v: warned = %v, want %v: %q", tc.runtime, tc.noFallback, warned, tc.wantWarn, r.Warnings)
		}
		if strings.Contains(string(n.files["/etc/containerd/certs.d/10.0.0.5:5500/hosts.toml"]), "dial_timeout") {
			t.Errorf("%s: dial_timeout in the cache's own hosts.toml, which has no fallback", tc.runtime)
		}
	}
}
