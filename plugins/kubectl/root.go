// Package kubectl holds the `kubectl bkcache` commands: flags in, one pkg call, output out.
package kubectl

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/bkcache/bkcache/pkg/cmdutil"
	"github.com/bkcache/bkcache/pkg/printer"
)

// NewRootCommand builds `kubectl bkcache` with kubectl's connection flags.
func NewRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	flags := genericclioptions.NewConfigFlags(true)
	root := &cobra.Command{
		Use:   "kubectl-bkcache COMMAND",
		Short: "List the images a deployment needs and point node runtimes at a bkcache cache",
		Long: `kubectl bkcache lists every image a helmfile deployment needs and points
containerd on every node at a bkcache pull-through cache.`,
		SilenceUsage:  true,
		SilenceErrors: false,
		// A mistyped or missing command is an error with a suggestion, not
		// the usage and exit 0.
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return unknownCommand(cmd, args)
		},
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl bkcache"},
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	flags.AddFlags(root.PersistentFlags())
	root.AddCommand(newVersionCommand(streams), newImagesCommand(streams, flags), newMirrorCommand(streams, flags))
	return root
}

// unknownCommand is the error for "kubectl bkcache" without a command or with
// one that does not exist, with cobra's suggestions ("imgaes" -> images).
func unknownCommand(cmd *cobra.Command, args []string) error {
	return cmdutil.UnknownCommand(cmd, args, "images, mirror, version")
}

func newVersionCommand(streams genericiooptions.IOStreams) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print the plugin version",
		Example: "  kubectl bkcache version\n  kubectl bkcache version -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return printer.Version(streams.Out, output, "kubectl-bkcache")
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json|yaml")
	return cmd
}
