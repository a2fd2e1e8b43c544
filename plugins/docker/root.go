// Package docker holds the `docker bkcache` commands: flags in, one pkg call, output out.
package docker

import (
	"github.com/docker/cli/cli-plugins/plugin"
	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/bkcache/bkcache/pkg/printer"
)

// NewRootCommand builds `docker bkcache`.
func NewRootCommand(dockerCli command.Cli) *cobra.Command {
	root := &cobra.Command{
		Use:   "bkcache",
		Short: "Run and fill a registry:2 pull-through cache for slow links",
		Long: `docker bkcache runs the real registry:2 as a pull-through cache (proxy.remoteurl)
in a container on this Docker engine, reports on it and proves it serves warm pulls.

Defaults follow the BlueKing guide: cache "bkhub" of https://hub.bktencent.com on
port 5500, config /etc/docker/registry/bkhub.yaml, data /var/lib/registry-bkhub,
container proxy-bkhub.`,
		Example: `  docker bkcache up
  docker pull 127.0.0.1:5500/blueking/slug-app:v1.1.0-beta.27
  docker bkcache verify blueking/slug-app:v1.1.0-beta.27
  docker bkcache status`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: plugin.PersistentPreRunE,
	}
	root.AddCommand(
		newUpCommand(dockerCli),
		newDownCommand(dockerCli),
		newStatusCommand(dockerCli),
		newVerifyCommand(dockerCli),
		newLogsCommand(dockerCli),
		newWarmCommand(dockerCli),
		newPushCommand(dockerCli),
		newSaveCommand(dockerCli),
		newLoadCommand(dockerCli),
		newVersionCommand(dockerCli),
	)
	return root
}

func newVersionCommand(dockerCli command.Cli) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the plugin version",
		Example: "  docker bkcache version -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return printer.Version(dockerCli.Out(), output, "docker-bkcache")
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json|yaml")
	return cmd
}
