package docker

import (
	"fmt"
	"strconv"
	"text/tabwriter"

	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/bkcache/bkcache/pkg/proxy"

	"github.com/bkcache/bkcache/pkg/printer"
)

func newStatusCommand(dockerCli command.Cli) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status [NAME...]",
		Short: "Show every bkcache cache: upstream, port, state, health, disk use, cache figures",
		Long: `Shows every bkcache cache on this engine (found by label), or the named ones.
Cache figures come from registry:2's own metrics endpoint: manifests served
from the cache (hits) and fetched from the upstream (misses). registry:2 keeps
no usable blob counters, so no blob hit rate is shown; "docker bkcache verify"
measures blob fetches per image.`,
		Example: `  docker bkcache status
  docker bkcache status bkhub -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			sts, err := proxy.Statuses(cmd.Context(), dockerCli.Client(), args...)
			if err != nil {
				return err
			}
			if ok, err := printer.Structured(dockerCli.Out(), output, sts); ok {
				return err
			}
			if len(sts) == 0 {
				fmt.Fprintln(dockerCli.Out(), "no bkcache cache on this engine; create one with \"docker bkcache up\"")
				return nil
			}
			tw := tabwriter.NewWriter(dockerCli.Out(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tUPSTREAM\tADDRESS\tSTATE\tRESTARTS\tHEALTH\tDISK\tMANIFEST HITS\tMANIFEST MISSES")
			for _, s := range sts {
				hits, misses := "-", "-"
				if s.Metrics != nil {
					hits = strconv.FormatUint(s.Metrics.ManifestHits, 10)
					misses = strconv.FormatUint(s.Metrics.ManifestMisses, 10)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", s.Name, s.Upstream, s.Address, s.State, s.Restarts, s.Health, humanBytes(s.DiskBytes), hits, misses)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
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
