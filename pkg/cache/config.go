package cache

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"

	"sigs.k8s.io/yaml"
)

// configHeader marks a config file bkcache wrote, so its http secret is kept.
const configHeader = "# Written by docker bkcache; changes are overwritten by `docker bkcache up`.\n"

// registryConfig is the subset of the distribution 2.8 configuration bkcache writes.
type registryConfig struct {
	Version string        `json:"version"`
	Log     logConfig     `json:"log"`
	Storage storageConfig `json:"storage"`
	HTTP    httpConfig    `json:"http"`
	Auth    *authConfig   `json:"auth,omitempty"`
	Health  healthConfig  `json:"health"`
	Proxy   proxyConfig   `json:"proxy"`
}

type logConfig struct {
	Fields map[string]string `json:"fields"`
}

type storageConfig struct {
	Cache      map[string]string `json:"cache"`
	Filesystem map[string]string `json:"filesystem"`
	Delete     map[string]bool   `json:"delete"`
	Redirect   map[string]bool   `json:"redirect"`
}

type httpConfig struct {
	Addr    string              `json:"addr"`
	Secret  string              `json:"secret"`
	Headers map[string][]string `json:"headers"`
	TLS     *tlsConfig          `json:"tls,omitempty"`
	Debug   *debugConfig        `json:"debug,omitempty"`
}

type tlsConfig struct {
	Certificate string `json:"certificate"`
	Key         string `json:"key"`
}

type debugConfig struct {
	Addr       string           `json:"addr"`
	Prometheus prometheusConfig `json:"prometheus"`
}

type prometheusConfig struct {
	Enabled bool   `json:"enabled"`
	Path    string `json:"path"`
}

type authConfig struct {
	Htpasswd map[string]string `json:"htpasswd"`
}

type healthConfig struct {
	StorageDriver map[string]any `json:"storagedriver"`
}

type proxyConfig struct {
	RemoteURL string `json:"remoteurl"`
	Username  string `json:"username,omitempty"`
	Password  string `json:"password,omitempty"`
}

// RenderConfig renders the registry:2 config file for spec with the given http secret.
// It carries what the guide's config does; registry:2 alone (--plain) gets a
// debug listener with Prometheus metrics, its status's only source (the
// front gives its registry child one of its own and serves the figures on
// the cache's port).
func RenderConfig(spec Spec, httpSecret string) ([]byte, error) {
	if httpSecret == "" {
		return nil, fmt.Errorf("render config for cache %s: empty http secret", spec.Name)
	}
	addr, debugAddr := ":"+strconv.Itoa(containerPort), ":"+strconv.Itoa(containerDebugPort)
	if spec.Layout != LayoutPlain {
		debugAddr = ""
	}
	if spec.Network == NetworkHost {
		addr = net.JoinHostPort(spec.Bind, strconv.Itoa(spec.Port))
		debugAddr = ""
		if spec.MetricsPort != 0 && spec.Layout == LayoutPlain {
			// Metrics stay on loopback: they are for `status`, not for the network.
			debugAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(spec.MetricsPort))
		}
	}
	cfg := registryConfig{
		Version: "0.1",
		Log:     logConfig{Fields: map[string]string{"service": "registry", "cache": spec.Name}},
		Storage: storageConfig{
			Cache:      map[string]string{"blobdescriptor": "inmemory"},
			Filesystem: map[string]string{"rootdirectory": containerDataDir},
			Delete:     map[string]bool{"enabled": true},
			Redirect:   map[string]bool{"disable": true},
		},
		HTTP: httpConfig{
			Addr:    addr,
			Secret:  httpSecret,
			Headers: map[string][]string{"X-Content-Type-Options": {"nosniff"}},
		},
		Health: healthConfig{StorageDriver: map[string]any{"enabled": true, "interval": "10s", "threshold": 3}},
		Proxy:  proxyConfig{RemoteURL: spec.Upstream, Username: spec.Username, Password: spec.Password},
	}
	if debugAddr != "" {
		cfg.HTTP.Debug = &debugConfig{Addr: debugAddr, Prometheus: prometheusConfig{Enabled: true, Path: "/metrics"}}
	}
	if spec.TLSCert != "" {
		cfg.HTTP.TLS = &tlsConfig{Certificate: containerTLSCertPath, Key: containerTLSKeyPath}
	}
	if spec.Htpasswd != "" {
		cfg.Auth = &authConfig{Htpasswd: map[string]string{"realm": "bkcache-" + spec.Name, "path": containerHtpasswdPath}}
	}
	body, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("render config for cache %s: %w", spec.Name, err)
	}
	return append([]byte(configHeader), body...), nil
}

// KeptSecret returns the http secret of a config file bkcache wrote before, or ""
// when there is none to keep (no file, or a file written by the guide's script,
// whose secret is derived from name and port and so guessable).
func KeptSecret(existing []byte) string {
	if !bytes.HasPrefix(existing, []byte(configHeader)) {
		return ""
	}
	var cfg struct {
		HTTP struct {
			Secret string `json:"secret"`
		} `json:"http"`
	}
	if err := yaml.Unmarshal(existing, &cfg); err != nil {
		return ""
	}
	return cfg.HTTP.Secret
}

// NewSecret returns a random http secret.
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate http secret: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// listenPort reads the port of http.addr from a registry config file, 0 if unknown.
func listenPort(configPath string) int {
	if configPath == "" {
		return 0
	}
	data, err := os.ReadFile(configPath)
	if err != nil {
		return 0
	}
	var cfg struct {
		HTTP struct {
			Addr string `json:"addr"`
		} `json:"http"`
	}
	if yaml.Unmarshal(data, &cfg) != nil {
		return 0
	}
	_, port, err := net.SplitHostPort(cfg.HTTP.Addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(port)
	return n
}
