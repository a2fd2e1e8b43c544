package transfer

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	units "github.com/docker/go-units"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// taggable is the image or index an archive holds under desc, reading its blobs
// from the source as go-containerregistry pushes them.
func (s *blobSource) taggable(desc v1.Descriptor) (remote.Taggable, error) {
	if desc.MediaType.IsIndex() {
		return s.index(desc)
	}
	return s.image(desc)
}

func (s *blobSource) manifest(desc v1.Descriptor) ([]byte, error) {
	b, ok := s.contents.blobs[desc.Digest]
	if !ok || b.data == nil {
		return nil, fmt.Errorf("archive %s: manifest %s is missing", s.contents.path, desc.Digest)
	}
	return b.data, nil
}

func (s *blobSource) image(desc v1.Descriptor) (v1.Image, error) {
	raw, err := s.manifest(desc)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("archive %s: manifest %s: %w", s.contents.path, desc.Digest, err)
	}
	return partial.CompressedToImage(&archiveImage{src: s, desc: desc, raw: raw, manifest: m})
}

type archiveImage struct {
	src      *blobSource
	desc     v1.Descriptor
	raw      []byte
	manifest *v1.Manifest
}

func (i *archiveImage) RawManifest() ([]byte, error)        { return i.raw, nil }
func (i *archiveImage) MediaType() (types.MediaType, error) { return i.desc.MediaType, nil }

func (i *archiveImage) RawConfigFile() ([]byte, error) {
	rc, err := i.src.open(i.manifest.Config.Digest)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func (i *archiveImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == i.manifest.Config.Digest {
		return &archiveLayer{src: i.src, desc: i.manifest.Config}, nil
	}
	for _, l := range i.manifest.Layers {
		if l.Digest == h {
			return &archiveLayer{src: i.src, desc: l}, nil
		}
	}
	return nil, fmt.Errorf("archive %s: image %s has no layer %s", i.src.contents.path, i.desc.Digest, h)
}

type archiveLayer struct {
	src  *blobSource
	desc v1.Descriptor
}

func (l *archiveLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *archiveLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *archiveLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *archiveLayer) Compressed() (io.ReadCloser, error)  { return l.src.open(l.desc.Digest) }

// archiveIndex is an index held by an archive; its children come from the same source.
type archiveIndex struct {
	src  *blobSource
	desc v1.Descriptor
	raw  []byte
	idx  *v1.IndexManifest
}

func (s *blobSource) index(desc v1.Descriptor) (v1.ImageIndex, error) {
	raw, err := s.manifest(desc)
	if err != nil {
		return nil, err
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, fmt.Errorf("archive %s: index %s: %w", s.contents.path, desc.Digest, err)
	}
	return &archiveIndex{src: s, desc: desc, raw: raw, idx: &idx}, nil
}

func (x *archiveIndex) MediaType() (types.MediaType, error)         { return x.desc.MediaType, nil }
func (x *archiveIndex) Digest() (v1.Hash, error)                    { return x.desc.Digest, nil }
func (x *archiveIndex) Size() (int64, error)                        { return int64(len(x.raw)), nil }
func (x *archiveIndex) IndexManifest() (*v1.IndexManifest, error)   { return x.idx, nil }
func (x *archiveIndex) RawManifest() ([]byte, error)                { return x.raw, nil }
func (x *archiveIndex) Image(h v1.Hash) (v1.Image, error)           { return x.src.image(x.child(h)) }
func (x *archiveIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) { return x.src.index(x.child(h)) }

func (x *archiveIndex) child(h v1.Hash) v1.Descriptor {
	for _, d := range x.idx.Manifests {
		if d.Digest == h {
			return d
		}
	}
	return v1.Descriptor{Digest: h}
}

// blobSource hands out blob bytes for the push: in place in an uncompressed
// archive, or from files unpacked from a compressed one.
type blobSource struct {
	contents *archiveContents
	file     *os.File           // uncompressed archive
	unpacked map[v1.Hash]string // compressed archive: blob -> temp file
}

func (s *blobSource) open(h v1.Hash) (io.ReadCloser, error) {
	b, ok := s.contents.blobs[h]
	if !ok {
		return nil, fmt.Errorf("archive %s holds no blob %s", s.contents.path, h)
	}
	if b.data != nil {
		return io.NopCloser(bytes.NewReader(b.data)), nil
	}
	if s.file != nil {
		return io.NopCloser(io.NewSectionReader(s.file, b.offset, b.size)), nil
	}
	p, ok := s.unpacked[h]
	if !ok {
		return nil, fmt.Errorf("archive %s: blob %s was not unpacked", s.contents.path, h)
	}
	return os.Open(p)
}

// open prepares the blobs for pushing. A compressed archive is unpacked into
// tempDir after checking the referenced blobs fit in its free space.
func (c *archiveContents) open(ctx context.Context, tempDir string) (*blobSource, func(), error) {
	if !c.compressed {
		f, err := os.Open(c.path)
		if err != nil {
			return nil, nil, fmt.Errorf("read archive: %w", err)
		}
		return &blobSource{contents: c, file: f}, func() { f.Close() }, nil
	}
	if tempDir == "" {
		tempDir = os.TempDir()
	}
	var need int64
	for _, b := range c.blobs {
		if b.data == nil {
			need += b.size
		}
	}
	if free, ok := freeSpace(tempDir); ok && need+64<<20 > free {
		return nil, nil, fmt.Errorf("loading %s needs %s of temporary space in %s to unpack its blobs, but %s is free; free space there, point TMPDIR at a larger disk, or load an uncompressed archive (made by save without --zstd), which needs none (nothing was loaded)",
			c.path, units.HumanSize(float64(need)), tempDir, units.HumanSize(float64(free)))
	}
	dir, err := os.MkdirTemp(tempDir, "bkcache-load-")
	if err != nil {
		return nil, nil, fmt.Errorf("load %s: temporary directory: %w", c.path, err)
	}
	cleanup := func() { os.RemoveAll(dir) }
	src := &blobSource{contents: c, unpacked: map[v1.Hash]string{}}
	if err := c.unpack(ctx, dir, src.unpacked); err != nil {
		cleanup()
		return nil, nil, err
	}
	return src, cleanup, nil
}

// unpack writes the blobs the scan did not keep, checking each digest again
// (the file could have changed since the scan).
func (c *archiveContents) unpack(ctx context.Context, dir string, into map[v1.Hash]string) error {
	_, r, closeFn, _, err := openArchive(c.path)
	if err != nil {
		return err
	}
	defer closeFn()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("archive %s changed while it was loaded (%v); copy it again", c.path, err)
		}
		m := blobName.FindStringSubmatch(hdr.Name)
		if m == nil {
			continue
		}
		h := v1.Hash{Algorithm: "sha256", Hex: m[1]}
		if b, ok := c.blobs[h]; !ok || b.data != nil {
			continue
		}
		p := filepath.Join(dir, h.Hex)
		if err := writeVerified(ctx, p, tr, h); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("archive %s: unpack blob %s into %s: %w", c.path, h, dir, err)
		}
		into[h] = p
	}
}

func writeVerified(ctx context.Context, p string, r io.Reader, h v1.Hash) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	sum := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, sum), contextReader{ctx, r})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h.Hex {
		return fmt.Errorf("content changed since it was checked (sha256:%s)", got)
	}
	return nil
}

func freeSpace(dir string) (int64, bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * int64(st.Bsize), true
}
