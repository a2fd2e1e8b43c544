// Package docker holds the `docker bkcache` commands: flags in, one pkg call, output out.
package docker

import (
	"github.com/docker/cli/cli-plugins/plugin"
	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"
)

// NewRootCommand builds `docker bkcache`.
func NewRootCommand(dockerCli command.Cli) *cobra.Command {
	root := &cobra.Command{
		Use:   "bkcache",
		Short: "Run and fill a registry:2 pull-through cache for slow links",
		Long: `docker bkcache runs the real registry:2 as a pull-through cache (proxy.remoteurl)
in a container on this Docker engine, reports on it and proves it serves warm pulls.`,
		SilenceUsage:      true,
		PersistentPreRunE: plugin.PersistentPreRunE,
	}
	return root
}
