package cmdutil

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestUnknownCommand(t *testing.T) {
	root := &cobra.Command{Use: "bk"}
	root.AddCommand(&cobra.Command{Use: "status", Run: func(*cobra.Command, []string) {}})
	tests := []struct {
		args []string
		want []string
	}{
		{nil, []string{"bk needs a command", "(status, up)"}},
		{[]string{"stauts"}, []string{`unknown command "stauts" for "bk"`, "did you mean status?", "Run 'bk --help'"}},
		{[]string{"zzzzzz"}, []string{`unknown command "zzzzzz"`}},
	}
	for _, tt := range tests {
		err := UnknownCommand(root, tt.args, "status, up")
		for _, w := range tt.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: %v, want it to say %q", tt.args, err, w)
			}
		}
		if len(tt.args) > 0 && tt.args[0] == "zzzzzz" && strings.Contains(err.Error(), "did you mean") {
			t.Errorf("%v: %v suggests a command", tt.args, err)
		}
	}
}
