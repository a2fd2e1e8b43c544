package docker

import (
	"errors"
	"fmt"
	"io"

	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/bkcache/bkcache/pkg/cache"
	"github.com/bkcache/bkcache/pkg/printer"
	"github.com/bkcache/bkcache/pkg/transfer"
)

type warmOptions struct {
	file, platforms, output string
	opts                    cache.WarmOptions
}

func newWarmCommand(dockerCli command.Cli) *cobra.Command {
	var o warmOptions
	cmd := &cobra.Command{
		Use:   "warm -f LIST",
		Short: "Fill the cache from a list of images before the deployment starts",
		Long: `Fills bkcache caches with every manifest, index child and blob the nodes will
pull, so that the first node finds them stored. Images are matched to the cache
whose upstream serves their registry (or --cache); images no cache serves are
reported. What the cache holds is skipped.

A cache with the front (the default layout) is warmed through its front:
bkcache asks for every manifest and blob, -j at a time, and the front fetches
each blob from the upstream once, whatever the number of repositories sharing
it, and stores it. --into-storage and --through-proxy change nothing there.

A cache of registry:2 alone (up --plain) has two modes. Into storage (the
default when its data directory is on this host): bkcache fetches each blob
from the upstream once and writes it with registry:2's own storage code,
through a second, plain registry:2 container on the cache's data directory;
then the cache fetches only the small manifests. Through the proxy
(--through-proxy, or when the cache is remote): bkcache pulls every blob
through the cache as a node would; registry:2 then fetches each uncached blob
from the upstream twice, and a blob shared by several repositories once per
repository.

On a terminal, the bytes, rate and time left of each image and of the whole
list are shown as docker pull shows them; elsewhere one line per image.`,
		Example: `  kubectl bkcache images --from-helmfile . > images.txt
  docker bkcache warm -f images.txt
  kubectl bkcache images --from-helmfile . | docker bkcache warm -f -
  docker bkcache warm -f images.txt --cache bkhub --platform linux/amd64,linux/arm64 -j 16`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.opts.IntoStorage && o.opts.ThroughProxy {
				return errors.New("--into-storage and --through-proxy exclude each other")
			}
			entries, bad, err := readList(dockerCli, o.file)
			if err != nil {
				return err
			}
			if o.opts.Platforms, err = parsePlatforms(o.platforms); err != nil {
				return err
			}
			progress := newProgress(dockerCli)
			o.opts.Progress, o.opts.Meter = progress, progress.Meter()
			outcome, warmErr := cache.Warm(cmd.Context(), dockerCli.Client(), entries, o.opts)
			progress.Close()
			if cmd.Context().Err() != nil {
				// Only what was done: the images listed "warmed" above.
				warmed := 0
				for _, r := range outcome.Caches {
					warmed += r.Warmed
				}
				fmt.Fprintf(dockerCli.Err(), "interrupted: %d of %d images were warmed (listed above); what the cache stored is kept, run the same command again to warm the rest\n", warmed, len(entries))
				return warmErr
			}
			if ok, err := printer.Structured(dockerCli.Out(), o.output, outcome.Caches); ok {
				if err != nil {
					return err
				}
			} else {
				printWarm(dockerCli.Out(), outcome)
			}
			if warmErr != nil {
				return warmErr
			}
			if len(bad) > 0 {
				return fmt.Errorf("%d lines of %s are not image references (see above); the rest was warmed", len(bad), o.file)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.file, "file", "f", "", "image list, one reference per line (- for stdin)")
	f.StringVar(&o.opts.Cache, "cache", "", "cache NAME on this engine, or HOST:PORT of a cache elsewhere (default: the one cache whose upstream serves each image; several are an error that lists them)")
	f.StringVar(&o.platforms, "platform", "linux/amd64", "platforms of an index the nodes pull, comma-separated, or all")
	f.BoolVar(&o.opts.IntoStorage, "into-storage", false, "registry:2 alone (--plain): write into the cache's storage (fail if it is not on this host)")
	f.BoolVar(&o.opts.ThroughProxy, "through-proxy", false, "registry:2 alone (--plain): pull everything through the cache, as nodes would")
	f.IntVarP(&o.opts.Jobs, "jobs", "j", 8, "blobs fetched at once")
	f.StringVarP(&o.output, "output", "o", "", "output format: json|yaml")
	return cmd
}

// printWarm writes one summary line per cache, then the failures.
func printWarm(w io.Writer, outcome cache.WarmOutcome) {
	for _, r := range outcome.Caches {
		fmt.Fprintf(w, "cache %s (%s): %d images, %d manifests, %d blobs (%d already cached, %s); %s\n",
			r.Cache, r.Mode, r.Images, r.Manifests, r.Blobs, r.BlobsCached, printer.Bytes(r.BytesCached), upstreamLine(r.WarmReport))
	}
	printFailures(w, outcome.Failed)
}

func upstreamLine(r transfer.WarmReport) string {
	switch {
	case r.Upstream != nil && r.Mode == cache.WarmFront:
		return fmt.Sprintf("%s in %d blobs from the upstream in %.1fs", printer.Bytes(r.Upstream.BytesFetched), r.Upstream.BlobsFetched, r.Seconds)
	case r.Upstream != nil:
		return fmt.Sprintf("%s from the upstream in %.1fs", printer.Bytes(r.Upstream.BytesFetched), r.Seconds)
	case r.Mode == cache.WarmFront:
		return fmt.Sprintf("%s pulled through the front in %.1fs", printer.Bytes(r.BytesFetched), r.Seconds)
	default:
		return fmt.Sprintf("%s pulled through the cache in %.1fs (registry:2 fetches each uncached blob from the upstream twice)", printer.Bytes(r.BytesFetched), r.Seconds)
	}
}
