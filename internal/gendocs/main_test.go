package main

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// The committed reference is what the commands say now.
func TestReferenceIsCurrent(t *testing.T) {
	pages, err := Pages()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("..", "..", "docs", "reference")
	have, err := generated(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Sorted(maps.Keys(pages))
	slices.Sort(have)
	if !slices.Equal(have, want) {
		t.Errorf("docs/reference holds %v, the commands give %v; run make docs", have, want)
	}
	for name, data := range pages {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err == nil && !bytes.Equal(got, data) {
			t.Errorf("docs/reference/%s is stale; run make docs", name)
		}
	}
}

// Pages carry nothing of the machine they were made on, and no date.
func TestPagesArePortable(t *testing.T) {
	pages, err := Pages()
	if err != nil {
		t.Fatal(err)
	}
	home, _ := os.UserHomeDir()
	for name, data := range pages {
		s := string(data)
		if home != "" && home != "/" && strings.Contains(s, home) {
			t.Errorf("%s holds this machine's home directory %s", name, home)
		}
		if strings.Contains(s, "Auto generated") {
			t.Errorf("%s carries cobra's dated footer", name)
		}
	}
	for _, want := range []string{"docker_bkcache_up.md", "docker_bkcache_verify.md", "kubectl_bkcache_images.md", "kubectl_bkcache_mirror.md", index} {
		if _, ok := pages[want]; !ok {
			t.Errorf("no page %s among %v", want, slices.Sorted(maps.Keys(pages)))
		}
	}
	if up := string(pages["docker_bkcache_up.md"]); !strings.Contains(up, "docker bkcache up [flags]") || !strings.Contains(up, "--upstream string") {
		t.Errorf("docker_bkcache_up.md does not read as docker bkcache up --help:\n%s", up)
	}
}

// Write removes the page of a command that is gone and leaves other files.
func TestWriteRemovesStalePages(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{"docker_bkcache_gone.md": "old", "notes.md": "mine"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := Write(dir, map[string][]byte{"docker_bkcache.md": []byte("new"), index: []byte("list")}); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"README.md", "docker_bkcache.md", "notes.md"}; !slices.Equal(names, want) {
		t.Errorf("after Write: %v, want %v", names, want)
	}
}

// A backquoted word in a flag's usage becomes its value name in --help
// ("--upstreams docker"): only upper-case placeholders may be backquoted.
func TestNoFakeValueNames(t *testing.T) {
	roots, err := roots()
	if err != nil {
		t.Fatal(err)
	}
	placeholder := regexp.MustCompile(`^[A-Z][A-Z0-9_:-]*$`)
	for _, root := range roots {
		for _, c := range walk(root) {
			c.Flags().VisitAll(func(f *pflag.Flag) {
				if !strings.Contains(f.Usage, "`") {
					return
				}
				if name, _ := pflag.UnquoteUsage(f); !placeholder.MatchString(name) {
					t.Errorf("%s --%s: help shows the value name %q, taken from backquotes in its usage", c.CommandPath(), f.Name, name)
				}
			})
		}
	}
}
