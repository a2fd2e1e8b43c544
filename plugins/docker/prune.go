package docker

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/bkcache/bkcache/pkg/cache"
	"github.com/bkcache/bkcache/pkg/front"
	"github.com/bkcache/bkcache/pkg/printer"
)

type pruneOptions struct {
	name              string
	keep              []string
	unusedFor, maxSz  string
	yes, dryRun       bool
	output            string
	opts              cache.PruneOptions
	stdinUsed, anyBad bool
}

func newPruneCommand(dockerCli command.Cli) *cobra.Command {
	var o pruneOptions
	cmd := &cobra.Command{
		Use:   "prune [NAME] (--keep FILE | --unused-for DURATION | --max-size SIZE)",
		Short: "Free the cache's disk: keep what the next deployment needs, delete the rest while nodes pull",
		Long: `Deletes images from a cache (default: the only cache on this engine; with
several, name one) while it serves, through registry:2's own storage model: the running
cache untags and deletes their manifests, then deletes the blobs registry:2's
garbage collection finds no manifest referencing. A blob being downloaded,
stored or served, and an image served while the prune runs, are never
deleted; an interrupt at any moment leaves a consistent cache (run prune
again to finish).

What leaves:
  --keep FILE        everything the lists do not name (repeatable; - is stdin).
                     Lists as "kubectl bkcache images" prints them (one image a
                     line, or chart-images lines); images by the upstream's name
                     or the cache's address. A kept image keeps its index, the
                     manifests of every platform, configs, layers and tags.
  --unused-for 30d   what was not served for that long (days, or hours: 36h).
  --max-size 500G    the least recently served, until the store is under SIZE.
Flags combine: --unused-for and --max-size then pick among what the lists do
not name; kept lists always win. The lists of the last prune also protect
images from the budget (up --max-size).

Like docker image prune it shows what it will delete and asks; --yes skips
the question, and without a terminal to ask it refuses unless --yes is given.

The BlueKing upgrade flow: list the next release's images, warm them, deploy,
then free what only the old release used:
  kubectl bkcache images --from-helmfile $INSTALL_DIR/blueking > next.txt
  docker bkcache warm -f next.txt
  (upgrade)
  docker bkcache prune --keep next.txt`,
		Example: `  kubectl bkcache images --from-helmfile $INSTALL_DIR/blueking > next.txt
  docker bkcache prune --keep next.txt --dry-run
  docker bkcache prune --keep next.txt --yes
  docker bkcache prune --unused-for 90d --max-size 400G -o json --yes
  kubectl bkcache images --from-helmfile . | docker bkcache prune bkhub --keep - --yes`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.complete(cmd, dockerCli, args); err != nil {
				return err
			}
			rep, err := cache.Prune(cmd.Context(), dockerCli.Client(), o.name, o.opts)
			if errors.Is(err, cache.ErrPruneCancelled) {
				fmt.Fprintln(dockerCli.Err(), err)
				return nil
			}
			for _, r := range rep.OtherRegistries {
				fmt.Fprintf(dockerCli.Err(), "note: %s is not served by cache %s; ignored\n", r, o.name)
			}
			if err != nil {
				return err
			}
			if ok, err := printer.Structured(dockerCli.Out(), o.output, rep); ok {
				return err
			}
			printPrune(dockerCli.Out(), rep, o.dryRun)
			if rep.Result.Error != "" {
				return fmt.Errorf("prune of cache %s stopped: %s; the cache is consistent: run prune again to finish", o.name, rep.Result.Error)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.keep, "keep", nil, "image list `FILE` whose images stay (repeatable; - for stdin)")
	f.StringVar(&o.unusedFor, "unused-for", "", "delete what was not served for this `DURATION`: 30d, 36h")
	f.StringVar(&o.maxSz, "max-size", "", "delete the least recently served until the store is under `SIZE`: 400G, 40MiB")
	f.BoolVarP(&o.yes, "yes", "f", false, "do not ask before deleting (alias --force)")
	f.BoolVar(&o.yes, "force", false, "do not ask before deleting")
	f.Lookup("force").Hidden = true
	f.BoolVar(&o.dryRun, "dry-run", false, "show what would be deleted and delete nothing")
	f.StringVarP(&o.output, "output", "o", "", "output format: json|yaml")
	return cmd
}

// complete reads the flags and the kept lists into the options.
func (o *pruneOptions) complete(cmd *cobra.Command, dockerCli command.Cli, args []string) error {
	if len(o.keep) == 0 && o.unusedFor == "" && o.maxSz == "" {
		return errors.New("say what to keep or free: --keep FILE (the next deployment's image list, e.g. from kubectl bkcache images --from-helmfile), --unused-for DURATION (e.g. 30d) or --max-size SIZE (e.g. 400G)")
	}
	if len(args) == 1 {
		o.name = args[0]
	} else {
		// Deleting from a cache picked silently among several would be worse
		// than asking: Choose lists them.
		c, err := cache.Choose(cmd.Context(), dockerCli.Client(), "", "", "NAME (docker bkcache prune NAME ...)")
		if err != nil {
			return err
		}
		o.name = c.Spec.Name
	}
	var err error
	if o.unusedFor != "" {
		if o.opts.UnusedFor, err = cache.ParseAge(o.unusedFor); err != nil {
			return fmt.Errorf("--unused-for: %w", err)
		}
	}
	if o.maxSz != "" {
		if o.opts.MaxSize, err = front.ParseSize(o.maxSz); err != nil || o.opts.MaxSize == 0 {
			return fmt.Errorf("--max-size: give a size above 0 such as 400G: %v", err)
		}
	}
	for _, file := range o.keep {
		if file == "-" {
			if o.stdinUsed {
				return errors.New("--keep - (stdin) can be given once")
			}
			o.stdinUsed = true
		}
		entries, bad, err := readList(dockerCli, file)
		if err != nil {
			return fmt.Errorf("--keep: %w", err)
		}
		if len(bad) > 0 {
			// A line not understood could be an image to keep: refuse rather than delete it.
			return fmt.Errorf("--keep %s: %d lines are not image references (listed above); fix them, prune deletes everything the lists do not name", file, len(bad))
		}
		o.opts.Keep = append(o.opts.Keep, entries...)
	}
	o.opts.DryRun = o.dryRun
	o.opts.Confirm = func(plan front.PrunePlan) (bool, error) {
		printPlan(dockerCli.Err(), o.name, plan)
		if o.yes {
			return true, nil
		}
		if o.stdinUsed || !dockerCli.In().IsTerminal() {
			return false, fmt.Errorf("prune of cache %s would delete the %d images above; there is no terminal to ask, so pass --yes", o.name, len(plan.Delete))
		}
		fmt.Fprint(dockerCli.Err(), "Are you sure you want to continue? [y/N] ")
		line, _ := bufio.NewReader(dockerCli.In()).ReadString('\n')
		answer := strings.ToLower(strings.TrimSpace(line))
		return answer == "y" || answer == "yes", nil
	}
	return nil
}

// printPlan lists what a prune will delete.
func printPlan(w io.Writer, name string, plan front.PrunePlan) {
	fmt.Fprintf(w, "WARNING! This will delete from cache %s:\n", name)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  IMAGE\tLAST SERVED\tSIZE")
	for _, im := range plan.Delete {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", im.Name(), im.LastServed.Local().Format("2006-01-02 15:04"), printer.Bytes(im.Bytes))
	}
	tw.Flush() //nolint:errcheck
	fmt.Fprintf(w, "%d images, %d blobs, %s; %d images stay (%d named by the kept lists), %s\n",
		len(plan.Delete), plan.BlobsDeleted, printer.Bytes(plan.BytesFreed), plan.ImagesAfter, plan.KeptImages, printer.Bytes(plan.BytesAfter))
	for _, k := range plan.KeepNotCached {
		fmt.Fprintf(w, "note: kept image %s is not in the cache\n", k)
	}
}

func printPrune(w io.Writer, rep cache.PruneReport, dry bool) {
	r := rep.Result
	if dry || !r.Done {
		if len(r.Plan.Delete) == 0 && r.Plan.BlobsDeleted == 0 {
			fmt.Fprintf(w, "cache %s: nothing to delete; %s in %d images\n", rep.Name, printer.Bytes(r.Plan.BytesAfter), r.Plan.ImagesAfter)
			return
		}
		if dry {
			printPlan(w, rep.Name, r.Plan)
			fmt.Fprintln(w, "dry run: nothing was deleted")
		}
		return
	}
	fmt.Fprintf(w, "Deleted %d images and %d blobs from cache %s\n", r.ImagesDeleted, r.BlobsDeleted, rep.Name)
	if r.SkippedImages+r.SkippedBlobs > 0 {
		fmt.Fprintf(w, "Kept %d images and %d blobs served while the prune ran\n", r.SkippedImages, r.SkippedBlobs)
	}
	fmt.Fprintf(w, "Total reclaimed space: %s\nRemaining: %s in %d images\n", printer.Bytes(r.BytesFreed), printer.Bytes(r.BytesAfter), r.Plan.ImagesAfter+r.SkippedImages)
}
