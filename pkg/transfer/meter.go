package transfer

import (
	"io"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Meter follows the bytes of long work (warm, push, save, load) per image and
// overall, for a progress display like docker pull's. Work plans each image
// with its blobs, then reports blob bytes as they move; a blob shared by
// several images advances all of them but counts once overall. A nil *Meter
// ignores everything, so work can report without checking.
type Meter struct {
	mu     sync.Mutex
	start  time.Time
	blobs  map[v1.Hash]*blobMeter
	images []*imageMeter
	byID   map[string]*imageMeter
}

type blobMeter struct {
	size, done int64
	users      []*imageMeter
}

type imageMeter struct {
	id      string
	blobs   []v1.Hash
	started time.Time
	state   int // 0 working, 1 done, 2 failed
}

// NewMeter starts a meter; its clock starts now.
func NewMeter() *Meter {
	return &Meter{start: time.Now(), blobs: map[v1.Hash]*blobMeter{}, byID: map[string]*imageMeter{}}
}

// Plan adds an image (or adds blobs to one planned before) with the blobs it needs.
func (m *Meter) Plan(id string, blobs []v1.Descriptor) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	img, ok := m.byID[id]
	if !ok {
		img = &imageMeter{id: id}
		m.byID[id] = img
		m.images = append(m.images, img)
	}
	for _, d := range blobs {
		b, ok := m.blobs[d.Digest]
		if !ok {
			b = &blobMeter{size: d.Size}
			m.blobs[d.Digest] = b
		}
		if !containsImage(b.users, img) {
			b.users = append(b.users, img)
			img.blobs = append(img.blobs, d.Digest)
		}
	}
}

func containsImage(list []*imageMeter, img *imageMeter) bool {
	for _, i := range list {
		if i == img {
			return true
		}
	}
	return false
}

// Add records n more bytes of blob d moved; a blob never counts past its size.
func (m *Meter) Add(d v1.Hash, n int64) {
	if m == nil || n <= 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[d]
	if !ok {
		return
	}
	b.done = min(b.size, b.done+n)
	now := time.Now()
	for _, img := range b.users {
		if img.started.IsZero() {
			img.started = now
		}
	}
}

// Complete marks blob d as there (cached, or moved without being counted).
func (m *Meter) Complete(d v1.Hash) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.blobs[d]; ok {
		b.done = b.size
	}
}

// Finish marks an image done (its blobs complete) or failed.
func (m *Meter) Finish(id string, err error) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	img, ok := m.byID[id]
	if !ok {
		img = &imageMeter{id: id}
		m.byID[id] = img
		m.images = append(m.images, img)
	}
	if err != nil {
		img.state = 2
		return
	}
	img.state = 1
	for _, d := range img.blobs {
		m.blobs[d].done = m.blobs[d].size
	}
}

// Writer counts what is written to it as bytes of blob d.
func (m *Meter) Writer(d v1.Hash) io.Writer {
	return meterWriter{m: m, d: d}
}

type meterWriter struct {
	m *Meter
	d v1.Hash
}

func (w meterWriter) Write(p []byte) (int, error) {
	w.m.Add(w.d, int64(len(p)))
	return len(p), nil
}

// ImageProgress is one image in a Snapshot.
type ImageProgress struct {
	ID      string
	Current int64
	Total   int64
	// Started is when its first byte moved (zero before).
	Started time.Time
	Done    bool
	Failed  bool
}

// Snapshot is the state of a Meter at one moment.
type Snapshot struct {
	Start       time.Time
	Current     int64 // bytes of distinct blobs moved
	Total       int64 // bytes of distinct blobs planned
	ImagesDone  int   // done or failed
	ImagesTotal int
	Images      []ImageProgress // in planning order
}

// Snapshot reads the meter.
func (m *Meter) Snapshot() Snapshot {
	if m == nil {
		return Snapshot{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Snapshot{Start: m.start, ImagesTotal: len(m.images)}
	for _, b := range m.blobs {
		s.Current += b.done
		s.Total += b.size
	}
	for _, img := range m.images {
		p := ImageProgress{ID: img.id, Started: img.started, Done: img.state == 1, Failed: img.state == 2}
		for _, d := range img.blobs {
			p.Current += m.blobs[d].done
			p.Total += m.blobs[d].size
		}
		if p.Done || p.Failed {
			s.ImagesDone++
		}
		s.Images = append(s.Images, p)
	}
	return s
}

// blobsOfImage lists the config and layers of an image, for Plan.
func blobsOfImage(img v1.Image) ([]v1.Descriptor, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	return append([]v1.Descriptor{m.Config}, m.Layers...), nil
}

// blobsOfIndex lists the blobs of every image child of an index.
func blobsOfIndex(idx v1.ImageIndex) ([]v1.Descriptor, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var out []v1.Descriptor
	for _, child := range im.Manifests {
		switch {
		case child.MediaType.IsImage():
			img, err := idx.Image(child.Digest)
			if err != nil {
				return nil, err
			}
			ds, err := blobsOfImage(img)
			if err != nil {
				return nil, err
			}
			out = append(out, ds...)
		case child.MediaType.IsIndex():
			inner, err := idx.ImageIndex(child.Digest)
			if err != nil {
				return nil, err
			}
			ds, err := blobsOfIndex(inner)
			if err != nil {
				return nil, err
			}
			out = append(out, ds...)
		}
	}
	return out, nil
}

// planImage plans an image's blobs on m; a manifest that cannot be read is
// left to the work to report.
func planImage(m *Meter, id string, img v1.Image) {
	if m == nil {
		return
	}
	if blobs, err := blobsOfImage(img); err == nil {
		m.Plan(id, blobs)
	}
}

// planIndex plans the blobs of every image of an index on m.
func planIndex(m *Meter, id string, idx v1.ImageIndex) {
	if m == nil {
		return
	}
	if blobs, err := blobsOfIndex(idx); err == nil {
		m.Plan(id, blobs)
	}
}

// metered plans t (an image or index) on m and counts the bytes read from its
// layers, as a push reads them.
func metered(m *Meter, id string, t remote.Taggable) remote.Taggable {
	if m == nil {
		return t
	}
	switch v := t.(type) {
	case v1.ImageIndex:
		planIndex(m, id, v)
		return &meteredIndex{inner: v, m: m}
	case v1.Image:
		planImage(m, id, v)
		return &meteredImage{Image: v, m: m}
	}
	return t
}

// meteredIndex hands out its children as meteredImages.
type meteredIndex struct {
	inner v1.ImageIndex
	m     *Meter
}

func (i *meteredIndex) MediaType() (types.MediaType, error)       { return i.inner.MediaType() }
func (i *meteredIndex) Digest() (v1.Hash, error)                  { return i.inner.Digest() }
func (i *meteredIndex) Size() (int64, error)                      { return i.inner.Size() }
func (i *meteredIndex) IndexManifest() (*v1.IndexManifest, error) { return i.inner.IndexManifest() }
func (i *meteredIndex) RawManifest() ([]byte, error)              { return i.inner.RawManifest() }

func (i *meteredIndex) Image(h v1.Hash) (v1.Image, error) {
	img, err := i.inner.Image(h)
	if err != nil {
		return nil, err
	}
	return &meteredImage{Image: img, m: i.m}, nil
}

func (i *meteredIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	idx, err := i.inner.ImageIndex(h)
	if err != nil {
		return nil, err
	}
	return &meteredIndex{inner: idx, m: i.m}, nil
}

type meteredImage struct {
	v1.Image
	m *Meter
}

func (i *meteredImage) Layers() ([]v1.Layer, error) {
	ls, err := i.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for k, l := range ls {
		out[k] = &meteredLayer{Layer: l, m: i.m}
	}
	return out, nil
}

func (i *meteredImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := i.Image.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	return &meteredLayer{Layer: l, m: i.m}, nil
}

type meteredLayer struct {
	v1.Layer
	m *Meter
}

func (l *meteredLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	d, err := l.Layer.Digest()
	if err != nil {
		return rc, nil
	}
	return &meteredReader{ReadCloser: rc, w: l.m.Writer(d)}, nil
}

type meteredReader struct {
	io.ReadCloser
	w io.Writer
}

func (r *meteredReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.w.Write(p[:n]) //nolint:errcheck // a meter never fails
	return n, err
}
