// Package containerd renders containerd registry host files (certs.d/<registry>/hosts.toml)
// and inspects and minimally patches containerd's config.toml. It is pure: bytes in, bytes
// out; reaching a node's files is pkg/nodes' job.
package containerd

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/bkcache/bkcache/pkg/imageref"
)

// DefaultUpstream is the registry BlueKing pulls from.
const DefaultUpstream = "hub.bktencent.com"

// Cache is the cache a node should pull through.
type Cache struct {
	Host   string // HOST:PORT of the cache, as nodes reach it
	TLS    bool   // https:// instead of plain http://
	CAPath string // CA file on the node that signs the cache's certificate ("" = system roots)
}

// URL is the cache's base URL as containerd wants it in hosts.toml: the scheme alone decides
// plain HTTP (containerd remotes/docker/config/hosts.go reads no plain-http key; one is silently ignored).
func (m Cache) URL() string {
	if m.TLS || m.CAPath != "" {
		return "https://" + m.Host
	}
	return "http://" + m.Host
}

// DialTimeout is the dial_timeout written for the cache's [host] table, where the node's
// containerd reads it (DialTimeoutSupported). It bounds how long a pull waits on a cache that
// drops connections (host down, firewall) before it falls back to the upstream; without it
// containerd waits for its default of 30 s (core/remotes/docker/config/hosts.go), on every
// pull. The cache sits on the nodes' LAN, where a connection takes well under a millisecond:
// 2 s still lets one lost SYN be resent (Linux resends after 1 s), so a busy cache is not
// bypassed for the slow upstream over one dropped packet.
const DialTimeout = 2 * time.Second

// DialTimeoutSupported reports whether the containerd of a node's containerRuntimeVersion
// ("containerd://2.1.0") reads dial_timeout in hosts.toml: 2.1 and later (containerd commit
// "Add dial timeout field to hosts toml configuration"). Older ones ignore the key silently.
func DialTimeoutSupported(runtimeVersion string) bool {
	if !strings.HasPrefix(runtimeVersion, "containerd://") {
		return false
	}
	major, minor := RuntimeVersion(runtimeVersion)
	return major > 2 || major == 2 && minor >= 1
}

// HostsSpec says what certs.d/<Upstream>/hosts.toml must contain.
type HostsSpec struct {
	Upstream string // registry name as images name it: hub.bktencent.com, docker.io, HOST:PORT
	Cache    Cache
	// NoFallback makes the cache the only place pulls go: containerd always appends `server`
	// (or, without it, the upstream itself) as the last host, so `server` becomes the cache.
	NoFallback bool
	// DialTimeout, when set, is the cache host's dial_timeout: how soon a pull gives up on a
	// cache that does not answer and tries the upstream. Written only when there is a fallback.
	DialTimeout time.Duration
}

// CacheSpec is the spec for the cache's own name: pulls of HOST:PORT/... use plain HTTP
// (what BlueKing's insecure_registry.sh did, without push or skip_verify).
func CacheSpec(m Cache) HostsSpec {
	return HostsSpec{Upstream: m.Host, Cache: m, NoFallback: true}
}

// HostsDir is the directory under the certs root for a registry name.
func HostsDir(upstream string) string { return upstream }

// UpstreamServer is the `server` URL for a registry name: docker.io is really registry-1.docker.io.
func UpstreamServer(upstream string) string {
	if upstream == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + upstream
}

func (s HostsSpec) server() string {
	if s.NoFallback {
		return s.Cache.URL()
	}
	return UpstreamServer(s.Upstream)
}

func (s HostsSpec) validate() error {
	if s.Upstream == "_default" {
		return fmt.Errorf("upstream _default: name the registry to mirror")
	}
	if err := imageref.ValidateRegistry(s.Upstream); err != nil {
		return err
	}
	if err := imageref.ValidateRegistry(s.Cache.Host); err != nil {
		return fmt.Errorf("cache: %w", err)
	}
	if s.Cache.CAPath != "" && (!strings.HasPrefix(s.Cache.CAPath, "/") || strings.ContainsAny(s.Cache.CAPath, "\"\\\n")) {
		return fmt.Errorf("CA path %q: want an absolute path without quotes", s.Cache.CAPath)
	}
	return nil
}

// hostBlock is our [host."URL"] table.
func (s HostsSpec) hostBlock() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[host.%q]\n", s.Cache.URL())
	b.WriteString("  capabilities = [\"pull\", \"resolve\"]\n")
	if s.DialTimeout > 0 && !s.NoFallback {
		fmt.Fprintf(&b, "  dial_timeout = %q\n", s.DialTimeout.String())
	}
	if s.Cache.CAPath != "" {
		fmt.Fprintf(&b, "  ca = %q\n", s.Cache.CAPath)
	}
	return b.String()
}

// RenderHosts is a fresh hosts.toml for spec.
func RenderHosts(spec HostsSpec) ([]byte, error) {
	return MergeHosts(nil, spec)
}

// HostsFile is a hosts.toml as containerd reads it: the part bkcache cares about.
type HostsFile struct {
	Server string   `json:"server,omitempty"`
	Hosts  []string `json:"hosts,omitempty"` // host URLs in the order containerd tries them
}

// ParseHosts reads a hosts.toml. Host order matters (containerd tries them in file order), so
// it comes from the TOML metadata, not from a map.
func ParseHosts(data []byte) (HostsFile, error) {
	var raw map[string]any
	md, err := toml.Decode(string(data), &raw)
	if err != nil {
		return HostsFile{}, err
	}
	var hf HostsFile
	if s, ok := raw["server"].(string); ok {
		hf.Server = s
	} else if _, ok := raw["server"]; ok {
		return HostsFile{}, fmt.Errorf("server is not a string")
	}
	for _, k := range md.Keys() {
		if len(k) == 2 && k[0] == "host" && md.Type(k...) == "Hash" && !slices.Contains(hf.Hosts, k[1]) {
			hf.Hosts = append(hf.Hosts, k[1])
		}
	}
	if h, ok := raw["host"]; ok {
		if _, ok := h.(map[string]any); !ok {
			return HostsFile{}, fmt.Errorf("host is not a table")
		}
	}
	return hf, nil
}

// MergeHosts puts spec into an existing hosts.toml (nil: none) with a textual edit: `server`
// is set, our [host] table goes first (replacing an older one for the same URL), and every
// other line — other hosts, ca/client keys, comments — stays as it was. The result is
// re-parsed and checked; merging its own output again returns it unchanged.
func MergeHosts(existing []byte, spec HostsSpec) ([]byte, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	var before HostsFile
	if len(bytes.TrimSpace(existing)) > 0 {
		var err error
		if before, err = ParseHosts(existing); err != nil {
			return nil, fmt.Errorf("existing hosts.toml for %s does not parse (containerd ignores it as it is): %w; fix or remove it, then run again", spec.Upstream, err)
		}
	}
	var out string
	if len(bytes.TrimSpace(existing)) == 0 {
		what := fmt.Sprintf("pulls of %s try the cache first", spec.Upstream)
		switch {
		case spec.Upstream == spec.Cache.Host:
			what = "the cache, pullable by its own name"
		case spec.NoFallback:
			what = fmt.Sprintf("pulls of %s go to the cache only (--no-fallback)", spec.Upstream)
		}
		out = fmt.Sprintf("# Written by kubectl bkcache mirror: %s.\nserver = %q\n\n%s", what, spec.server(), spec.hostBlock())
	} else {
		var err error
		if out, err = mergeText(string(existing), spec); err != nil {
			return nil, err
		}
	}
	// Check what containerd will see: server, our host first, every other host kept in order.
	got, err := ParseHosts([]byte(out))
	if err != nil {
		return nil, fmt.Errorf("internal error: merged hosts.toml for %s does not parse: %w", spec.Upstream, err)
	}
	want := []string{spec.Cache.URL()}
	for _, h := range before.Hosts {
		if h != spec.Cache.URL() {
			want = append(want, h)
		}
	}
	if got.Server != spec.server() || !slices.Equal(got.Hosts, want) {
		return nil, fmt.Errorf("cannot merge into the existing hosts.toml for %s (unusual layout: server %q hosts %v); move it aside and run again", spec.Upstream, got.Server, got.Hosts)
	}
	return []byte(out), nil
}

// headerKey parses a table header line ("[a.\"b\"]") into its key path; ok is false for
// anything that is not a standard table header.
func headerKey(line string) ([]string, bool) {
	t := strings.TrimSpace(line)
	if !strings.HasPrefix(t, "[") || strings.HasPrefix(t, "[[") {
		return nil, false
	}
	md, err := toml.Decode(t, new(map[string]any))
	if err != nil {
		return nil, false
	}
	var longest []string
	for _, k := range md.Keys() {
		if len(k) > len(longest) {
			longest = k
		}
	}
	return longest, len(longest) > 0
}

// isHeader reports whether a line starts a table or array of tables.
func isHeader(line string) bool {
	t := strings.TrimSpace(line)
	if strings.HasPrefix(t, "[[") {
		_, err := toml.Decode(t, new(map[string]any))
		return err == nil
	}
	_, ok := headerKey(line)
	return ok
}

func splitLines(s string) []string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if n := len(lines); n > 0 && !strings.HasSuffix(lines[n-1], "\n") {
		lines[n-1] += "\n"
	}
	return lines
}

var serverLine = regexp.MustCompile(`^\s*("server"|server)\s*=`)

func mergeText(existing string, spec HostsSpec) (string, error) {
	lines := splitLines(existing)
	ours := spec.Cache.URL()
	var kept []string
	firstHeader, firstHost := -1, -1
	skipping, serverSet := false, false
	for _, l := range lines {
		if isHeader(l) {
			key, _ := headerKey(l)
			// Our own table and its sub-tables ([host."ours".header]) are replaced.
			skipping = len(key) >= 2 && key[0] == "host" && key[1] == ours
			if skipping {
				continue
			}
			if firstHeader < 0 {
				firstHeader = len(kept)
			}
			if firstHost < 0 && len(key) >= 1 && key[0] == "host" {
				firstHost = len(kept)
			}
		} else if skipping {
			continue
		} else if firstHeader < 0 && serverLine.MatchString(l) {
			if serverSet {
				return "", fmt.Errorf("existing hosts.toml for %s sets server twice", spec.Upstream)
			}
			if strings.Contains(l, `"""`) || strings.Contains(l, "'''") {
				return "", fmt.Errorf("existing hosts.toml for %s: multi-line server value; set it on one line and run again", spec.Upstream)
			}
			l = fmt.Sprintf("server = %q\n", spec.server())
			serverSet = true
		}
		kept = append(kept, l)
	}
	// Drop blank lines left at the end by removing our old table.
	for len(kept) > 0 && strings.TrimSpace(kept[len(kept)-1]) == "" {
		kept = kept[:len(kept)-1]
	}
	if firstHost > len(kept) {
		firstHost = -1
	}
	if !serverSet {
		at := firstHeader
		if at < 0 || at > len(kept) {
			at = len(kept)
		}
		kept = slices.Insert(kept, at, fmt.Sprintf("server = %q\n", spec.server()))
		if firstHost >= at {
			firstHost++
		}
	}
	block := spec.hostBlock()
	if firstHost < 0 {
		return strings.Join(kept, "") + "\n" + block, nil
	}
	kept = slices.Insert(kept, firstHost, block+"\n")
	return strings.Join(kept, ""), nil
}
