package cache

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/zstd"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
)

// A site that can pull no image at all brings the cache image as a `docker save`
// archive (the release's bkcache-VERSION-registry-image-linux-ARCH.tar.gz, or
// any docker save output); `up --image-archive FILE` loads it when the engine
// lacks the image.

// ArchiveImage is one image of a `docker save` archive.
type ArchiveImage struct {
	Tags         []string `json:"tags"`
	OS           string   `json:"os,omitempty"`
	Architecture string   `json:"architecture,omitempty"`
	Variant      string   `json:"variant,omitempty"`
}

// Platform is os/arch[/variant], as docker prints it.
func (a ArchiveImage) Platform() string {
	p := a.OS + "/" + a.Architecture
	if a.Variant != "" {
		p += "/" + a.Variant
	}
	return p
}

// imageLoader is the part of the Engine API that loads an archive;
// github.com/moby/moby/client.APIClient has it.
type imageLoader interface {
	ImageLoad(ctx context.Context, input io.Reader, options ...client.ImageLoadOption) (client.ImageLoadResult, error)
	ServerVersion(ctx context.Context, options client.ServerVersionOptions) (client.ServerVersionResult, error)
}

// ReadImageArchive lists the tagged images of a `docker save` archive at path:
// plain tar, gzip or zstd, the legacy layout or Docker 25's OCI layout (both
// carry manifest.json).
func ReadImageArchive(ctx context.Context, path string) ([]ArchiveImage, error) {
	open := archiveOpener(path)
	manifest, err := tarball.LoadManifest(open)
	if err != nil {
		return nil, fmt.Errorf("read image archive %s: %w; give a `docker save` archive (plain, .gz or .zst)", path, err)
	}
	var images []ArchiveImage
	for _, d := range manifest {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(d.RepoTags) == 0 {
			continue // an untagged image cannot be named by --image
		}
		a := ArchiveImage{Tags: d.RepoTags}
		tag, err := name.NewTag(d.RepoTags[0])
		if err != nil {
			return nil, fmt.Errorf("image archive %s: tag %q: %w", path, d.RepoTags[0], err)
		}
		img, err := tarball.Image(open, &tag)
		if err != nil {
			return nil, fmt.Errorf("image archive %s: image %s: %w", path, tag, err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			return nil, fmt.Errorf("image archive %s: config of %s: %w", path, tag, err)
		}
		a.OS, a.Architecture, a.Variant = cfg.OS, cfg.Architecture, cfg.Variant
		images = append(images, a)
	}
	return images, nil
}

// findArchiveImage returns the image of the archive tagged image, comparing
// normalised names (registry:2 is docker.io/library/registry:2).
func findArchiveImage(images []ArchiveImage, image string) (ArchiveImage, bool, error) {
	want, err := name.NewTag(image)
	if err != nil {
		return ArchiveImage{}, false, fmt.Errorf("--image %s: %w; --image-archive needs a NAME:TAG reference, not a digest", image, err)
	}
	for _, a := range images {
		for _, t := range a.Tags {
			if got, err := name.NewTag(t); err == nil && got.Name() == want.Name() {
				return a, true, nil
			}
		}
	}
	return ArchiveImage{}, false, nil
}

// LoadImageArchive makes image available on the engine from the `docker save`
// archive at path: it checks that the archive holds image (a typo fails on every
// host, not only on those lacking the image), and loads it through the Engine
// API when the engine does not have it, saying so on progress. An empty path
// does nothing.
func LoadImageArchive(ctx context.Context, eng Engine, path, image, pull string, progress io.Writer) error {
	if path == "" {
		return nil
	}
	if pull == PullAlways {
		return errors.New("--image-archive loads the image from a file and --pull always would pull it: drop one of them")
	}
	images, err := ReadImageArchive(ctx, path)
	if err != nil {
		return err
	}
	found, ok, err := findArchiveImage(images, image)
	if err != nil {
		return err
	}
	if !ok {
		var have []string
		for _, a := range images {
			have = append(have, a.Tags...)
		}
		slices.Sort(have)
		if len(have) == 0 {
			have = []string{"no tagged image"}
		}
		return fmt.Errorf("image archive %s does not contain %s (it holds: %s); pass --image with one of those, or the archive that holds %s", path, image, strings.Join(have, ", "), image)
	}

	if _, err := eng.ImageInspect(ctx, image); err == nil {
		fmt.Fprintf(progress, "image %s is on the engine already; %s not loaded\n", image, path)
		return nil
	} else if !cerrdefs.IsNotFound(err) {
		return engineError(eng, err)
	}
	loader, ok := eng.(imageLoader)
	if !ok {
		return fmt.Errorf("this Docker client cannot load images; run: docker load -i %s", path)
	}
	if found.Architecture != "" {
		v, err := loader.ServerVersion(ctx, client.ServerVersionOptions{})
		if err != nil {
			return engineError(eng, err)
		}
		if v.Arch != "" && (v.Arch != found.Architecture || (found.OS != "" && v.Os != found.OS)) {
			return fmt.Errorf("image %s in %s is for %s but the Docker engine runs %s/%s: use the archive built for %s (bkcache-VERSION-registry-image-%s-%s.tar.gz)",
				image, path, found.Platform(), v.Os, v.Arch, v.Arch, v.Os, v.Arch)
		}
	}

	fmt.Fprintf(progress, "loading %s from %s\n", image, path)
	rc, err := archiveOpener(path)()
	if err != nil {
		return fmt.Errorf("open image archive %s: %w", path, err)
	}
	defer rc.Close()
	// The engine gets a plain tar: old engines do not unpack zstd.
	res, err := loader.ImageLoad(ctx, rc, client.ImageLoadWithQuiet(true))
	if err != nil {
		return fmt.Errorf("load image archive %s: %w", path, engineError(eng, err))
	}
	defer res.Close()
	if err := loadMessages(res); err != nil {
		return fmt.Errorf("load image archive %s: the engine said: %w", path, err)
	}
	if _, err := eng.ImageInspect(ctx, image); err != nil {
		return fmt.Errorf("loaded %s but the engine has no image %s afterwards (%v); try: docker load -i %s", path, image, err, path)
	}
	fmt.Fprintf(progress, "loaded %s (%s) from %s\n", image, found.Platform(), path)
	return nil
}

// loadMessages reads the engine's JSON message stream of an image load and
// returns the first error it reports.
func loadMessages(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read the engine's answer: %w", err)
		}
		if m.Error != nil {
			return m.Error
		}
	}
}

// archiveOpener opens path as an uncompressed tar stream, whatever its compression.
func archiveOpener(path string) tarball.Opener {
	return func() (io.ReadCloser, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		br := bufio.NewReader(f)
		magic, _ := br.Peek(4)
		switch {
		case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
			zr, err := gzip.NewReader(br)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return readCloser{zr, closers{zr, f}}, nil
		case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
			zr, err := zstd.NewReader(br)
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return readCloser{zr, closers{zstdCloser{zr}, f}}, nil
		default:
			return readCloser{br, f}, nil
		}
	}
}

type readCloser struct {
	io.Reader
	io.Closer
}

type closers []io.Closer

func (cs closers) Close() error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

type zstdCloser struct{ d *zstd.Decoder }

func (z zstdCloser) Close() error { z.d.Close(); return nil }
