package docker

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/bkcache/bkcache/pkg/cache"

	"github.com/bkcache/bkcache/pkg/printer"
)

func newStatusCommand(dockerCli command.Cli) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status [NAME...]",
		Short: "Show every bkcache cache: layout, upstream, state, mode, health, disk use, hit ratio, bytes saved",
		Long: `Shows every bkcache cache on this engine (found by label), or the named ones.

A cache with the front (the default layout) reports its mode and since when
("online", or "upstream unreachable since 12:03, serving cached content"), the
share of blob requests served from storage (HITS), the bytes the slow link did
not carry (SAVED: bytes served minus bytes fetched from the upstream) and the
requests that joined a download another client had started (SHARED); -o json
carries every counter of the front.

A cache of registry:2 alone (--plain) reports registry:2's own figures:
manifests served from the cache and fetched from the upstream. registry:2
keeps no usable blob counters; "docker bkcache verify" measures blob fetches
per image.

DISK is the data directory's size, the budget (up --max-size) when there is
one, and the file system's free space; status warns from 90 % of either,
says "disk full" when new blobs cannot be stored (cached content is still
served), and "cannot store: REASON since TIME" when storing fails otherwise.`,
		Example: `  docker bkcache status
  docker bkcache status bkhub -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			sts, strangers, err := cache.Statuses(cmd.Context(), dockerCli.Client(), args...)
			if err != nil {
				return err
			}
			for _, s := range strangers {
				fmt.Fprintf(dockerCli.Err(), "note: %s\n", s)
			}
			if ok, err := printer.Structured(dockerCli.Out(), output, sts); ok {
				return err
			}
			if len(sts) == 0 {
				fmt.Fprintln(dockerCli.Out(), "no bkcache cache on this engine; create one with \"docker bkcache up\"")
				return nil
			}
			printStatus(dockerCli.Out(), sts)
			for _, s := range sts {
				for _, p := range s.Problems {
					fmt.Fprintf(dockerCli.Err(), "cache %s: %s\n", s.Name, p)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table|json|yaml")
	return cmd
}

// printStatus writes the status table, then one line per cache whose mode
// needs words (an unreachable upstream).
func printStatus(w io.Writer, sts []cache.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tLAYOUT\tUPSTREAM\tADDRESS\tSTATE\tRESTARTS\tHEALTH\tMODE\tDISK\tHITS\tSAVED\tSHARED")
	for _, s := range sts {
		mode, hits, saved, shared := "-", "-", "-", "-"
		switch {
		case s.Front != nil:
			mode = s.Mode
			if s.Mode == cache.ModeOffline && s.ModeSince != nil {
				mode = "offline since " + s.ModeSince.Local().Format("15:04")
			}
			if s.Front.Counters.BlobRequests > 0 {
				hits = fmt.Sprintf("%.1f%% of %d blobs", 100*s.Front.HitRatio, s.Front.Counters.BlobRequests)
			}
			saved = printer.Bytes(max(s.Front.BytesSaved, 0))
			shared = strconv.FormatInt(s.Front.SharedDownloads, 10)
		case s.Metrics != nil:
			hits = fmt.Sprintf("%d/%d manifests", s.Metrics.ManifestHits, s.Metrics.ManifestRequests)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Layout, s.Upstream, s.Address, s.State, s.Restarts, s.Health, mode, cache.DiskText(s), hits, saved, shared)
	}
	tw.Flush() //nolint:errcheck // a failed write to the terminal has nowhere to go
	for _, s := range sts {
		if s.Mode == cache.ModeOffline {
			fmt.Fprintf(w, "cache %s: %s\n", s.Name, s.ModeText)
		}
	}
}
