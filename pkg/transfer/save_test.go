package transfer

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/bkcache/bkcache/internal/registrytest"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	for _, zstd := range []bool{false, true} {
		t.Run(map[bool]string{false: "tar", true: "zstd"}[zstd], func(t *testing.T) {
			src := registrytest.StartDistribution(t)
			dst := registrytest.StartDistribution(t)
			refs, digests := seed(t, src.Addr)
			archive := filepath.Join(t.TempDir(), "bk-images.tar")
			rep, err := Save(context.Background(), entries(t, src.Addr, refs...), archive, SaveOptions{Zstd: zstd, Insecure: true})
			if err != nil {
				t.Fatal(err)
			}
			// 12 distinct layers and configs (the shared base once, else 14) + 5 manifests.
			if rep.Blobs != 17 {
				t.Errorf("archive holds %d blobs, want 17 (shared layers once)", rep.Blobs)
			}
			if _, err := Load(context.Background(), archive, LoadOptions{To: dst.Addr, Insecure: true}); err != nil {
				t.Fatal(err)
			}
			for _, r := range refs {
				if got := digestAt(t, dst.Addr+"/"+r); got != digests[r] {
					t.Errorf("%s: loaded digest %s, source %s", r, got, digests[r])
				}
			}
		})
	}
}

func TestLoadRefusesDamagedArchives(t *testing.T) {
	src := registrytest.StartDistribution(t)
	dst := registrytest.StartDistribution(t)
	refs, _ := seed(t, src.Addr)
	dir := t.TempDir()
	archive := filepath.Join(dir, "bk-images.tar")
	if _, err := Save(context.Background(), entries(t, src.Addr, refs...), archive, SaveOptions{Insecure: true}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(archive)

	truncated := filepath.Join(dir, "truncated.tar")
	os.WriteFile(truncated, data[:len(data)/2], 0o644)
	if _, err := Load(context.Background(), truncated, LoadOptions{To: dst.Addr, Insecure: true}); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("truncated archive: %v", err)
	}

	corrupted := filepath.Join(dir, "corrupted.tar")
	os.WriteFile(corrupted, flipBlobByte(t, data), 0o644)
	if _, err := Load(context.Background(), corrupted, LoadOptions{To: dst.Addr, Insecure: true}); err == nil || !strings.Contains(err.Error(), "corrupted") {
		t.Errorf("corrupted archive: %v", err)
	}
	for _, r := range refs {
		ref, _ := name.ParseReference(dst.Addr+"/"+r, name.Insecure)
		if _, err := remote.Head(ref); err == nil {
			t.Errorf("a refused archive left %s tagged at the target", r)
		}
	}
}

// flipBlobByte rewrites a tar with one byte of its largest blob changed.
func flipBlobByte(t *testing.T, data []byte) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	var largest string
	var size int64
	type file struct {
		hdr  *tar.Header
		body []byte
	}
	var files []file
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		files = append(files, file{hdr, body})
		if strings.HasPrefix(hdr.Name, "blobs/") && hdr.Size > size {
			largest, size = hdr.Name, hdr.Size
		}
	}
	for _, f := range files {
		if f.hdr.Name == largest {
			f.body[len(f.body)/2] ^= 0xff
		}
		tw.WriteHeader(f.hdr)
		tw.Write(f.body)
	}
	tw.Close()
	return out.Bytes()
}
