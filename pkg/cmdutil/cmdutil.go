// Package cmdutil holds what both plugins' command trees share.
package cmdutil

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// UnknownCommand is the error for a plugin's root run without a command or
// with one that does not exist, with cobra's suggestions ("stauts" ->
// status). commands names a few of the root's commands for the first case.
func UnknownCommand(cmd *cobra.Command, args []string, commands string) error {
	path := cmd.CommandPath()
	if len(args) == 0 {
		return fmt.Errorf("%s needs a command; run '%s --help' for the list (%s)", path, path, commands)
	}
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's own default, set only on its error path
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], path)
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return fmt.Errorf("%s\nRun '%s --help' for the list of commands", msg, path)
}
