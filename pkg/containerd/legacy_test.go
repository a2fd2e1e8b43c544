package containerd

import (
	"slices"
	"testing"
)

func TestRenderLegacyHosts(t *testing.T) {
	out, err := RenderLegacyHosts("docker.io", []string{"http://mirror.local:5000", "https://registry-1.docker.io"})
	if err != nil {
		t.Fatal(err)
	}
	hf, err := ParseHosts(out)
	if err != nil || hf.Server != "https://registry-1.docker.io" || !slices.Equal(hf.Hosts, []string{"http://mirror.local:5000"}) {
		t.Fatalf("got %+v %v\n%s", hf, err, out)
	}
	checkContainerd(t, "docker.io", out, "https://registry-1.docker.io", []string{"http://mirror.local:5000"})
	star, err := RenderLegacyHosts("*", []string{"http://any.local:5000"})
	if err != nil {
		t.Fatal(err)
	}
	// _default has no server line: containerd falls back to the registry itself.
	checkContainerd(t, "_default", star, "https://_default", []string{"http://any.local:5000"})
	if _, err := RenderLegacyHosts("x", []string{"ftp://x"}); err == nil {
		t.Fatal("ftp endpoint accepted")
	}
	if LegacyHostsDir("*") != "_default" {
		t.Fatal("* is not _default")
	}
}
