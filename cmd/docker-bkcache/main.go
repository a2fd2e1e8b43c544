// Command docker-bkcache is the Docker CLI plugin: `docker bkcache ...`.
package main

import (
	"os"

	"github.com/docker/cli/cli-plugins/metadata"
	"github.com/docker/cli/cli-plugins/plugin"
	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/bkcache/bkcache/pkg/front"
	"github.com/bkcache/bkcache/pkg/version"
	"github.com/bkcache/bkcache/plugins/docker"
)

func main() {
	// The cache container's entrypoint; docker itself never passes "front" as argv[1].
	if len(os.Args) > 1 && os.Args[1] == "front" {
		os.Exit(front.Main(os.Args[2:]))
	}
	plugin.Run(func(dockerCli command.Cli) *cobra.Command {
		return docker.NewRootCommand(dockerCli)
	}, metadata.Metadata{
		SchemaVersion:    "0.1.0",
		Vendor:           version.Vendor,
		Version:          version.Version,
		ShortDescription: "Run and fill a registry:2 pull-through cache for slow links",
		URL:              version.URL,
	})
}
