package docker

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"

	"github.com/bkcache/bkcache/pkg/printer"
)

func newTestRoot(t *testing.T, stdin string) (*cobra.Command, *bytes.Buffer) {
	t.Helper()
	var out bytes.Buffer
	cli, err := command.NewDockerCli(command.WithInputStream(io.NopCloser(strings.NewReader(stdin))), command.WithCombinedStreams(&out))
	if err != nil {
		t.Fatal(err)
	}
	return NewRootCommand(cli), &out
}

// run parses args for a subcommand and calls it directly, as the plugin
// framework would after its own set-up.
func run(t *testing.T, stdin string, args ...string) error {
	t.Helper()
	root, _ := newTestRoot(t, stdin)
	cmd, rest, err := root.Find(args)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		return err
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		return err
	}
	return cmd.RunE(cmd, cmd.Flags().Args())
}

func TestUpFlagDefaultsAreTheGuides(t *testing.T) {
	root, _ := newTestRoot(t, "")
	up, _, _ := root.Find([]string{"up"})
	want := map[string]string{
		"name": "bkhub", "upstream": "https://hub.bktencent.com", "port": "5500", "config-dir": "/etc/docker/registry",
		"image": "hub.bktencent.com/library/registry:2", "restart": "always", "network": "bridge", "bind": "", "pull": "missing",
		"plain": "false", "upstream-rate": "0",
	}
	for flag, def := range want {
		f := up.Flags().Lookup(flag)
		if f == nil {
			t.Errorf("up has no --%s", flag)
			continue
		}
		if f.DefValue != def {
			t.Errorf("--%s defaults to %q, want %q", flag, f.DefValue, def)
		}
	}
	if up.Flags().Lookup("password") != nil {
		t.Errorf("up must not take a password as a flag value")
	}
}

func TestFlagErrorsBeforeTouchingDocker(t *testing.T) {
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"password-stdin without username", "pw\n", []string{"up", "--password-stdin"}, "--username"},
		{"empty password", "", []string{"up", "--username", "bk", "--password-stdin"}, "stdin was empty"},
		{"file and single-cache flags", "", []string{"up", "-f", "caches.yaml", "--port", "5600"}, "--port applies to one cache"},
		{"missing caches file", "", []string{"up", "-f", "/nonexistent/caches.yaml"}, "read caches file"},
		{"down names and --all", "", []string{"down", "--all", "bkhub"}, "not both"},
		{"bad platform", "", []string{"verify", "--platform", "linux/amd64/v2/x/y", "img"}, "--platform"},
		{"logs takes one name", "", []string{"logs", "a", "b"}, "accepts at most 1 arg"},
		{"verify needs an image", "", []string{"verify"}, "requires at least 1 arg"},
		{"bad upstream rate", "", []string{"up", "--upstream-rate", "20X"}, "--upstream-rate"},
		{"rate with --plain", "", []string{"up", "--plain", "--upstream-rate", "20M", "--config-dir", "/nonexistent-bkcache"}, "--upstream-rate needs the front"},
		{"warm modes exclude each other", "", []string{"warm", "-f", "-", "--into-storage", "--through-proxy"}, "exclude each other"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := run(t, tc.stdin, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("docker bkcache %s: error %v, want one mentioning %q", strings.Join(tc.args, " "), err, tc.want)
			}
		})
	}
}

func TestVersionOutput(t *testing.T) {
	root, out := newTestRoot(t, "")
	cmd, _, err := root.Find([]string{"version"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.ParseFlags([]string{"-o", "json"}); err != nil {
		t.Fatal(err)
	}
	if err := cmd.RunE(cmd, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"plugin": "docker-bkcache"`) {
		t.Errorf("version -o json = %s", out)
	}
	if _, err := printer.Structured(io.Discard, "xml", nil); err == nil || !strings.Contains(err.Error(), "-o") {
		t.Errorf("an unknown -o format was accepted: %v", err)
	}
}
