package containerd

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/bkcache/bkcache/pkg/imageref"
)

// LegacyHostsDir is the certs.d directory for a legacy mirrors key ("*" meant every registry).
func LegacyHostsDir(name string) string {
	if name == "*" {
		return "_default"
	}
	return name
}

// RenderLegacyHosts turns one legacy `mirrors."<name>".endpoint` list into the equivalent
// hosts.toml: the endpoints in order as pull/resolve hosts, the registry itself as server
// (containerd used to append it too). "*" becomes _default, which has no server line.
func RenderLegacyHosts(name string, endpoints []string) ([]byte, error) {
	dir := LegacyHostsDir(name)
	if dir != "_default" {
		if err := imageref.ValidateRegistry(dir); err != nil {
			return nil, fmt.Errorf("legacy mirror %q: %w", name, err)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Migrated by kubectl bkcache mirror from config.toml mirrors.%q.\n", name)
	server := ""
	if dir != "_default" {
		server = UpstreamServer(name)
		fmt.Fprintf(&b, "server = %q\n", server)
	}
	for _, e := range endpoints {
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(e, "\"\\\n") {
			return nil, fmt.Errorf("legacy mirror %q: endpoint %q is not an http(s) URL; migrate it by hand", name, e)
		}
		if strings.TrimSuffix(e, "/") == server {
			continue
		}
		fmt.Fprintf(&b, "\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", strings.TrimSuffix(e, "/"))
	}
	if _, err := ParseHosts([]byte(b.String())); err != nil {
		return nil, fmt.Errorf("internal error: migrated hosts.toml for %q does not parse: %w", name, err)
	}
	return []byte(b.String()), nil
}
