package cache

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/zstd"
	"github.com/moby/moby/client"
)

// writeArchive writes a docker save archive holding one random image per
// arch, tagged as given, compressed as named by ext ("", ".gz", ".zst").
func writeArchive(t *testing.T, ext string, tags map[string]string) string {
	t.Helper()
	refs := map[name.Reference]v1.Image{}
	for tag, arch := range tags {
		img, err := random.Image(64, 1)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		cfg = cfg.DeepCopy()
		cfg.OS, cfg.Architecture = "linux", arch
		if img, err = mutate.ConfigFile(img, cfg); err != nil {
			t.Fatal(err)
		}
		ref, err := name.ParseReference(tag)
		if err != nil {
			t.Fatal(err)
		}
		refs[ref] = img
	}
	var buf bytes.Buffer
	if err := tarball.MultiRefWrite(refs, &buf); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	switch ext {
	case ".gz":
		var z bytes.Buffer
		w := gzip.NewWriter(&z)
		w.Write(data)
		w.Close()
		data = z.Bytes()
	case ".zst":
		w, _ := zstd.NewWriter(nil)
		data = w.EncodeAll(data, nil)
	}
	path := filepath.Join(t.TempDir(), "images.tar"+ext)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadImageArchive(t *testing.T) {
	for _, ext := range []string{"", ".gz", ".zst"} {
		t.Run("compression "+ext, func(t *testing.T) {
			path := writeArchive(t, ext, map[string]string{"bkcache.local/registry:2": "arm64"})
			images, err := ReadImageArchive(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			if len(images) != 1 || images[0].Platform() != "linux/arm64" || images[0].Tags[0] != "bkcache.local/registry:2" {
				t.Fatalf("images = %+v", images)
			}
		})
	}
	t.Run("not an archive", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "x.tar")
		os.WriteFile(path, []byte("hello"), 0o644)
		_, err := ReadImageArchive(context.Background(), path)
		if err == nil || !strings.Contains(err.Error(), "docker save") {
			t.Fatalf("err = %v, want advice naming docker save", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := ReadImageArchive(context.Background(), filepath.Join(t.TempDir(), "none.tar"))
		if err == nil || !strings.Contains(err.Error(), "none.tar") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestFindArchiveImage(t *testing.T) {
	images := []ArchiveImage{
		{Tags: []string{"registry:2"}},
		{Tags: []string{"bkcache.local/registry:2", "bkcache.local/registry:2.8"}},
		{Tags: []string{"busybox:latest"}},
	}
	for _, tc := range []struct {
		image string
		want  string // first tag of the match, "" for none
		err   bool
	}{
		{"registry:2", "registry:2", false},
		{"docker.io/library/registry:2", "registry:2", false},
		{"index.docker.io/library/registry:2", "registry:2", false},
		{"bkcache.local/registry:2.8", "bkcache.local/registry:2", false},
		{"busybox", "busybox:latest", false},
		{"registry:3", "", false},
		{"hub.bktencent.com/library/registry:2", "", false},
		{"registry@sha256:" + strings.Repeat("a", 64), "", true},
	} {
		t.Run(tc.image, func(t *testing.T) {
			got, ok, err := findArchiveImage(images, tc.image)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if ok != (tc.want != "") || (ok && got.Tags[0] != tc.want) {
				t.Fatalf("got %v %v, want %q", got, ok, tc.want)
			}
		})
	}
}

// archiveEngine answers what LoadImageArchive asks; other Engine methods are not called.
type archiveEngine struct {
	Engine
	images map[string]bool
	arch   string
	loaded [][]byte
	answer string // the JSON message stream ImageLoad returns
}

func (f *archiveEngine) DaemonHost() string { return "unix:///fake.sock" }

func (f *archiveEngine) ImageInspect(_ context.Context, image string, _ ...client.ImageInspectOption) (client.ImageInspectResult, error) {
	if f.images[image] {
		return client.ImageInspectResult{}, nil
	}
	return client.ImageInspectResult{}, cerrdefs.ErrNotFound.WithMessage("No such image: " + image)
}

func (f *archiveEngine) ServerVersion(context.Context, client.ServerVersionOptions) (client.ServerVersionResult, error) {
	return client.ServerVersionResult{Os: "linux", Arch: f.arch}, nil
}

func (f *archiveEngine) ImageLoad(_ context.Context, r io.Reader, _ ...client.ImageLoadOption) (client.ImageLoadResult, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	f.loaded = append(f.loaded, b)
	if !strings.Contains(f.answer, "error") {
		f.images["bkcache.local/registry:2"] = true
	}
	return io.NopCloser(strings.NewReader(f.answer)), nil
}

func TestLoadImageArchive(t *testing.T) {
	ctx := context.Background()
	gz := writeArchive(t, ".gz", map[string]string{"bkcache.local/registry:2": "amd64", "other/image:1": "amd64"})
	arm := writeArchive(t, "", map[string]string{"bkcache.local/registry:2": "arm64"})
	const image = "bkcache.local/registry:2"
	for _, tc := range []struct {
		name, path, image, pull, arch, answer string
		present                               bool
		wantErr                               string // substring; "" for success
		wantLoads                             int
	}{
		{name: "loads when missing", path: gz, image: image, arch: "amd64", answer: `{"stream":"Loaded image: bkcache.local/registry:2\n"}`, wantLoads: 1},
		{name: "present: not loaded", path: gz, image: image, arch: "amd64", present: true},
		{name: "no archive: nothing", path: "", image: image},
		{name: "not in archive", path: gz, image: "hub.bktencent.com/library/registry:2", arch: "amd64", wantErr: "does not contain hub.bktencent.com/library/registry:2 (it holds: bkcache.local/registry:2, other/image:1)"},
		{name: "not in archive though present", path: gz, image: "registry:3", arch: "amd64", present: true, wantErr: "does not contain registry:3"},
		{name: "wrong arch", path: arm, image: image, arch: "amd64", wantErr: "is for linux/arm64 but the Docker engine runs linux/amd64"},
		{name: "pull always", path: gz, image: image, pull: PullAlways, wantErr: "--pull always"},
		{name: "engine refuses", path: gz, image: image, arch: "amd64", answer: `{"errorDetail":{"message":"unexpected EOF"},"error":"unexpected EOF"}`, wantErr: "the engine said: unexpected EOF", wantLoads: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eng := &archiveEngine{images: map[string]bool{}, arch: tc.arch, answer: tc.answer}
			if tc.present {
				eng.images[tc.image] = true
			}
			var progress bytes.Buffer
			err := LoadImageArchive(ctx, eng, tc.path, tc.image, tc.pull, &progress)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("err = %v", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if len(eng.loaded) != tc.wantLoads {
				t.Fatalf("loads = %d, want %d", len(eng.loaded), tc.wantLoads)
			}
			// The engine gets a plain tar, even from a .gz archive.
			for _, b := range eng.loaded {
				if _, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }); err != nil {
					t.Fatalf("engine got no plain docker save tar: %v", err)
				}
			}
			if tc.wantLoads == 1 && err == nil && !strings.Contains(progress.String(), "loaded "+image) {
				t.Fatalf("progress = %q", progress.String())
			}
		})
	}
}
