package docker

import (
	"context"
	"errors"
	"fmt"

	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/bkcache/bkcache/pkg/cache"
	"github.com/bkcache/bkcache/pkg/transfer"

	"github.com/bkcache/bkcache/pkg/printer"
)

func newSaveCommand(dockerCli command.Cli) *cobra.Command {
	var o transfer.SaveOptions
	var file, out, platforms string
	cmd := &cobra.Command{
		Use:   "save -f LIST -o ARCHIVE",
		Short: "Write a list of images into one archive for a disconnected site",
		Long: `Writes every listed image into one archive: an OCI image layout in a tar,
blobs shared by images stored once, with the list it holds (bkcache-images.txt).
--zstd compresses it. The archive is written whole or not at all: into a
temporary file beside ARCHIVE, renamed over it at the end. As with docker save,
-o names the file; -o - writes the archive to standard output. ARCHIVE may be a
new file or a regular file to replace; a directory, a device or a link to one is
refused before anything is downloaded.`,
		Example: `  docker bkcache save -f images.txt -o bk-images.tar
  kubectl bkcache images --from-helmfile . | docker bkcache save -f - -o bk-images.tar.zst --zstd --platform linux/amd64
  docker bkcache save -f images.txt -o - | ssh intranet-host 'cat > bk-images.tar'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == transfer.StdoutPath {
				if dockerCli.Out().IsTerminal() {
					return errors.New("refusing to write an archive to a terminal: redirect standard output, or pass -o FILE")
				}
				o.Stdout = dockerCli.Out()
			} else if _, err := transfer.CheckOutputPath(out); err != nil {
				return err
			}
			entries, bad, err := readList(dockerCli, file)
			if err != nil {
				return err
			}
			if len(bad) > 0 {
				return fmt.Errorf("%d lines of %s are not image references (see above); fix them: an archive must be complete", len(bad), file)
			}
			if o.Platforms, err = parsePlatforms(platforms); err != nil {
				return err
			}
			progress := newProgress(dockerCli)
			o.Progress, o.Meter = progress, progress.Meter()
			rep, err := transfer.Save(cmd.Context(), entries, out, o)
			progress.Close()
			if err != nil {
				return err
			}
			summary := dockerCli.Out()
			if out == transfer.StdoutPath {
				summary = dockerCli.Err() // standard output carries the archive
			}
			fmt.Fprintf(summary, "saved %d images to %s: %d blobs, %s, in %.1fs\n", len(rep.Images), out, rep.Blobs, printer.Bytes(rep.Bytes), rep.Seconds)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "image list, one reference per line (- for stdin)")
	f.StringVarP(&out, "output", "o", "", "archive file to write (- for standard output), as with docker save")
	f.StringVar(&platforms, "platform", "", "keep only these platforms of an index (default: whole index)")
	f.BoolVar(&o.Zstd, "zstd", false, "compress the archive with zstd")
	f.BoolVar(&o.Insecure, "insecure", false, "plain HTTP to the source registries")
	return cmd
}

func newLoadCommand(dockerCli command.Cli) *cobra.Command {
	var o transfer.LoadOptions
	var archive, cacheName, output string
	cmd := &cobra.Command{
		Use:   "load -i ARCHIVE (--to REGISTRY | --cache NAME)",
		Short: "Push an archive made by save into a registry or into a cache's storage",
		Long: `Checks every blob of the archive against its digest, then pushes each image
to --to (same flags as push), or writes it into the storage of the bkcache
cache --cache on this host. A truncated or corrupted archive is refused
before anything is pushed.`,
		Example: `  docker bkcache load -i bk-images.tar --to registry.intra:5000 --insecure
  docker bkcache load -i bk-images.tar --cache bkhub`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if archive == "" {
				return errors.New("no archive: pass -i ARCHIVE")
			}
			if (o.To == "") == (cacheName == "") {
				return errors.New("pass one of --to REGISTRY or --cache NAME")
			}
			progress := newProgress(dockerCli)
			o.Progress, o.Meter = progress, progress.Meter()
			rep, err := loadInto(ctx, dockerCli, archive, cacheName, o)
			progress.Close()
			if ok, werr := printer.Structured(dockerCli.Out(), output, rep); ok {
				if werr != nil {
					return werr
				}
			} else if len(rep.Images) > 0 { // a refused archive loaded nothing: its error says why
				fmt.Fprintf(dockerCli.Out(), "loaded %d of %d images from %s in %.1fs\n", len(rep.Images)-rep.Failed, len(rep.Images), archive, rep.Seconds)
				var failed []transfer.ImageResult
				for _, r := range rep.Images {
					if r.Error != "" {
						failed = append(failed, r)
					}
				}
				printFailures(dockerCli.Out(), failed)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&archive, "input", "i", "", "archive written by docker bkcache save")
	f.StringVar(&o.To, "to", "", "target registry HOST[:PORT]")
	f.StringVar(&cacheName, "cache", "", "write into the storage of this bkcache cache instead")
	f.StringVar(&o.Prefix, "prefix", "", "repository prefix at the target")
	f.BoolVar(&o.Insecure, "insecure", false, "plain HTTP to the target")
	f.IntVarP(&o.Jobs, "jobs", "j", 4, "blobs pushed at once")
	f.StringVarP(&output, "output", "o", "", "output format: json|yaml")
	return cmd
}

func loadInto(ctx context.Context, dockerCli command.Cli, archive, cacheName string, o transfer.LoadOptions) (transfer.Report, error) {
	if cacheName == "" {
		return transfer.Load(ctx, archive, o)
	}
	return cache.LoadIntoCache(ctx, dockerCli.Client(), cacheName, archive, o, dockerCli.Err())
}
