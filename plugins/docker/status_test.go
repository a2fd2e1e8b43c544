package docker

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/bkcache/bkcache/internal/golden"
	"github.com/bkcache/bkcache/pkg/cache"
)

func TestPrintStatus(t *testing.T) {
	since := time.Date(2026, 3, 1, 12, 3, 0, 0, time.Local)
	online := cache.FrontStatus{Mode: cache.ModeOnline, Counters: cache.FrontCounters{BlobRequests: 40, BlobHits: 30, SharedWaiters: 7, ServedBytes: 900 << 20, UpstreamBytes: 100 << 20}}
	offline := cache.FrontStatus{Mode: cache.ModeOffline, Since: since.Format(time.RFC3339)}
	of, off := online.Figures(), offline.Figures()
	sts := []cache.Status{
		{Name: "bkhub", Layout: cache.LayoutFront, State: "running", Health: "ok", Mode: cache.ModeOnline, ModeText: "online", Front: &of},
		{Name: "dockerio", Layout: cache.LayoutFront, State: "running", Health: "ok", Mode: cache.ModeOffline, ModeSince: &since,
			ModeText: cache.ModeText(cache.ModeOffline, since, since.Add(time.Hour)), Front: &off},
		{Name: "guide", Layout: cache.LayoutPlain, State: "running", Health: "ok", Metrics: &cache.CacheMetrics{ManifestRequests: 15, ManifestHits: 12}},
	}
	var out bytes.Buffer
	printStatus(&out, sts)
	golden.Assert(t, out.Bytes(), "status.txt")
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("want a header, 3 caches and one line for the offline one:\n%s", out.String())
	}
	for i, want := range [][]string{
		{"NAME", "LAYOUT", "MODE", "HITS", "SAVED", "SHARED"},
		{"bkhub", "front", "online", "75.0% of 40 blobs", "838.9MB", " 7"},
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
