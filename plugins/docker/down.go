package docker

import (
	"bufio"
	"errors"
	"fmt"
	"strings"

	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/bkcache/bkcache/pkg/cache"

	"github.com/bkcache/bkcache/pkg/printer"
)

type downOptions struct {
	all, purge, yes bool
	configDir       string
	output          string
}

func newDownCommand(dockerCli command.Cli) *cobra.Command {
	var o downOptions
	cmd := &cobra.Command{
		Use:   "down [NAME...]",
		Short: "Stop and remove caches; --purge also deletes their config and data",
		Long: `Stops and removes the cache containers (default: the only cache on this
engine, or bkhub when none runs; several caches need NAME or --all). The config file and
cached data stay, so "docker bkcache up" brings the cache back warm; --purge
deletes them too and asks first unless --yes is given. Removing a cache that
is already gone is not an error.

down touches only what it recognises as a cache's own: a container bkcache made
(or the guide's registry:2), the registry config and the front's binary, and in
the data directory registry:2's storage; anything else there is left and named.
--all skips containers that only carry bkcache's labels, with a note.`,
		Example: `  docker bkcache down
  docker bkcache down dockerio k8s
  docker bkcache down --all --purge --yes`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			names := args
			if o.all {
				if len(args) > 0 {
					return errors.New("give cache names or --all, not both")
				}
				var strangers []cache.Stranger
				var err error
				if names, strangers, err = cache.Names(ctx, dockerCli.Client()); err != nil {
					return err
				}
				for _, s := range strangers {
					fmt.Fprintf(dockerCli.Err(), "note: %s\n", s)
				}
			} else if len(names) == 0 {
				c, err := cache.Choose(ctx, dockerCli.Client(), "", "", "NAME (docker bkcache down NAME) or --all")
				switch {
				case errors.Is(err, cache.ErrNoCache):
					// Nothing runs: bkhub's files may still be there for --purge.
					names = []string{cache.DefaultName}
				case err != nil:
					return err
				default:
					names = []string{c.Spec.Name}
				}
			}
			var results []cache.DownResult
			for _, n := range names {
				res, err := cache.Down(ctx, dockerCli.Client(), n, cache.DownOptions{
					Purge:    o.purge,
					Defaults: cache.Spec{ConfigDir: o.configDir},
					Confirm:  confirmPurge(dockerCli, n, o.yes),
					Progress: dockerCli.Err(),
				})
				if err != nil {
					return err
				}
				results = append(results, res)
			}
			if ok, err := printer.Structured(dockerCli.Out(), o.output, results); ok {
				return err
			}
			for _, r := range results {
				state := "removed"
				if !r.Removed {
					state = "already gone"
				}
				fmt.Fprintf(dockerCli.Out(), "cache %s: container %s %s\n", r.Name, r.Container, state)
				for _, p := range r.Purged {
					fmt.Fprintf(dockerCli.Out(), "  deleted %s\n", p)
				}
				for _, p := range r.Left {
					fmt.Fprintf(dockerCli.Out(), "  left %s (not the cache's own: remove it yourself if you mean to)\n", p)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.all, "all", false, "every bkcache cache on this engine")
	f.BoolVar(&o.purge, "purge", false, "also delete the config file and the cached data")
	f.BoolVarP(&o.yes, "yes", "y", false, "do not ask before --purge deletes")
	f.StringVar(&o.configDir, "config-dir", cache.DefaultConfigDir, "where to find NAME.yaml when the container is already gone")
	f.StringVarP(&o.output, "output", "o", "", "output format: json|yaml")
	return cmd
}

func confirmPurge(dockerCli command.Cli, name string, yes bool) func([]string) (bool, error) {
	return func(paths []string) (bool, error) {
		if yes {
			return true, nil
		}
		if !dockerCli.In().IsTerminal() {
			return false, fmt.Errorf("--purge of cache %s would delete %s; stdin is not a terminal to ask, so pass --yes", name, strings.Join(paths, " and "))
		}
		fmt.Fprintf(dockerCli.Err(), "Delete cache %s for good: %s? [y/N] ", name, strings.Join(paths, " and "))
		line, _ := bufio.NewReader(dockerCli.In()).ReadString('\n')
		answer := strings.ToLower(strings.TrimSpace(line))
		return answer == "y" || answer == "yes", nil
	}
}
