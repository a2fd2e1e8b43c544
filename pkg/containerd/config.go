package containerd

import (
	"bytes"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// DefaultCertsRoot is where bkcache points an empty config_path, as containerd 2.x does by default.
const DefaultCertsRoot = "/etc/containerd/certs.d"

// Flavor is who owns a config.toml.
type Flavor string

const (
	FlavorContainerd Flavor = "containerd"
	FlavorK3s        Flavor = "k3s"  // generated from /etc/rancher/k3s/registries.yaml on every start
	FlavorRKE2       Flavor = "rke2" // likewise /etc/rancher/rke2/registries.yaml
)

// ConfigInfo is what bkcache needs to know about a config.toml.
type ConfigInfo struct {
	Exists   bool   `json:"exists"`
	Version  int    `json:"version"`  // 1 (no version key), 2, 3, 4
	Flavor   Flavor `json:"flavor"`   // containerd, k3s, rke2
	Registry string `json:"registry"` // dotted path of the CRI registry section for this version
	// ConfigPath is config_path as written ("" when unset); CertsRoot is the directory hosts.toml
	// files must go into for this node: the first root of a ':' list, containerd 2.x's default
	// when unset there, "" when containerd ignores hosts.toml (1.x with no config_path).
	ConfigPath    string              `json:"configPath"`
	CertsRoot     string              `json:"certsRoot"`
	LegacyMirrors map[string][]string `json:"legacyMirrors,omitempty"` // registry -> endpoints
	LegacyTLS     []string            `json:"legacyTLS,omitempty"`     // registries with configs.<r>.tls
	LegacyAuth    []string            `json:"legacyAuth,omitempty"`    // registries with configs.<r>.auth (deprecated, still loads)
	Warnings      []string            `json:"warnings,omitempty"`
}

// registrySection is the CRI registry table per config version.
func registrySection(version int) []string {
	switch {
	case version <= 1:
		return []string{"plugins", "cri", "registry"}
	case version == 2:
		return []string{"plugins", "io.containerd.grpc.v1.cri", "registry"}
	default:
		return []string{"plugins", "io.containerd.cri.v1.images", "registry"}
	}
}

// bareKey is a TOML key that needs no quotes.
var bareKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func dotted(path []string) string {
	var parts []string
	for _, p := range path {
		if bareKey.MatchString(p) {
			parts = append(parts, p)
		} else {
			parts = append(parts, strconv.Quote(p))
		}
	}
	return strings.Join(parts, ".")
}

func lookup(m map[string]any, path []string) (any, bool) {
	var cur any = m
	for _, p := range path {
		t, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = t[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// RuntimeVersion is major and minor from a node's containerRuntimeVersion
// ("containerd://1.6.20", "containerd://v2.1.0-k3s1"); 0, 0 if unknown.
func RuntimeVersion(runtimeVersion string) (major, minor int) {
	_, v, _ := strings.Cut(runtimeVersion, "://")
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	major, _ = strconv.Atoi(parts[0])
	if len(parts) > 1 {
		minor, _ = strconv.Atoi(parts[1])
	}
	return major, minor
}

// RuntimeMajor is the major version from a node's containerRuntimeVersion; 0 if unknown.
func RuntimeMajor(runtimeVersion string) int {
	major, _ := RuntimeVersion(runtimeVersion)
	return major
}

// InspectConfig reads a config.toml (data nil: the file does not exist). path is its location
// on the node (it tells k3s and RKE2 apart); runtimeMajor is containerd's major version (0 unknown).
func InspectConfig(data []byte, path string, runtimeMajor int) (ConfigInfo, error) {
	info := ConfigInfo{Exists: data != nil, Flavor: FlavorContainerd, Version: 2}
	if runtimeMajor >= 2 {
		info.Version = 3
	}
	switch {
	case strings.Contains(path, "/rancher/k3s/") || bytes.Contains(data, []byte("k3s")) && bytes.Contains(data, []byte("/var/lib/rancher/k3s")):
		info.Flavor = FlavorK3s
	case strings.Contains(path, "/rancher/rke2/") || bytes.Contains(data, []byte("/var/lib/rancher/rke2")):
		info.Flavor = FlavorRKE2
	}
	raw := map[string]any{}
	if data != nil {
		if _, err := toml.Decode(string(data), &raw); err != nil {
			return info, fmt.Errorf("%s does not parse as TOML: %w", path, err)
		}
		info.Version = 1
		if v, ok := raw["version"]; ok {
			n, ok := v.(int64)
			if !ok || n < 1 || n > 4 {
				return info, fmt.Errorf("%s: version = %v: want 1, 2, 3 or 4", path, v)
			}
			info.Version = int(n)
		}
		if info.Version <= 2 && runtimeMajor >= 2 {
			info.Warnings = append(info.Warnings, fmt.Sprintf("config version %d on containerd %d.x: migrated in memory at start", info.Version, runtimeMajor))
		}
	}
	sec := registrySection(info.Version)
	info.Registry = dotted(sec)
	reg := map[string]any{}
	if v, ok := lookup(raw, sec); ok {
		if reg, ok = v.(map[string]any); !ok {
			return info, fmt.Errorf("%s: %s is not a table", path, info.Registry)
		}
	}
	if v, ok := reg["config_path"]; ok {
		s, ok := v.(string)
		if !ok {
			return info, fmt.Errorf("%s: %s.config_path is not a string", path, info.Registry)
		}
		info.ConfigPath = s
	}
	if mirrors, ok := reg["mirrors"].(map[string]any); ok {
		info.LegacyMirrors = map[string][]string{}
		for name, m := range mirrors {
			var eps []string
			if t, ok := m.(map[string]any); ok {
				if list, ok := t["endpoint"].([]any); ok {
					for _, e := range list {
						if s, ok := e.(string); ok {
							eps = append(eps, s)
						}
					}
				}
			}
			info.LegacyMirrors[name] = eps
		}
	}
	if configs, ok := reg["configs"].(map[string]any); ok {
		for name, c := range configs {
			t, _ := c.(map[string]any)
			if _, ok := t["tls"]; ok {
				info.LegacyTLS = append(info.LegacyTLS, name)
			}
			if _, ok := t["auth"]; ok {
				info.LegacyAuth = append(info.LegacyAuth, name)
			}
		}
		slices.Sort(info.LegacyTLS)
		slices.Sort(info.LegacyAuth)
	}
	switch {
	case info.ConfigPath != "":
		info.CertsRoot, _, _ = strings.Cut(info.ConfigPath, ":")
		if strings.Contains(info.ConfigPath, ":") {
			info.Warnings = append(info.Warnings, fmt.Sprintf("config_path %q has several roots: files go into the first, %s; a registry directory in a later root is not used for that registry", info.ConfigPath, info.CertsRoot))
		}
	case runtimeMajor >= 2 && len(info.LegacyMirrors) == 0:
		// 2.x defaults config_path to "/etc/containerd/certs.d:/etc/docker/certs.d".
		info.CertsRoot = DefaultCertsRoot
		info.Warnings = append(info.Warnings, "config_path unset: containerd 2.x uses its default /etc/containerd/certs.d:/etc/docker/certs.d; files go into the first root, and a registry directory in /etc/docker/certs.d is not used for it")
	}
	images := sec[:len(sec)-1] // the CRI (1.x) or CRI images (2.x) plugin table
	if info.Version >= 3 || runtimeMajor >= 2 {
		if v, _ := lookup(raw, append(slices.Clone(images), "use_local_image_pull")); v != true {
			info.Warnings = append(info.Warnings, "containerd 2.1+ pulls through the transfer service by default; if pulls skip the cache, set use_local_image_pull = true in "+dotted(images))
		}
	}
	discard := append(slices.Clone(images), "containerd", "discard_unpacked_layers")
	if info.Version >= 3 {
		discard = append(slices.Clone(images), "discard_unpacked_layers")
	}
	if v, ok := lookup(raw, discard); ok && v == true {
		info.Warnings = append(info.Warnings, "discard_unpacked_layers = true: compressed layers are dropped after unpacking; re-pulls go to the cache again")
	}
	return info, nil
}

// ConfigPatch is the result of EnsureConfigPath.
type ConfigPatch struct {
	Data     []byte              // the new config.toml (equal to the input when Changed is false)
	Changed  bool                // config.toml must be written, and containerd restarted
	Migrated map[string][]string // legacy mirrors removed from config.toml: write them as hosts.toml
}

// configPathLine is a `config_path = ...` line (bare or quoted key).
var configPathLine = regexp.MustCompile(`^(\s*)("config_path"|config_path)\s*=\s*(.*)$`)

// EnsureConfigPath makes config.toml point containerd at root for hosts.toml files, with the
// smallest textual change that does it: every other byte, comment and order stays. It refuses
// what containerd would not load — config_path together with legacy `mirrors` (the CRI plugin
// then fails and kubelet breaks) or with configs.<r>.tls — unless migrate is set, in which case
// legacy mirror tables are removed and returned for hosts.toml. The result is re-parsed and
// compared with the input: only the registry keys it meant to change may differ.
func EnsureConfigPath(data []byte, info ConfigInfo, root string, migrate bool) (ConfigPatch, error) {
	if info.Flavor != FlavorContainerd {
		return ConfigPatch{}, fmt.Errorf("this node's containerd config is generated by %s from /etc/rancher/%s/registries.yaml on every start; configure the mirror there (mirrors: %s: endpoint: [http://CACHE]) and restart %s", info.Flavor, info.Flavor, DefaultUpstream, info.Flavor)
	}
	if !strings.HasPrefix(root, "/") || strings.ContainsAny(root, "\":\\\n") {
		return ConfigPatch{}, fmt.Errorf("certs root %q: want an absolute path without ':' or quotes", root)
	}
	if len(info.LegacyTLS) > 0 {
		return ConfigPatch{}, fmt.Errorf("%s.configs.<registry>.tls is set for %s: containerd refuses it together with config_path; move those settings into hosts.toml (ca, client, skip_verify) by hand, remove them from config.toml, and run again", info.Registry, strings.Join(info.LegacyTLS, ", "))
	}
	hasMirrors := len(info.LegacyMirrors) > 0
	if hasMirrors && !migrate {
		return ConfigPatch{}, fmt.Errorf("%s.mirrors is set (%s): containerd refuses legacy mirrors together with config_path (the CRI plugin fails, kubelet breaks); run with --migrate-legacy to turn them into hosts.toml files, or remove them", info.Registry, strings.Join(slices.Sorted(maps.Keys(info.LegacyMirrors)), ", "))
	}
	if info.ConfigPath != "" && !hasMirrors {
		return ConfigPatch{Data: data, Changed: false}, nil
	}
	text := string(data)
	if data == nil {
		// No config.toml: containerd runs on defaults. A file holding only the registry
		// section keeps every other default.
		text = fmt.Sprintf("# Written by kubectl bkcache mirror: containerd had no config.toml (defaults).\nversion = %d\n", info.Version)
	}
	if len(text) > 0 && !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	sec := registrySection(info.Version)
	lines := splitLines(text)
	var migrated map[string][]string
	if hasMirrors {
		var err error
		if lines, err = removeTables(lines, append(slices.Clone(sec), "mirrors")); err != nil {
			return ConfigPatch{}, err
		}
		migrated = info.LegacyMirrors
	}
	if info.ConfigPath == "" {
		lines = setConfigPath(lines, sec, root)
	}
	out := []byte(strings.Join(lines, ""))
	if err := checkPatch(data, out, info, sec, root); err != nil {
		return ConfigPatch{}, err
	}
	return ConfigPatch{Data: out, Changed: !bytes.Equal(out, data) || data == nil, Migrated: migrated}, nil
}

func hasPrefix(key, prefix []string) bool {
	return len(key) >= len(prefix) && slices.Equal(key[:len(prefix)], prefix)
}

// removeTables drops every table whose key starts with prefix (header and its lines).
func removeTables(lines []string, prefix []string) ([]string, error) {
	var out []string
	skipping, removed := false, false
	for _, l := range lines {
		if isHeader(l) {
			key, _ := headerKey(l)
			skipping = hasPrefix(key, prefix)
			removed = removed || skipping
		}
		if !skipping {
			out = append(out, l)
		}
	}
	if !removed {
		return nil, fmt.Errorf("legacy %s is not written as [%s.\"<registry>\"] tables; migrate it by hand", dotted(prefix), dotted(prefix))
	}
	return out, nil
}

// setConfigPath sets config_path in the registry table: replaces an empty value in place,
// adds a line under an existing [registry] header, or appends the table at the end.
func setConfigPath(lines []string, sec []string, root string) []string {
	in := false
	header := -1
	for i, l := range lines {
		if isHeader(l) {
			key, _ := headerKey(l)
			in = slices.Equal(key, sec)
			if in {
				header = i
			}
			continue
		}
		if in {
			if m := configPathLine.FindStringSubmatch(strings.TrimRight(l, "\n")); m != nil {
				lines[i] = fmt.Sprintf("%sconfig_path = %q\n", m[1], root)
				return lines
			}
		}
	}
	if header >= 0 {
		indent := leadingSpace(lines[header]) + "  "
		if header+1 < len(lines) && strings.TrimSpace(lines[header+1]) != "" && !isHeader(lines[header+1]) {
			indent = leadingSpace(lines[header+1])
		}
		return slices.Insert(lines, header+1, fmt.Sprintf("%sconfig_path = %q\n", indent, root))
	}
	sep := []string{}
	if len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) != "" {
		sep = []string{"\n"}
	}
	lines = append(lines, sep...)
	return append(lines, fmt.Sprintf("[%s]\n", dotted(sec)), fmt.Sprintf("  config_path = %q\n", root))
}

func leadingSpace(s string) string { return s[:len(s)-len(strings.TrimLeft(s, " \t"))] }

// checkPatch re-parses the patched file: it must load, set config_path to root, carry no
// legacy mirrors, and equal the original everywhere else.
func checkPatch(before, after []byte, info ConfigInfo, sec []string, root string) error {
	a, b := map[string]any{}, map[string]any{}
	if before != nil {
		if _, err := toml.Decode(string(before), &a); err != nil {
			return err
		}
	} else {
		a["version"] = int64(info.Version)
	}
	if _, err := toml.Decode(string(after), &b); err != nil {
		return fmt.Errorf("refusing to write config.toml: the patched file would not load: %w", err)
	}
	got, err := InspectConfig(after, "config.toml", 0)
	if err != nil {
		return fmt.Errorf("refusing to write config.toml: %w", err)
	}
	if got.ConfigPath != info.ConfigPath && got.ConfigPath != root || got.ConfigPath == "" || len(got.LegacyMirrors) > 0 {
		return fmt.Errorf("refusing to write config.toml: the patch did not take (config_path %q, legacy mirrors %v); set %s.config_path = %q by hand", got.ConfigPath, slices.Sorted(maps.Keys(got.LegacyMirrors)), dotted(sec), root)
	}
	for _, m := range []map[string]any{a, b} {
		if r, ok := lookup(m, sec); ok {
			if t, ok := r.(map[string]any); ok {
				delete(t, "config_path")
				delete(t, "mirrors")
				if len(t) == 0 {
					parent, _ := lookup(m, sec[:len(sec)-1])
					delete(parent.(map[string]any), sec[len(sec)-1])
				}
			}
		}
		pruneEmpty(m)
	}
	if !reflect.DeepEqual(a, b) {
		return fmt.Errorf("refusing to write config.toml: the patch would change more than %s.config_path; set it by hand", dotted(sec))
	}
	return nil
}

// pruneEmpty removes tables left empty, so "registry created empty" compares equal to "absent".
func pruneEmpty(m map[string]any) bool {
	for k, v := range m {
		if t, ok := v.(map[string]any); ok && pruneEmpty(t) {
			delete(m, k)
		}
	}
	return len(m) == 0
}
