package nodes

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestClassifyPod reads pod statuses recorded from a real kubelet (testdata/podstatus/, see
// its README) and checks what the wait makes of each: the file name says the expected cause.
func TestClassifyPod(t *testing.T) {
	files, err := filepath.Glob("testdata/podstatus/*.yaml")
	if err != nil || len(files) < 8 {
		t.Fatalf("recorded pod statuses: %v %v", files, err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var p corev1.Pod
			if err := yaml.UnmarshalStrict(b, &p); err != nil {
				t.Fatal(err)
			}
			want, _, _ := strings.Cut(name, "-")
			v := classifyPod(&p, 3*time.Second)
			got := string(v.cause)
			switch {
			case v.running:
				got = "running"
			case v.cause == causeNone:
				got = "waiting"
			}
			if got != want {
				t.Fatalf("classified %s (%+v), want %s", got, v, want)
			}
			if v.cause != causeNone && (v.reason == "" || v.explain(AccessImage{Image: "img:1", Source: ImagePull}) == "") {
				t.Errorf("no reason: %+v", v)
			}
		})
	}
}

// A pod the kubelet never reports on is given up after kubeletAckTimeout, not before.
func TestClassifyPodNoKubelet(t *testing.T) {
	p := &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending}}
	if v := classifyPod(p, kubeletAckTimeout-time.Second); v.cause != causeNone {
		t.Errorf("gave up early: %+v", v)
	}
	if v := classifyPod(p, kubeletAckTimeout); v.cause != causeNoKubelet || !strings.Contains(v.explain(AccessImage{}), "journalctl -u kubelet") {
		t.Errorf("after %s: %+v", kubeletAckTimeout, v)
	}
}

func TestExplainImage(t *testing.T) {
	v := podVerdict{cause: causeImage, reason: "ErrImagePull", message: "failed to pull"}
	def := v.explain(AccessImage{Image: DefaultAccessImage, Source: ImagePull})
	for _, w := range []string{"ErrImagePull: failed to pull", "the node cannot pull " + DefaultAccessImage, "--image REGISTRY/…/busybox:TAG", "push list"} {
		if !strings.Contains(def, w) {
			t.Errorf("default image: %q lacks %q", def, w)
		}
	}
	// An image the user gave is theirs: no advice to push the default.
	if given := v.explain(AccessImage{Image: "r/x:1", Source: ImageGiven}); strings.Contains(given, "push list") || !strings.Contains(given, "cannot pull r/x:1") {
		t.Errorf("given image: %q", given)
	}
}

func TestChooseImage(t *testing.T) {
	held := func(names ...string) []corev1.ContainerImage {
		var out []corev1.ContainerImage
		for _, n := range names {
			out = append(out, corev1.ContainerImage{Names: []string{n}})
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		given string
		held  []corev1.ContainerImage
		want  AccessImage
	}{
		{"given wins", "r.local/tools:1", held(DefaultAccessImage), AccessImage{"r.local/tools:1", ImageGiven}},
		{"default on the node", "", held("docker.io/library/busybox:1.36", DefaultAccessImage), AccessImage{DefaultAccessImage, ImageOnNode}},
		{"nothing usable", "", held("registry.k8s.io/pause:3.9", "docker.io/library/nginx:1"), AccessImage{DefaultAccessImage, ImagePull}},
		{"no images", "", nil, AccessImage{DefaultAccessImage, ImagePull}},
		{"a busybox", "", held("registry.k8s.io/pause:3.9", "10.0.0.5:5500/library/busybox:1.36"), AccessImage{"10.0.0.5:5500/library/busybox:1.36", ImageSubstitute}},
		{"an unknown busybox", "", held("bkcache.test/busybox:1", "example.com/tools/busybox:1"), AccessImage{DefaultAccessImage, ImagePull}},
		{"busybox before alpine", "", held("docker.io/library/alpine:3.19", "docker.io/library/busybox:1.36"), AccessImage{"docker.io/library/busybox:1.36", ImageSubstitute}},
		{"BlueKing's first", "", held("docker.io/library/busybox:1.36", "hub.bktencent.com/blueking/busybox:1.34.0"), AccessImage{"hub.bktencent.com/blueking/busybox:1.34.0", ImageSubstitute}},
		{"alpine", "", held("docker.io/library/alpine:3.19"), AccessImage{"docker.io/library/alpine:3.19", ImageSubstitute}},
		{"a tag before a digest", "", []corev1.ContainerImage{{Names: []string{"docker.io/library/busybox@sha256:" + strings.Repeat("a", 64), "docker.io/library/busybox:1.36"}}},
			AccessImage{"docker.io/library/busybox:1.36", ImageSubstitute}},
		{"docker short names", "", held("busybox:1.34.0", "alpine:3"), AccessImage{"busybox:1.34.0", ImageSubstitute}},
		{"not a busybox", "", held("docker.io/library/busyboxy:1", "docker.io/x/alpine-git:1"), AccessImage{DefaultAccessImage, ImagePull}},
	} {
		if got := chooseImage(tc.given, tc.held); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
