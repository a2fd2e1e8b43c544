package cache

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/bkcache/bkcache/pkg/front"
	"github.com/bkcache/bkcache/pkg/transfer"
)

func TestKeepRefs(t *testing.T) {
	spec := Spec{Name: "bkhub", Upstream: "https://hub.bktencent.com", Port: 5500, Network: NetworkBridge}
	var entries []transfer.Entry
	for _, r := range []string{
		"hub.bktencent.com/blueking/app:1.0",
		"127.0.0.1:5500/blueking/web@sha256:" + "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12",
		"10.0.0.5:5500/blueking/job:2.0",
		"docker.io/library/nginx:1.25",
	} {
		ref, err := name.ParseReference(r)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, transfer.Entry{Ref: ref})
	}
	keep, other := keepRefs(spec, entries)
	want := []front.KeepRef{
		{Repo: "blueking/app", Tag: "1.0"},
		{Repo: "blueking/web", Digest: "sha256:ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12"},
		{Repo: "blueking/job", Tag: "2.0"},
	}
	if !slices.Equal(keep, want) || len(other) != 1 {
		t.Errorf("keepRefs = %v, other %v", keep, other)
	}
}

func TestParseAge(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"30d", 30 * 24 * time.Hour, false}, {"1.5d", 36 * time.Hour, false}, {"36h", 36 * time.Hour, false},
		{"90m", 90 * time.Minute, false}, {"0d", 0, true}, {"-3d", 0, true}, {"d", 0, true}, {"soon", 0, true}, {"0", 0, true},
	} {
		got, err := ParseAge(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseAge(%q) = %v, %v", tc.in, got, err)
		}
	}
}
