package transfer

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/bkcache/bkcache/pkg/userfile"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/klauspost/compress/zstd"
)

// LoadOptions tune Load; To, Prefix and Insecure as for Push.
type LoadOptions struct {
	To       string
	Prefix   string
	Insecure bool
	Jobs     int
	Keychain authn.Keychain
	Progress io.Writer
	// Meter, when set, follows the bytes per image for a progress display.
	Meter *Meter
	// Transport reaches the target; default http.DefaultTransport.
	Transport http.RoundTripper
	// ShownAs names the target in results and progress when To is only an
	// internal address (a cache's storage writer): the cache's own address.
	ShownAs string
	// TempDir holds the blobs of a compressed archive while they are pushed
	// (default: os.TempDir()). An uncompressed archive needs no temporary space.
	TempDir string
}

// Load pushes each image of an archive written by Save to the target. Before
// the first push it reads the whole archive once: every entry must be one Save
// writes, every blob must match its digest, and every blob an image needs must
// be there with the size its descriptor declares; a compressed archive's blobs
// must also fit in the free temporary space. So a damaged, incomplete or
// oversized archive is refused with nothing pushed. An uncompressed archive is
// pushed straight from the file; a zstd one is unpacked blob by blob first.
func Load(ctx context.Context, archive string, opts LoadOptions) (Report, error) {
	start := time.Now()
	if err := opts.complete(); err != nil {
		return Report{}, err
	}
	progress := opts.Progress
	contents, err := scanArchive(ctx, archive)
	if err != nil {
		return Report{}, err
	}
	images, err := contents.images()
	if err != nil {
		return Report{}, err
	}
	src, cleanup, err := contents.open(ctx, opts.TempDir)
	if err != nil {
		return Report{}, err
	}
	defer cleanup()

	pusher, err := remote.NewPusher(append(commonOptions(ctx, opts.Jobs, defaultBackoff()),
		remote.WithTransport(opts.Transport), remote.WithAuthFromKeychain(opts.Keychain))...)
	if err != nil {
		return Report{}, err
	}
	var report Report
	for _, im := range images {
		res := ImageResult{Source: im.ref.Name(), Digest: im.desc.Digest.String(), Kind: "image"}
		if im.desc.MediaType.IsIndex() {
			res.Kind = "index"
		}
		dst, err := TargetRef(im.ref, opts.To, opts.Prefix, opts.Insecure)
		if err == nil {
			res.Target = dst.String()
			if opts.ShownAs != "" {
				res.Target = opts.ShownAs + "/" + dst.Context().RepositoryStr() + refSuffix(dst)
			}
			var t remote.Taggable
			if t, err = src.taggable(im.desc); err == nil {
				err = pusher.Push(ctx, dst, metered(opts.Meter, res.Source, t))
			}
		}
		opts.Meter.Finish(res.Source, err)
		if err != nil {
			if ctx.Err() != nil {
				return report, ctx.Err()
			}
			res.Error = err.Error()
			report.Failed++
			fmt.Fprintf(progress, "FAILED  %s: %v\n", res.Source, err)
		} else {
			fmt.Fprintf(progress, "loaded  %s -> %s\n", res.Source, res.Target)
		}
		report.Images = append(report.Images, res)
	}
	report.Seconds = time.Since(start).Seconds()
	if report.Failed > 0 {
		return report, fmt.Errorf("%d of %d images failed to load; run the same command again to retry them", report.Failed, len(report.Images))
	}
	return report, nil
}

// complete checks the target and fills the defaults as Push does.
func (o *LoadOptions) complete() error {
	if o.To == "" {
		return errors.New("no target registry: pass --to HOST[:PORT] or --cache NAME")
	}
	o.Jobs, o.Keychain, o.Progress = transferDefaults(o.Jobs, o.Keychain, o.Progress)
	if o.Transport == nil {
		o.Transport = http.DefaultTransport
	}
	return nil
}

// keptBlobMax: blobs up to this size that look like JSON (manifests, indexes,
// configs) are kept in memory by the scan, so the graph can be checked before
// anything is written.
const keptBlobMax = 4 << 20

// zstdMaxWindow lets `zstd --long=31` archives in (2 GiB window, zstd's limit).
const zstdMaxWindow = 1 << 31

var blobName = regexp.MustCompile(`^blobs/sha256/([a-f0-9]{64})$`)

type archivedBlob struct {
	size   int64
	offset int64  // where its bytes start in an uncompressed archive
	data   []byte // kept when small and JSON-shaped
}

// archiveContents is what one pass over an archive learned.
type archiveContents struct {
	path       string
	compressed bool
	index      []byte
	blobs      map[v1.Hash]*archivedBlob
}

// countingReader tells how far into the file the tar reader is, so a blob's
// bytes in an uncompressed archive can be read in place later.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func openArchive(archive string) (*os.File, io.Reader, func(), bool, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, nil, nil, false, fmt.Errorf("read archive: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, nil, false, fmt.Errorf("read archive: %w", err)
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return nil, nil, nil, false, fmt.Errorf("%s is %s: give the archive file written by docker bkcache save (-i FILE)", archive, userfile.Describe(info.Mode()))
	}
	magic := make([]byte, 4)
	n, _ := io.ReadFull(f, magic)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, nil, nil, false, fmt.Errorf("read archive %s: %w", archive, err)
	}
	if n == 4 && bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		zr, err := zstd.NewReader(bufio.NewReaderSize(f, 1<<20), zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			f.Close()
			return nil, nil, nil, false, fmt.Errorf("archive %s: %w", archive, err)
		}
		return f, zr, func() { zr.Close(); f.Close() }, true, nil
	}
	return f, f, func() { f.Close() }, false, nil
}

// scanArchive reads every entry once: names and types must be what Save
// writes, blobs must match their digests. Nothing is written to disk.
func scanArchive(ctx context.Context, archive string) (*archiveContents, error) {
	_, r, closeFn, compressed, err := openArchive(archive)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	counter := &countingReader{r: r}
	tr := tar.NewReader(counter)
	c := &archiveContents{path: archive, compressed: compressed, blobs: map[v1.Hash]*archivedBlob{}}
	damaged := func(err error) error {
		return fmt.Errorf("archive %s is truncated or damaged (%v); copy it again from its source", archive, err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, damaged(err)
		}
		if err := checkEntry(archive, hdr); err != nil {
			return nil, err
		}
		offset := counter.n
		switch m := blobName.FindStringSubmatch(hdr.Name); {
		case m != nil:
			h := v1.Hash{Algorithm: "sha256", Hex: m[1]}
			if _, dup := c.blobs[h]; dup {
				return nil, fmt.Errorf("archive %s holds blob %s twice; it was not written by docker bkcache save", archive, h)
			}
			b := &archivedBlob{size: hdr.Size, offset: offset}
			sum := sha256.New()
			var w io.Writer = sum
			var kept bytes.Buffer
			if hdr.Size <= keptBlobMax {
				w = io.MultiWriter(sum, &kept)
			}
			n, err := io.Copy(w, contextReader{ctx, tr})
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err != nil || n != hdr.Size {
				return nil, damaged(fmt.Errorf("blob %s: %d of %d bytes: %v", h, n, hdr.Size, err))
			}
			if got := hex.EncodeToString(sum.Sum(nil)); got != h.Hex {
				return nil, fmt.Errorf("archive %s is corrupted: blob %s has content sha256:%s; nothing was loaded, copy the archive again", archive, h, got)
			}
			if data := kept.Bytes(); len(data) > 0 && data[0] == '{' {
				b.data = data
			}
			c.blobs[h] = b
		case hdr.Name == "index.json":
			if c.index, err = io.ReadAll(io.LimitReader(tr, keptBlobMax+1)); err != nil {
				return nil, damaged(err)
			}
			if len(c.index) > keptBlobMax {
				return nil, fmt.Errorf("archive %s: index.json is over %d bytes; it was not written by docker bkcache save", archive, keptBlobMax)
			}
		}
	}
	if c.index == nil {
		return nil, fmt.Errorf("archive %s has no index.json; it was not written by docker bkcache save", archive)
	}
	return c, nil
}

// checkEntry refuses anything Save does not write: other names, directories,
// links, devices, absolute or climbing paths.
func checkEntry(archive string, hdr *tar.Header) error {
	what := ""
	switch hdr.Typeflag {
	case tar.TypeReg:
	case tar.TypeDir:
		what = "a directory"
	case tar.TypeSymlink:
		what = "a symlink to " + hdr.Linkname
	case tar.TypeLink:
		what = "a hard link to " + hdr.Linkname
	default:
		what = fmt.Sprintf("an entry of tar type %q", hdr.Typeflag)
	}
	name := hdr.Name
	known := name == "index.json" || name == "oci-layout" || name == archiveListName || blobName.MatchString(name)
	switch {
	case what != "":
		return fmt.Errorf("archive %s holds %q, %s; docker bkcache save writes only regular files, so this archive was not written by it (nothing was loaded)", archive, name, what)
	case !known:
		return fmt.Errorf("archive %s holds an unexpected entry %q; it was not written by docker bkcache save (nothing was loaded)", archive, name)
	}
	return nil
}

type archivedImage struct {
	ref  name.Reference
	desc v1.Descriptor
}

// images checks the archive's graph: every image named in index.json, every
// child of an index, every config and layer is present with its declared size.
func (c *archiveContents) images() ([]archivedImage, error) {
	var index v1.IndexManifest
	if err := json.Unmarshal(c.index, &index); err != nil || len(index.Manifests) == 0 {
		return nil, fmt.Errorf("archive %s has no usable index.json (%v); it was not written by docker bkcache save", c.path, err)
	}
	var out []archivedImage
	for i, d := range index.Manifests {
		refName := d.Annotations[refNameAnnotation]
		ref, err := archivedName(refName)
		if err != nil {
			return nil, fmt.Errorf("archive %s: image %d of index.json has no valid name (%q): %w; it was not written by docker bkcache save (nothing was loaded)", c.path, i+1, refName, err)
		}
		if err := c.checkGraph(refName, d, 0); err != nil {
			return nil, err
		}
		out = append(out, archivedImage{ref: ref, desc: d})
	}
	return out, nil
}

// archivedName parses an image name from index.json as strictly as an image
// list: no control or formatting characters (they would reach the terminal in
// progress lines) and no empty, . or .. path components (a registry resolves
// them, so "a/../../etc/x" would land outside --prefix).
func archivedName(s string) (name.Reference, error) {
	switch {
	case !utf8.ValidString(s):
		return nil, errors.New("not UTF-8 text")
	case hasControl([]byte(s)):
		return nil, errors.New("control or invisible formatting characters")
	}
	if err := checkPath(s); err != nil {
		return nil, err
	}
	return name.ParseReference(s)
}

func (c *archiveContents) need(image, what string, d v1.Descriptor) (*archivedBlob, error) {
	b, ok := c.blobs[d.Digest]
	if !ok {
		return nil, fmt.Errorf("archive %s is incomplete: image %s needs %s %s (%d bytes), which the archive does not hold; it was altered or not written whole by docker bkcache save: make it again with save (nothing was loaded)", c.path, image, what, d.Digest, d.Size)
	}
	if b.size != d.Size {
		return nil, fmt.Errorf("archive %s is inconsistent: %s %s of image %s is %d bytes, its descriptor says %d; make the archive again with save (nothing was loaded)", c.path, what, d.Digest, image, b.size, d.Size)
	}
	return b, nil
}

func (c *archiveContents) checkGraph(image string, d v1.Descriptor, depth int) error {
	if depth > 2 {
		return fmt.Errorf("archive %s: image %s nests indexes too deeply", c.path, image)
	}
	b, err := c.need(image, "manifest", d)
	if err != nil {
		return err
	}
	if b.data == nil {
		return fmt.Errorf("archive %s: manifest %s of image %s is not a JSON manifest of at most %d bytes", c.path, d.Digest, image, keptBlobMax)
	}
	if d.MediaType.IsIndex() {
		var idx v1.IndexManifest
		if err := json.Unmarshal(b.data, &idx); err != nil {
			return fmt.Errorf("archive %s: index %s of image %s: %w", c.path, d.Digest, image, err)
		}
		for _, child := range idx.Manifests {
			if err := c.checkGraph(image, child, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	var m v1.Manifest
	if err := json.Unmarshal(b.data, &m); err != nil {
		return fmt.Errorf("archive %s: manifest %s of image %s: %w", c.path, d.Digest, image, err)
	}
	if _, err := c.need(image, "config", m.Config); err != nil {
		return err
	}
	for _, l := range m.Layers {
		if !l.MediaType.IsDistributable() {
			continue // foreign layers are fetched by the node from their URLs
		}
		if _, err := c.need(image, "layer", l); err != nil {
			return err
		}
	}
	return nil
}
