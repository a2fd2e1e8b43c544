package docker

import (
	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/bkcache/bkcache/pkg/cache"
)

func newLogsCommand(dockerCli command.Cli) *cobra.Command {
	var follow bool
	var tail string
	cmd := &cobra.Command{
		Use:   "logs [NAME]",
		Short: "Show a cache's registry logs (default: the only cache on this engine)",
		Example: `  docker bkcache logs
  docker bkcache logs -f --tail 50 dockerio`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			c, err := cache.Choose(cmd.Context(), dockerCli.Client(), name, "", "NAME (docker bkcache logs NAME)")
			if err != nil {
				return err
			}
			return cache.Logs(cmd.Context(), dockerCli.Client(), c.Spec.Name, follow, tail, dockerCli.Out(), dockerCli.Err())
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow log output")
	cmd.Flags().StringVarP(&tail, "tail", "n", "all", "number of lines to show from the end")
	return cmd
}
