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
