// Package docker holds the `docker bkcache` commands: flags in, one pkg call, output out.
package docker

import (
	"fmt"

	"github.com/docker/cli/cli"
	"github.com/docker/cli/cli-plugins/plugin"
	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/bkcache/bkcache/pkg/cmdutil"
	"github.com/bkcache/bkcache/pkg/interrupt"
	"github.com/bkcache/bkcache/pkg/printer"
)

// NewRootCommand builds `docker bkcache`.
func NewRootCommand(dockerCli command.Cli) *cobra.Command {
	root := &cobra.Command{
		Use:   "bkcache COMMAND",
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
		SilenceUsage:  true,
		SilenceErrors: true,
		// A mistyped or missing command is an error with a suggestion, not
		// the usage and exit 0.
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return unknownCommand(cmd, args)
		},
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if plugin.PersistentPreRunE != nil { // nil outside plugin.Run (unit tests)
				if err := plugin.PersistentPreRunE(cmd, args); err != nil {
					return err
				}
			}
			// Ctrl-C and SIGTERM cancel the command's context, so it unwinds
			// through its clean-ups (temp files, partial archives, helper
			// containers) instead of dying where it stands.
			ctx, _ := interrupt.Context(cmd.Context(), dockerCli.Err())
			cmd.SetContext(ctx)
			return nil
		},
	}
	root.AddCommand(
		newUpCommand(dockerCli),
		newDownCommand(dockerCli),
		newStatusCommand(dockerCli),
		newVerifyCommand(dockerCli),
		newLogsCommand(dockerCli),
		newWarmCommand(dockerCli),
		newPruneCommand(dockerCli),
		newPushCommand(dockerCli),
		newSaveCommand(dockerCli),
		newLoadCommand(dockerCli),
		newVersionCommand(dockerCli),
	)
	withInterruptExitCodes(root)
	return root
}

// withInterruptExitCodes makes every command end as shells expect after an
// interrupt: exit 130 (SIGINT) or 143 (SIGTERM), once its clean-ups have run.
func withInterruptExitCodes(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		withInterruptExitCodes(c)
	}
	run := cmd.RunE
	if run == nil {
		return
	}
	cmd.RunE = func(c *cobra.Command, args []string) error {
		err := run(c, args)
		if code := interrupt.ExitCode(c.Context(), err); code > 1 {
			return cli.StatusError{Cause: err, StatusCode: code,
				Status: fmt.Sprintf("%s: interrupted; temporary files and helper containers were removed", c.CommandPath())}
		}
		return err
	}
}

// unknownCommand is the error for "docker bkcache" without a command or with
// one that does not exist, with cobra's suggestions ("stauts" -> status).
func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) > 0 && args[0] == "help" {
		// "docker bkcache help [COMMAND]": the docker CLI's help command sits
		// on its own root, so it arrives here as an argument.
		target := cmd
		if c, rest, err := cmd.Find(args[1:]); err == nil && len(rest) == 0 {
			target = c
		}
		return target.Help()
	}
	return cmdutil.UnknownCommand(cmd, args, "up, status, verify, warm, ...")
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
