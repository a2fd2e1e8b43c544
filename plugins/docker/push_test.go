package docker

import (
	"bytes"
	"testing"

	"github.com/bkcache/bkcache/internal/golden"
	"github.com/bkcache/bkcache/pkg/transfer"
)

func TestPrintPush(t *testing.T) {
	report := transfer.Report{
		Images: []transfer.ImageResult{
			{Line: 1, Source: "hub.bktencent.com/blueking/bk-paas:1.2.3", Target: "10.0.0.5:5500/blueking/bk-paas:1.2.3", Digest: "sha256:aaaa"},
			{Line: 2, Source: "hub.bktencent.com/blueking/bk-web:1.0", Target: "10.0.0.5:5500/blueking/bk-web:1.0", Error: "GET https://hub.bktencent.com/v2/blueking/bk-web/manifests/1.0: MANIFEST_UNKNOWN"},
			{Line: 3, Source: "docker.io/library/redis:7", Target: "10.0.0.5:5500/library/redis:7", Digest: "sha256:bbbb"},
		},
		Failed: 1, BlobsFetched: 12, BytesFetched: 734 << 20, BytesReused: 96 << 20, Seconds: 81.25,
	}
	var out bytes.Buffer
	printPush(&out, report, "10.0.0.5:5500")
	dry := transfer.Report{Images: report.Images[:1], DryRun: true, Seconds: 0.4}
	printPush(&out, dry, "10.0.0.5:5500")
	golden.Assert(t, out.Bytes(), "push.txt")
}
