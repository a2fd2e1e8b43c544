package transfer

import (
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// mounting wraps img so layers another target repository already holds are
// mounted from there instead of uploaded again.
func (c *copier) mounting(img v1.Image) v1.Image {
	m := c.snapshotMounts()
	if len(m) == 0 {
		return img
	}
	return &mountingImage{Image: img, mounts: m}
}

func (c *copier) snapshotMounts() map[v1.Hash]name.Reference {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[v1.Hash]name.Reference, len(c.mounts))
	for k, v := range c.mounts {
		m[k] = v
	}
	return m
}

// remember records that dst's repository now holds these layers.
func (c *copier) remember(layers []v1.Hash, dst name.Reference) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range layers {
		if _, ok := c.mounts[d]; !ok {
			c.mounts[d] = dst.Context().Digest(d.String())
		}
	}
}

// mountingIndex hands out its children as mountingImages.
type mountingIndex struct {
	inner  v1.ImageIndex
	mounts map[v1.Hash]name.Reference
}

type mountingImage struct {
	v1.Image
	mounts map[v1.Hash]name.Reference
}

func (m *mountingIndex) MediaType() (types.MediaType, error)       { return m.inner.MediaType() }
func (m *mountingIndex) Digest() (v1.Hash, error)                  { return m.inner.Digest() }
func (m *mountingIndex) Size() (int64, error)                      { return m.inner.Size() }
func (m *mountingIndex) IndexManifest() (*v1.IndexManifest, error) { return m.inner.IndexManifest() }
func (m *mountingIndex) RawManifest() ([]byte, error)              { return m.inner.RawManifest() }

func (m *mountingIndex) Image(h v1.Hash) (v1.Image, error) {
	img, err := m.inner.Image(h)
	if err != nil || len(m.mounts) == 0 {
		return img, err
	}
	return &mountingImage{Image: img, mounts: m.mounts}, nil
}

func (m *mountingIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	idx, err := m.inner.ImageIndex(h)
	if err != nil {
		return nil, err
	}
	return &mountingIndex{inner: idx, mounts: m.mounts}, nil
}

func (m *mountingImage) Layers() ([]v1.Layer, error) {
	ls, err := m.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = m.wrap(l)
	}
	return out, nil
}

func (m *mountingImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := m.Image.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	return m.wrap(l), nil
}

func (m *mountingImage) wrap(l v1.Layer) v1.Layer {
	d, err := l.Digest()
	if err != nil {
		return l
	}
	if ref, ok := m.mounts[d]; ok {
		return &remote.MountableLayer{Layer: l, Reference: ref}
	}
	return l
}
