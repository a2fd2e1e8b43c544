package docker

import (
	"bytes"
	"testing"

	"github.com/bkcache/bkcache/internal/golden"
	"github.com/bkcache/bkcache/pkg/cache"
	"github.com/bkcache/bkcache/pkg/transfer"
)

func TestPrintWarm(t *testing.T) {
	outcome := cache.WarmOutcome{
		Caches: []cache.WarmResult{
			{Cache: "bkhub", WarmReport: transfer.WarmReport{Mode: cache.WarmFront, Images: 31, Manifests: 33, Blobs: 140, BlobsCached: 20,
				BytesFetched: 2 << 30, BytesCached: 300 << 20, Seconds: 412.5,
				Upstream: &transfer.Report{BlobsFetched: 120, BytesFetched: 2 << 30}}},
			{Cache: "dockerio", WarmReport: transfer.WarmReport{Mode: cache.WarmStorage, Images: 2, Manifests: 2, Blobs: 9,
				Seconds: 20, Upstream: &transfer.Report{BlobsFetched: 9, BytesFetched: 61 << 20}}},
			{Cache: "guide", WarmReport: transfer.WarmReport{Mode: cache.WarmProxy, Images: 1, Manifests: 1, Blobs: 3, BytesFetched: 5 << 20, Seconds: 3.2}},
			{Cache: "10.0.0.7:5000", WarmReport: transfer.WarmReport{Mode: cache.WarmFront, Images: 1, Manifests: 1, Blobs: 3, BytesFetched: 1 << 20, Seconds: 1}},
		},
		Failed: []transfer.ImageResult{
			{Line: 7, Source: "quay.io/prometheus/node-exporter:v1.7.0", Error: `no bkcache cache on this engine proxies quay.io; run "docker bkcache up --upstream https://quay.io ..." or pass --cache`},
		},
	}
	var out bytes.Buffer
	printWarm(&out, outcome)
	golden.Assert(t, out.Bytes(), "warm.txt")
}
