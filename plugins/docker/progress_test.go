package docker

import (
	"bytes"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bkcache/bkcache/pkg/transfer"
)

func TestProgressOffATerminalIsPlainLines(t *testing.T) {
	var out bytes.Buffer
	p := startProgress(&out, false, func() uint { return 200 }, time.Millisecond)
	p.Meter().Plan("127.0.0.1:5000/blueking/a:1", []v1.Descriptor{{Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}, Size: 1000}})
	p.Meter().Add(v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}, 500)
	p.Write([]byte("copied  a -> b (sha256:1)\nwarm"))
	time.Sleep(20 * time.Millisecond)
	p.Write([]byte("ed  c\n"))
	p.Close()
	p.Close()
	if got, want := out.String(), "copied  a -> b (sha256:1)\nwarmed  c\n"; got != want {
		t.Errorf("plain output = %q, want %q", got, want)
	}
}

func TestProgressOnATerminalDrawsBarsBelowTheLines(t *testing.T) {
	var out bytes.Buffer
	p := startProgress(&out, true, func() uint { return 160 }, time.Hour)
	d := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("b", 64)}
	p.Meter().Plan("127.0.0.1:5000/blueking/big:1", []v1.Descriptor{{Digest: d, Size: 40 << 20}})
	p.Meter().Add(d, 10<<20)
	p.Write([]byte("warmed  127.0.0.1:5000/blueking/small:1\n"))
	p.Close()
	s := out.String()
	for _, want := range []string{"warmed  127.0.0.1:5000/blueking/small:1\n", "blueking/big:1", "[============>", "10.49MB/41.94MB", "0/1 images", "\x1b[2K"} {
		if !strings.Contains(s, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, s)
		}
	}
	if !strings.HasSuffix(s, "\r\x1b[2A\x1b[J") {
		t.Errorf("Close does not erase the live block: %q", s)
	}
}

func TestRenderBlock(t *testing.T) {
	start := time.Now().Add(-10 * time.Second)
	s := transfer.Snapshot{Start: start, Current: 30 << 20, Total: 120 << 20, ImagesDone: 1, ImagesTotal: 12}
	s.Images = append(s.Images, transfer.ImageProgress{ID: "done:1", Current: 1, Total: 1, Done: true})
	for i := 0; i < 11; i++ {
		s.Images = append(s.Images, transfer.ImageProgress{ID: "hub.bktencent.com/blueking/svc:" + string(rune('a'+i)), Current: 1 << 20, Total: 10 << 20, Started: start})
	}
	lines := renderBlock(s, 200, 3<<20)
	if len(lines) != maxBars+2 {
		t.Fatalf("%d lines, want %d bars, one summing up the rest and the total:\n%s", len(lines), maxBars, strings.Join(lines, "\n"))
	}
	if !strings.HasPrefix(lines[0], "blueking/svc:a  [=====>") || strings.Contains(lines[0], "hub.bktencent.com") {
		t.Errorf("first bar: %q", lines[0])
	}
	if lines[maxBars] != "… and 3 more images in progress" {
		t.Errorf("summary line: %q", lines[maxBars])
	}
	total := lines[len(lines)-1]
	for _, want := range []string{"1/12 images", "31.46MB/125.8MB", "3.146MB/s"} {
		if !strings.Contains(total, want) {
			t.Errorf("total line %q lacks %q", total, want)
		}
	}
	if narrow := renderBlock(s, 60, 0); strings.Contains(narrow[0], "[") {
		t.Errorf("a narrow terminal gets a bar (docker drops it under 110 columns): %q", narrow[0])
	}
}
