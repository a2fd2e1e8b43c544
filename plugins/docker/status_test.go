package docker

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/pkg/proxy"
)

func TestPrintStatus(t *testing.T) {
	since := time.Date(2026, 3, 1, 12, 3, 0, 0, time.Local)
	online := proxy.FrontStatus{Mode: proxy.ModeOnline, Counters: proxy.FrontCounters{BlobRequests: 40, BlobHits: 30, SharedWaiters: 7, ServedBytes: 900 << 20, UpstreamBytes: 100 << 20}}
	offline := proxy.FrontStatus{Mode: proxy.ModeOffline, Since: since.Format(time.RFC3339)}
	of, off := online.Figures(), offline.Figures()
	sts := []proxy.Status{
		{Name: "bkhub", Layout: proxy.LayoutFront, State: "running", Health: "ok", Mode: proxy.ModeOnline, ModeText: "online", Front: &of},
		{Name: "dockerio", Layout: proxy.LayoutFront, State: "running", Health: "ok", Mode: proxy.ModeOffline, ModeSince: &since,
			ModeText: proxy.ModeText(proxy.ModeOffline, since, since.Add(time.Hour)), Front: &off},
		{Name: "guide", Layout: proxy.LayoutPlain, State: "running", Health: "ok", Metrics: &proxy.CacheMetrics{ManifestRequests: 15, ManifestHits: 12}},
	}
	var out bytes.Buffer
	printStatus(&out, sts)
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("want a header, 3 caches and one line for the offline one:\n%s", out.String())
	}
	for i, want := range [][]string{
		{"NAME", "LAYOUT", "MODE", "HITS", "SAVED", "SHARED"},
		{"bkhub", "front", "online", "75.0% of 40 blobs", "800.0 MiB", " 7"},
		{"dockerio", "front", "offline since 12:03"},
		{"guide", "plain", "12/15 manifests"},
		{"cache dockerio: upstream unreachable since 12:03, serving cached content"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d %q lacks %q", i, lines[i], w)
			}
		}
	}
}
