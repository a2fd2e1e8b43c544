// Command gendocs writes docs/reference: one Markdown page per command of
// both plugins, generated from their cobra commands with cobra's doc
// generator, and an index. `make docs` runs it; its test fails when the
// committed pages differ from what it would write.
//
//	go run ./internal/gendocs [DIR]   (default docs/reference)
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/docker/cli/cli/command"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/bkcache/bkcache/plugins/docker"
	"github.com/bkcache/bkcache/plugins/kubectl"
)

func main() {
	dir := "docs/reference"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	pages, err := Pages()
	if err == nil {
		err = Write(dir, pages)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "gendocs: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("gendocs: wrote %d pages into %s\n", len(pages), dir)
}

// index is the name of the generated page that lists the others.
const index = "README.md"

// roots are both plugins' root commands, named as users type them.
func roots() ([]*cobra.Command, error) {
	cli, err := command.NewDockerCli(command.WithCombinedStreams(io.Discard))
	if err != nil {
		return nil, err
	}
	dockerRoot := docker.NewRootCommand(cli)
	// Under the docker CLI the plugin's commands read "docker bkcache ..."; alone
	// the root would be "bkcache".
	dockerRoot.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: "docker bkcache"}
	kubectlRoot := kubectl.NewRootCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard})
	return []*cobra.Command{dockerRoot, kubectlRoot}, nil
}

// Pages renders every page: file name -> content.
func Pages() (map[string][]byte, error) {
	all, err := roots()
	if err != nil {
		return nil, err
	}

	pages := map[string][]byte{}
	var list bytes.Buffer
	list.WriteString("# Command reference\n\n" +
		"One page per command, generated from the commands themselves (`make docs`; a test fails when a page is stale).\n" +
		"Every page is what `--help` prints, with the flags' defaults as they are on any machine.\n")
	for _, root := range all {
		fmt.Fprintf(&list, "\n## %s\n\n", root.DisplayName())
		for _, c := range walk(root) {
			c.DisableAutoGenTag = true // no date: the pages change only when the commands do
			portableDefaults(c)
			var page bytes.Buffer
			if err := doc.GenMarkdownCustom(c, &page, func(s string) string { return s }); err != nil {
				return nil, fmt.Errorf("%s: %w", c.CommandPath(), err)
			}
			name := strings.ReplaceAll(c.CommandPath(), " ", "_") + ".md"
			pages[name] = page.Bytes()
			fmt.Fprintf(&list, "- [%s](%s): %s\n", c.CommandPath(), name, c.Short)
		}
	}
	pages[index] = list.Bytes()
	return pages, nil
}

// walk lists a command and its available descendants, depth first, sorted.
func walk(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	children := slices.Clone(c.Commands())
	sort.Slice(children, func(i, j int) bool { return children[i].Name() < children[j].Name() })
	for _, ch := range children {
		if ch.IsAvailableCommand() {
			out = append(out, walk(ch)...)
		}
	}
	return out
}

// portableDefaults writes defaults that come from this machine (kubectl's
// --cache-dir under the home directory) as $HOME, so the pages are the same
// wherever they are generated.
func portableDefaults(c *cobra.Command) {
	home, _ := os.UserHomeDir()
	fix := func(f *pflag.Flag) {
		if home != "" && home != "/" && strings.Contains(f.DefValue, home) {
			f.DefValue = strings.ReplaceAll(f.DefValue, home, "$HOME")
		}
	}
	c.Flags().VisitAll(fix)
	c.PersistentFlags().VisitAll(fix)
	c.InheritedFlags().VisitAll(fix)
}

// Write makes dir hold exactly pages: stale generated pages (a command
// removed or renamed) go, other files stay.
func Write(dir string, pages map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	old, err := generated(dir)
	if err != nil {
		return err
	}
	for _, name := range old {
		if _, ok := pages[name]; !ok {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return err
			}
		}
	}
	for name, data := range pages {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// generated lists the files in dir that the generator writes.
func generated(dir string) ([]string, error) {
	var out []string
	for _, pat := range []string{"docker_bkcache*.md", "kubectl_bkcache*.md", index} {
		m, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			return nil, err
		}
		for _, p := range m {
			out = append(out, filepath.Base(p))
		}
	}
	return out, nil
}
