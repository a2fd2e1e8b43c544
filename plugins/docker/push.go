package docker

import (
	"fmt"
	"io"

	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/bkcache/bkcache/pkg/transfer"

	"github.com/bkcache/bkcache/pkg/printer"
)

func newPushCommand(dockerCli command.Cli) *cobra.Command {
	var o transfer.PushOptions
	var file, platforms, output string
	cmd := &cobra.Command{
		Use:   "push -f LIST --to REGISTRY",
		Short: "Copy a list of images into an intranet registry (the guide's method 2)",
		Long: `Copies each listed image from its registry (or --from, e.g. the cache) to
--to, keeping repository paths (after --prefix) and tags, so digests stay the
same. Indexes are copied whole unless --platform picks platforms (the index
then holds only those, under a new digest).

Images are copied concurrently (-j); blobs the target has are skipped, blobs
another repository at the target has are mounted, and each blob is fetched
from the source once. 429, 5xx, timeouts and resets are retried with backoff.
A failed image does not stop the rest; the command ends with a table of what
failed and exits non-zero. Running it again copies only what is missing.
Credentials come from the Docker config and its credential helpers.`,
		Example: `  docker bkcache push -f images.txt --to registry.intra:5000
  docker bkcache push -f images.txt --from 127.0.0.1:5500 --to registry.intra:5000 --insecure
  kubectl bkcache images --from-helmfile . | docker bkcache push -f - --to registry.intra:5000 --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			entries, bad, err := readList(dockerCli, file)
			if err != nil {
				return err
			}
			if o.Platforms, err = parsePlatforms(platforms); err != nil {
				return err
			}
			o.SourceInsecure = o.Insecure
			progress := newProgress(dockerCli)
			o.Progress, o.Meter = progress, progress.Meter()
			report, pushErr := transfer.Push(cmd.Context(), entries, o)
			progress.Close()
			if ok, err := printer.Structured(dockerCli.Out(), output, report); ok {
				if err != nil {
					return err
				}
			} else {
				printPush(dockerCli.Out(), report, o.To)
			}
			if pushErr != nil {
				return pushErr
			}
			if len(bad) > 0 {
				return fmt.Errorf("%d lines of %s are not image references (see above); the rest was copied", len(bad), file)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&file, "file", "f", "", "image list, one reference per line (- for stdin)")
	f.StringVar(&o.To, "to", "", "target registry HOST[:PORT]")
	f.StringVar(&o.From, "from", "", "read every image from this registry instead, e.g. the cache 127.0.0.1:5500")
	f.StringVar(&o.Prefix, "prefix", "", "repository prefix at the target, e.g. mirror/")
	f.StringVar(&platforms, "platform", "", "copy only these platforms of an index, e.g. linux/amd64,linux/arm64 (default: whole index)")
	f.IntVarP(&o.Jobs, "jobs", "j", 4, "images copied at once")
	f.BoolVar(&o.Insecure, "insecure", false, "plain HTTP to the target and --from (intranet registry without TLS)")
	f.BoolVar(&o.DryRun, "dry-run", false, "list what would be copied; copy nothing")
	f.StringVarP(&output, "output", "o", "", "output format: json|yaml")
	cmd.MarkFlagRequired("to") //nolint:errcheck
	return cmd
}

// printPush writes a push's summary line and its failures.
func printPush(w io.Writer, report transfer.Report, to string) {
	verb, unchanged := "copied", 0
	if report.DryRun {
		verb = "would copy"
	}
	for _, r := range report.Images {
		if r.Unchanged {
			unchanged++
		}
	}
	present := ""
	if unchanged > 0 {
		present = fmt.Sprintf(" (%d already there, unchanged)", unchanged)
	}
	fmt.Fprintf(w, "%s %d of %d images to %s%s in %.1fs: %d blobs, %s fetched from the source, %s reused within the run\n",
		verb, len(report.Images)-report.Failed-unchanged, len(report.Images), to, present, report.Seconds, report.BlobsFetched, printer.Bytes(report.BytesFetched), printer.Bytes(report.BytesReused))
	var failed []transfer.ImageResult
	for _, r := range report.Images {
		if r.Error != "" {
			failed = append(failed, r)
		}
	}
	printFailures(w, failed)
}
