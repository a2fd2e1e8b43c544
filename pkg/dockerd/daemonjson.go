// Package dockerd patches dockerd's daemon.json for Docker-runtime nodes. Pure: bytes in, bytes out.
//
// Docker-runtime nodes: dockerd has no hosts.toml; it trusts a plain-HTTP registry through
// `insecure-registries` and mirrors docker.io (and only docker.io) through `registry-mirrors`,
// both in /etc/docker/daemon.json and both reloaded live on SIGHUP.
package dockerd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"

	"github.com/bkcache/bkcache/pkg/imageref"
)

// DefaultPath is where dockerd reads its configuration.
const DefaultPath = "/etc/docker/daemon.json"

const (
	keyInsecure = "insecure-registries"
	keyMirrors  = "registry-mirrors"
)

// Spec says what daemon.json must contain for the cache.
type Spec struct {
	Cache string // HOST:PORT of the cache
	// TLS: dockerd verifies the cache (https, CA in /etc/docker/certs.d), so it is not made
	// an insecure registry.
	TLS bool
	// MirrorDockerIO: docker.io is an upstream, so the cache goes first in registry-mirrors.
	MirrorDockerIO bool
}

// MirrorURL is the cache as a registry-mirrors entry.
func (s Spec) MirrorURL() string {
	if s.TLS {
		return "https://" + s.Cache
	}
	return "http://" + s.Cache
}

// Config is the part of daemon.json bkcache touches.
type Config struct {
	InsecureRegistries []string `json:"insecureRegistries,omitempty"`
	RegistryMirrors    []string `json:"registryMirrors,omitempty"`
}

type member struct {
	key string
	val json.RawMessage
}

// parseObject reads a JSON object keeping its keys in file order and each value's bytes, so a
// rewrite loses nothing but whitespace. Empty input is an empty object (a missing file).
func parseObject(data []byte) ([]member, error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // dockerd accepts a UTF-8 BOM
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	var anyv any
	if err := json.Unmarshal(data, &anyv); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line := 1 + bytes.Count(data[:min(int(se.Offset), len(data))], []byte("\n"))
			return nil, fmt.Errorf("not valid JSON (line %d: %w); dockerd cannot load it either: fix it by hand first", line, se)
		}
		return nil, fmt.Errorf("not valid JSON (%w); fix it by hand first", err)
	}
	if _, ok := anyv.(map[string]any); !ok {
		return nil, errors.New("not a JSON object; fix it by hand first")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // '{'
		return nil, err
	}
	var out []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := tok.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return nil, err
		}
		if slices.ContainsFunc(out, func(m member) bool { return m.key == key }) {
			// Which one would win is up to dockerd's decoder: refuse to guess.
			return nil, fmt.Errorf("key %q appears twice; keep one and run again", key)
		}
		out = append(out, member{key, val})
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("text after the JSON object; fix it by hand first")
	}
	return out, nil
}

func stringList(ms []member, key string) ([]string, bool, error) {
	i := slices.IndexFunc(ms, func(m member) bool { return m.key == key })
	if i < 0 {
		return nil, false, nil
	}
	var l []string
	if err := json.Unmarshal(ms[i].val, &l); err != nil {
		return nil, true, fmt.Errorf("%q is not a list of strings; fix it by hand first", key)
	}
	return l, true, nil
}

// Parse reads the registry keys of a daemon.json (nil or empty: none).
func Parse(data []byte) (Config, error) {
	ms, err := parseObject(data)
	if err != nil {
		return Config{}, err
	}
	var c Config
	if c.InsecureRegistries, _, err = stringList(ms, keyInsecure); err != nil {
		return c, err
	}
	c.RegistryMirrors, _, err = stringList(ms, keyMirrors)
	return c, err
}

func sameMirror(a, b string) bool { return strings.TrimSuffix(a, "/") == strings.TrimSuffix(b, "/") }

// Patch adds the cache to daemon.json: HOST:PORT to insecure-registries (unless
// TLS) and, for docker.io, the cache's URL first in registry-mirrors. Every other key and value
// is kept byte for byte and in order (only whitespace may change). When nothing is missing the
// input comes back unchanged, so a second run is a no-op; nil in (no file) and nothing to add
// is nil out (no file written).
func Patch(data []byte, spec Spec) ([]byte, error) {
	if err := imageref.ValidateRegistry(spec.Cache); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	ms, err := parseObject(data)
	if err != nil {
		return nil, err
	}
	changed := false
	set := func(key string, l []string) {
		raw, _ := json.Marshal(l)
		changed = true
		if i := slices.IndexFunc(ms, func(m member) bool { return m.key == key }); i >= 0 {
			ms[i].val = raw
			return
		}
		ms = append(ms, member{key, raw})
	}
	insecure, _, err := stringList(ms, keyInsecure)
	if err != nil {
		return nil, err
	}
	if !spec.TLS && !slices.Contains(insecure, spec.Cache) {
		set(keyInsecure, append(insecure, spec.Cache))
	}
	mirrors, _, err := stringList(ms, keyMirrors)
	if err != nil {
		return nil, err
	}
	if url := spec.MirrorURL(); spec.MirrorDockerIO && (len(mirrors) == 0 || !sameMirror(mirrors[0], url)) {
		// dockerd tries mirrors in order: ours first, the others kept after it.
		rest := slices.DeleteFunc(mirrors, func(m string) bool { return sameMirror(m, url) })
		set(keyMirrors, append([]string{url}, rest...))
	}
	if !changed {
		return data, nil
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(m.val)
	}
	b.WriteByte('}')
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), "", indentOf(data)); err != nil {
		return nil, fmt.Errorf("internal error: patched daemon.json: %w", err)
	}
	out.WriteByte('\n')
	// Re-read what will be written: it must parse and hold what was asked for.
	got, err := Parse(out.Bytes())
	if err != nil || (!spec.TLS && !slices.Contains(got.InsecureRegistries, spec.Cache)) ||
		(spec.MirrorDockerIO && (len(got.RegistryMirrors) == 0 || got.RegistryMirrors[0] != spec.MirrorURL())) {
		return nil, fmt.Errorf("internal error: patched daemon.json does not read back (%v)", err)
	}
	return out.Bytes(), nil
}

// indentOf is the file's own indentation unit (its first indented line), else two spaces.
func indentOf(data []byte) string {
	for _, l := range strings.Split(string(data), "\n")[1:] {
		if ws := leadingSpace(l); ws != "" && strings.TrimSpace(l) != "" {
			return ws
		}
	}
	return "  "
}

// Missing compares dockerd's running registry configuration (`docker info --format
// '{{json .RegistryConfig}}'`) with what daemon.json asks for and lists what dockerd has not
// taken up: after a SIGHUP that means the reload has not happened yet or was refused (dockerd
// logs why, e.g. a flag in its unit that sets the same key).
func Missing(info []byte, want Config) ([]string, error) {
	rc, err := parseInfo(info)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, r := range want.InsecureRegistries {
		if !rc.insecure(r) {
			missing = append(missing, keyInsecure+" "+r)
		}
	}
	if len(want.RegistryMirrors) > 0 {
		same := len(rc.Mirrors) == len(want.RegistryMirrors)
		for i := 0; same && i < len(rc.Mirrors); i++ {
			same = sameMirror(rc.Mirrors[i], want.RegistryMirrors[i])
		}
		if !same {
			missing = append(missing, fmt.Sprintf("%s %v (running: %v)", keyMirrors, want.RegistryMirrors, rc.Mirrors))
		}
	}
	return missing, nil
}

// registryInfo is dockerd's running registry configuration, as `docker info` prints it.
type registryInfo struct {
	IndexConfigs map[string]struct {
		Secure bool
	}
	InsecureRegistryCIDRs []string
	Mirrors               []string
}

func parseInfo(info []byte) (registryInfo, error) {
	var rc registryInfo
	if err := json.Unmarshal(info, &rc); err != nil {
		return rc, fmt.Errorf("docker info: %w", err)
	}
	return rc, nil
}

// insecure reports whether dockerd treats r (a registry or a CIDR) as insecure.
func (rc registryInfo) insecure(r string) bool {
	if _, n, err := net.ParseCIDR(r); err == nil {
		return slices.Contains(rc.InsecureRegistryCIDRs, n.String())
	}
	name := strings.TrimPrefix(strings.TrimPrefix(r, "http://"), "https://")
	ic, ok := rc.IndexConfigs[name]
	return ok && !ic.Secure
}

// Kept lists what dockerd still runs with (`docker info --format '{{json .RegistryConfig}}'`)
// of before's registry keys although after no longer has them. dockerd re-reads
// insecure-registries and registry-mirrors on a reload only when the key is in the file, so a
// key removed from daemon.json keeps its old values until dockerd restarts.
func Kept(info []byte, before, after Config) ([]string, error) {
	rc, err := parseInfo(info)
	if err != nil {
		return nil, err
	}
	var kept []string
	for _, r := range before.InsecureRegistries {
		if !slices.Contains(after.InsecureRegistries, r) && rc.insecure(r) {
			kept = append(kept, keyInsecure+" "+r)
		}
	}
	for _, m := range before.RegistryMirrors {
		if !slices.ContainsFunc(after.RegistryMirrors, func(a string) bool { return sameMirror(a, m) }) &&
			slices.ContainsFunc(rc.Mirrors, func(a string) bool { return sameMirror(a, m) }) {
			kept = append(kept, keyMirrors+" "+m)
		}
	}
	return kept, nil
}

func leadingSpace(s string) string { return s[:len(s)-len(strings.TrimLeft(s, " \t"))] }
