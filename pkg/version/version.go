// Package version holds the build's version string, stamped by the Makefile
// with -ldflags "-X github.com/bkcache/bkcache/pkg/version.Version=...".
package version

// Version is set at link time; "dev" marks an unstamped build.
var Version = "dev"

// Vendor and URL name the project in plugin metadata and help.
const (
	Vendor = "bkcache"
	URL    = "https://github.com/bkcache/bkcache"
)

// Info is what each plugin's `version` command prints.
type Info struct {
	Plugin  string `json:"plugin"`
	Version string `json:"version"`
}

// Get is the version information of plugin (docker-bkcache, kubectl-bkcache).
func Get(plugin string) Info { return Info{Plugin: plugin, Version: Version} }

// String is the one-line text form: "PLUGIN VERSION".
func (i Info) String() string { return i.Plugin + " " + i.Version }
