package front

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

// registryConfig is what the front reads from the registry:2 config; raw
// keeps the whole document so the children get every part it does not change.
type registryConfig struct {
	raw map[string]any

	RootDir   string   // storage.filesystem.rootdirectory
	Upstream  *url.URL // proxy.remoteurl: scheme and host (registry:2 ignores a path)
	Username  string   // proxy.username
	Password  string   // proxy.password
	TLSCert   string   // http.tls.certificate
	TLSKey    string   // http.tls.key
	ClientCAs []string // http.tls.clientcas
	Realm     string   // auth.htpasswd.realm
	Htpasswd  string   // auth.htpasswd.path

	// childRemote, when set, replaces the proxy child's proxy.remoteurl
	// and drops its credentials: the front's forwarder logs in instead.
	childRemote string
}

// readRegistryConfig parses the registry:2 config at path.
func readRegistryConfig(path string) (*registryConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read registry config: %w", err)
	}
	return parseRegistryConfig(path, data)
}

func parseRegistryConfig(path string, data []byte) (*registryConfig, error) {
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("registry config %s: %w", path, err)
	}
	if raw == nil {
		raw = map[string]any{}
	}
	c := &registryConfig{raw: raw}
	c.RootDir = str(raw, "storage", "filesystem", "rootdirectory")
	if c.RootDir == "" {
		if _, other := sub(raw, "storage")["filesystem"]; !other && len(sub(raw, "storage")) > 0 {
			return nil, fmt.Errorf("registry config %s: the front needs storage.filesystem (it writes beside registry:2's storage); use --plain for other storage drivers", path)
		}
		c.RootDir = "/var/lib/registry" // registry:2's default
	}
	remote := str(raw, "proxy", "remoteurl")
	if remote == "" {
		return nil, fmt.Errorf("registry config %s: no proxy.remoteurl: the front caches one upstream registry", path)
	}
	u, err := url.Parse(remote)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("registry config %s: proxy.remoteurl %q is not an http(s) URL", path, remote)
	}
	c.Upstream = &url.URL{Scheme: u.Scheme, Host: u.Host}
	c.Username = str(raw, "proxy", "username")
	c.Password = str(raw, "proxy", "password")
	c.TLSCert = str(raw, "http", "tls", "certificate")
	c.TLSKey = str(raw, "http", "tls", "key")
	if cas, ok := sub(raw, "http", "tls")["clientcas"].([]any); ok {
		for _, ca := range cas {
			if s, ok := ca.(string); ok && s != "" {
				c.ClientCAs = append(c.ClientCAs, s)
			}
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, fmt.Errorf("registry config %s: http.tls needs both certificate and key", path)
	}
	c.Htpasswd = str(raw, "auth", "htpasswd", "path")
	c.Realm = str(raw, "auth", "htpasswd", "realm")
	if len(sub(raw, "auth")) > 0 && c.Htpasswd == "" {
		return nil, fmt.Errorf("registry config %s: the front checks only auth.htpasswd; other auth methods need --plain", path)
	}
	return c, nil
}

// childConfig derives a child's config: the same document on a unix socket,
// without TLS and auth (the front does both). The proxy child gets a debug
// listener and may not delete:
// registry:2 2.8's proxy schedules every manifest and blob it fetched for
// deletion 7 days later (distribution registry/proxy/proxyregistry.go, no
// setting in 2.8), which during a long outage would make cached tags vanish;
// with deletion off its expiry fails harmlessly (linkedBlobStore.Delete
// answers ErrUnsupported) and the content stays.
func (c *registryConfig) childConfig(kind childKind, sock, debugAddr string) ([]byte, error) {
	doc := deepCopy(c.raw).(map[string]any)
	httpSec := ensure(doc, "http")
	delete(httpSec, "tls")
	delete(httpSec, "letsencrypt")
	delete(doc, "auth")
	httpSec["net"] = "unix"
	httpSec["addr"] = sock
	switch kind {
	case proxyChild:
		if c.childRemote != "" {
			px := ensure(doc, "proxy")
			px["remoteurl"] = c.childRemote
			delete(px, "username")
			delete(px, "password")
		}
		ensure(ensure(doc, "storage"), "delete")["enabled"] = false
		httpSec["debug"] = map[string]any{"addr": debugAddr, "prometheus": map[string]any{"enabled": true, "path": "/metrics"}}
	case localChild:
		delete(httpSec, "debug")
		delete(doc, "proxy")
		// Only the front reaches it with other methods than GET/HEAD: prune
		// and the budget delete manifests through it. This child has no proxy
		// section, so registry:2's 7-day proxy expiry does not run in it.
		ensure(ensure(doc, "storage"), "delete")["enabled"] = true
	}
	// No in-memory blob descriptor cache: prune removes blobs and manifests
	// beneath the running children, and a cached descriptor would make them
	// answer for content that is gone.
	delete(ensure(doc, "storage"), "cache")
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("render %s child config: %w", kind, err)
	}
	return out, nil
}

func sub(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		next, ok := m[k].(map[string]any)
		if !ok {
			return nil
		}
		m = next
	}
	return m
}

func str(m map[string]any, keys ...string) string {
	parent := sub(m, keys[:len(keys)-1]...)
	if parent == nil {
		return ""
	}
	switch v := parent[keys[len(keys)-1]].(type) {
	case string:
		return strings.TrimSpace(v)
	case nil:
		return ""
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

func ensure(m map[string]any, key string) map[string]any {
	if next, ok := m[key].(map[string]any); ok {
		return next
	}
	next := map[string]any{}
	m[key] = next
	return next
}

func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = deepCopy(e)
		}
		return out
	default:
		return v
	}
}
