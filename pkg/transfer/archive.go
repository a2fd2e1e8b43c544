package transfer

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/klauspost/compress/zstd"
)

// Archives are an OCI image layout in a tar: blobs shared by images are stored
// once; each image's descriptor in index.json names it with the standard
// org.opencontainers.image.ref.name annotation; bkcache-images.txt lists them.
const (
	refNameAnnotation = "org.opencontainers.image.ref.name"
	archiveListName   = "bkcache-images.txt"
)

// SaveOptions tune Save.
type SaveOptions struct {
	Platforms []v1.Platform
	Zstd      bool
	Keychain  authn.Keychain
	Insecure  bool
	Progress  io.Writer
	// Meter, when set, follows the bytes per image for a progress display.
	Meter *Meter
}

// SaveReport sums up a Save.
type SaveReport struct {
	Images  []ImageResult `json:"images"`
	Blobs   int           `json:"blobs"`
	Bytes   int64         `json:"bytes"`
	Seconds float64       `json:"seconds"`
}

// Save writes every image of the list into one archive at path, atomically.
// Nothing is written when an image cannot be read: a partial archive would
// fail at a disconnected site, where it is too late to fix.
func Save(ctx context.Context, entries []Entry, path string, opts SaveOptions) (SaveReport, error) {
	start := time.Now()
	progress := opts.Progress
	if progress == nil {
		progress = io.Discard
	}
	if opts.Keychain == nil {
		opts.Keychain = authn.DefaultKeychain
	}
	dir, err := os.MkdirTemp("", "bkcache-save-")
	if err != nil {
		return SaveReport{}, err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
	if err != nil {
		return SaveReport{}, err
	}
	cache, err := NewBlobCache(filepath.Join(dir, "fetch"), http.DefaultTransport)
	if err != nil {
		return SaveReport{}, err
	}
	cache.Meter = opts.Meter
	ropts := append(commonOptions(ctx, 4, defaultBackoff()),
		remote.WithTransport(cache), remote.WithAuthFromKeychain(opts.Keychain))
	var report SaveReport
	var list []string
	for _, e := range entries {
		src, err := SourceRef(e.Ref, "", opts.Insecure)
		if err != nil {
			return report, err
		}
		res := ImageResult{Line: e.Line, Source: e.Ref.String(), Target: path}
		annotations := layout.WithAnnotations(map[string]string{refNameAnnotation: e.Ref.Name()})
		desc, err := remote.Get(src, ropts...)
		if err == nil {
			res.Digest = desc.Digest.String()
			if desc.MediaType.IsIndex() {
				var idx v1.ImageIndex
				if idx, err = desc.ImageIndex(); err == nil {
					if idx, res.Children, err = filterIndex(idx, opts.Platforms); err == nil {
						res.Kind = "index"
						planIndex(opts.Meter, e.Ref.String(), idx)
						err = lp.AppendIndex(idx, annotations)
					}
				}
			} else {
				var img v1.Image
				if img, err = desc.Image(); err == nil {
					res.Kind = "image"
					planImage(opts.Meter, e.Ref.String(), img)
					err = lp.AppendImage(img, annotations)
				}
			}
		}
		opts.Meter.Finish(e.Ref.String(), err)
		if err != nil {
			res.Error = err.Error()
			report.Images = append(report.Images, res)
			return report, fmt.Errorf("save %s (line %d): %w; no archive was written", e.Ref, e.Line, err)
		}
		fmt.Fprintf(progress, "saved  %s (%s)\n", e.Ref, res.Digest)
		report.Images = append(report.Images, res)
		list = append(list, e.Ref.Name())
	}
	if err := os.WriteFile(filepath.Join(dir, "layout", archiveListName), []byte(strings.Join(list, "\n")+"\n"), 0o644); err != nil {
		return report, err
	}
	report.Blobs, report.Bytes, err = writeTar(ctx, filepath.Join(dir, "layout"), path, opts.Zstd)
	report.Seconds = time.Since(start).Seconds()
	return report, err
}

// writeTar packs dir into path (temp file, then rename), optionally zstd-compressed.
func writeTar(ctx context.Context, dir, path string, compress bool) (blobs int, size int64, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return 0, 0, fmt.Errorf("write archive %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 1<<20)
	var w io.Writer = bw
	var zw *zstd.Encoder
	if compress {
		if zw, err = zstd.NewWriter(bw); err != nil {
			return 0, 0, err
		}
		w = zw
	}
	tw := tar.NewWriter(w)
	var files []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error { //nolint:errcheck // errors surface on open below
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	sort.Strings(files)
	for _, p := range files {
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := os.Stat(p)
		if err != nil {
			return 0, 0, err
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, Size: info.Size(), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return 0, 0, err
		}
		f, err := os.Open(p)
		if err != nil {
			return 0, 0, err
		}
		_, err = io.Copy(tw, f)
		f.Close()
		if err != nil {
			return 0, 0, fmt.Errorf("write archive %s: %w", path, err)
		}
		if strings.HasPrefix(rel, "blobs"+string(filepath.Separator)) {
			blobs++
			size += info.Size()
		}
	}
	if err := tw.Close(); err != nil {
		return 0, 0, err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return 0, 0, err
		}
	}
	if err := bw.Flush(); err != nil {
		return 0, 0, err
	}
	if err := tmp.Sync(); err != nil {
		return 0, 0, err
	}
	if err := tmp.Close(); err != nil {
		return 0, 0, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, 0, fmt.Errorf("write archive %s: %w", path, err)
	}
	return blobs, size, nil
}

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
}

// Load checks every blob of an archive against its digest, then pushes each
// image to the target. A truncated or corrupted archive is refused before
// anything is pushed, so nothing half-loaded is left tagged.
func Load(ctx context.Context, archive string, opts LoadOptions) (Report, error) {
	start := time.Now()
	if opts.To == "" {
		return Report{}, errors.New("no target registry: pass --to HOST[:PORT] or --cache NAME")
	}
	progress := withDefaults(&opts.Jobs, &opts.Keychain, opts.Progress)
	dir, err := os.MkdirTemp("", "bkcache-load-")
	if err != nil {
		return Report{}, err
	}
	defer os.RemoveAll(dir)
	if err := untar(ctx, archive, dir); err != nil {
		return Report{}, err
	}
	if err := verifyBlobs(ctx, archive, dir); err != nil {
		return Report{}, err
	}
	lp, err := layout.FromPath(dir)
	if err != nil {
		return Report{}, fmt.Errorf("archive %s is not an OCI image layout: %w", archive, err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return Report{}, fmt.Errorf("archive %s: %w", archive, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return Report{}, fmt.Errorf("archive %s: %w", archive, err)
	}
	pusher, err := remote.NewPusher(append(commonOptions(ctx, opts.Jobs, defaultBackoff()),
		remote.WithAuthFromKeychain(opts.Keychain))...)
	if err != nil {
		return Report{}, err
	}
	var report Report
	for _, desc := range im.Manifests {
		refName := desc.Annotations[refNameAnnotation]
		res := ImageResult{Source: refName, Digest: desc.Digest.String()}
		ref, err := name.ParseReference(refName)
		if err == nil {
			var dst name.Reference
			if dst, err = TargetRef(ref, opts.To, opts.Prefix, opts.Insecure); err == nil {
				res.Target = dst.String()
				var t remote.Taggable
				if desc.MediaType.IsIndex() {
					res.Kind = "index"
					t, err = idx.ImageIndex(desc.Digest)
				} else {
					res.Kind = "image"
					t, err = idx.Image(desc.Digest)
				}
				if err == nil {
					t = metered(opts.Meter, refName, t)
					err = pusher.Push(ctx, dst, t)
				}
			}
		}
		opts.Meter.Finish(refName, err)
		if err != nil {
			res.Error = err.Error()
			report.Failed++
			fmt.Fprintf(progress, "FAILED  %s: %v\n", refName, err)
		} else {
			fmt.Fprintf(progress, "loaded  %s -> %s\n", refName, res.Target)
		}
		report.Images = append(report.Images, res)
	}
	report.Seconds = time.Since(start).Seconds()
	if report.Failed > 0 {
		return report, fmt.Errorf("%d of %d images failed to load; run the same command again to retry them", report.Failed, len(report.Images))
	}
	return report, nil
}

func untar(ctx context.Context, archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return fmt.Errorf("read archive: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	var r io.Reader = br
	if magic, _ := br.Peek(4); len(magic) == 4 && magic[0] == 0x28 && magic[1] == 0xb5 && magic[2] == 0x2f && magic[3] == 0xfd {
		zr, err := zstd.NewReader(br)
		if err != nil {
			return fmt.Errorf("archive %s: %w", archive, err)
		}
		defer zr.Close()
		r = zr
	}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("archive %s is truncated or damaged (%v); copy it again from its source", archive, err)
		}
		clean := filepath.Clean(hdr.Name)
		if hdr.Typeflag != tar.TypeReg || filepath.IsAbs(clean) || strings.HasPrefix(clean, "..") {
			return fmt.Errorf("archive %s holds an unexpected entry %q; it was not written by docker bkcache save", archive, hdr.Name)
		}
		p := filepath.Join(dir, clean)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		out, err := os.Create(p)
		if err != nil {
			return err
		}
		n, err := io.Copy(out, tr)
		out.Close()
		if err != nil || n != hdr.Size {
			return fmt.Errorf("archive %s is truncated or damaged at %s (%v); copy it again from its source", archive, hdr.Name, err)
		}
	}
}

// verifyBlobs checks every blob's content against the digest it is named by.
func verifyBlobs(ctx context.Context, archive, dir string) error {
	root := filepath.Join(dir, "blobs", "sha256")
	entries, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("archive %s has no blobs: %w", archive, err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := os.Open(filepath.Join(root, e.Name()))
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != e.Name() {
			return fmt.Errorf("archive %s is corrupted: blob sha256:%s has content sha256:%s; nothing was loaded, copy the archive again", archive, e.Name(), got)
		}
	}
	var index struct {
		Manifests []json.RawMessage `json:"manifests"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err == nil {
		err = json.Unmarshal(data, &index)
	}
	if err != nil || len(index.Manifests) == 0 {
		return fmt.Errorf("archive %s has no usable index.json (%v); it was not written by docker bkcache save", archive, err)
	}
	return nil
}
