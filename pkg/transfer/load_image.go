package transfer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
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
