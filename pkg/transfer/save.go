package transfer

import (
	"archive/tar"
	"bufio"
	"context"
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
	// Stdout receives the archive when the path is "-".
	Stdout io.Writer
	// Meter, when set, follows the bytes per image for a progress display.
	Meter *Meter
}

// complete fills the defaults as Push does (Save fetches one image at a time).
func (o *SaveOptions) complete() {
	_, o.Keychain, o.Progress = transferDefaults(1, o.Keychain, o.Progress)
}

// SaveReport sums up a Save.
type SaveReport struct {
	Images  []ImageResult `json:"images"`
	Blobs   int           `json:"blobs"`
	Bytes   int64         `json:"bytes"`
	Seconds float64       `json:"seconds"`
}

// Save writes every image of the list into one archive at path, atomically,
// or to opts.Stdout when path is "-". The path is checked before anything is
// downloaded (see CheckOutputPath). Nothing is written when an image cannot be
// read: a partial archive would fail at a disconnected site, where it is too
// late to fix.
func Save(ctx context.Context, entries []Entry, path string, opts SaveOptions) (SaveReport, error) {
	start := time.Now()
	target := path
	if path == StdoutPath {
		if opts.Stdout == nil {
			return SaveReport{}, errors.New("save to standard output: no output stream")
		}
	} else {
		var err error
		if target, err = CheckOutputPath(path); err != nil {
			return SaveReport{}, err
		}
	}
	opts.complete()
	progress := opts.Progress
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
	if path == StdoutPath {
		report.Blobs, report.Bytes, err = packTar(ctx, filepath.Join(dir, "layout"), opts.Stdout, opts.Zstd)
	} else {
		report.Blobs, report.Bytes, err = writeTar(ctx, filepath.Join(dir, "layout"), target, opts.Zstd)
	}
	report.Seconds = time.Since(start).Seconds()
	return report, err
}

// writeTar packs dir into path: a temp file beside it, then a rename over
// what is there only if that is still a regular file (or nothing).
func writeTar(ctx context.Context, dir, path string, compress bool) (blobs int, size int64, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return 0, 0, fmt.Errorf("write archive %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if blobs, size, err = packTar(ctx, dir, tmp, compress); err != nil {
		return 0, 0, fmt.Errorf("write archive %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return 0, 0, fmt.Errorf("write archive %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return 0, 0, fmt.Errorf("write archive %s: %w", path, err)
	}
	if err := checkReplaceable(path); err != nil {
		return 0, 0, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, 0, fmt.Errorf("write archive %s: %w", path, err)
	}
	return blobs, size, nil
}

// packTar writes dir as a tar stream to out, optionally zstd-compressed, with
// fixed modes and times so the same content gives the same bytes.
func packTar(ctx context.Context, dir string, out io.Writer, compress bool) (blobs int, size int64, err error) {
	bw := bufio.NewWriterSize(out, 1<<20)
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
		_, err = io.Copy(tw, contextReader{ctx, f})
		f.Close()
		if err != nil {
			return 0, 0, err
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
	return blobs, size, nil
}

// contextReader stops a long copy when ctx ends (an interrupt), between reads.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
