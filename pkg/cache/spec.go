// Package proxy runs the real registry:2 as a pull-through cache in a container:
// its Spec, the registry config it renders, and its lifecycle on a Docker engine.
package cache

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/bkcache/bkcache/pkg/netaddr"
)

// Defaults from the BlueKing guide ("缓存容器镜像", method 1).
const (
	DefaultName      = "bkhub"
	DefaultUpstream  = "https://hub.bktencent.com"
	DefaultPort      = 5500
	DefaultConfigDir = "/etc/docker/registry"
	DefaultImage     = "hub.bktencent.com/library/registry:2"
	DefaultRestart   = "always"
	DefaultNetwork   = NetworkBridge
	DefaultLayout    = LayoutFront

	NetworkBridge = "bridge"
	NetworkHost   = "host"

	// LayoutFront runs bkcache's front as the container's entrypoint, with
	// registry:2 as its child; LayoutPlain is the guide's registry:2 alone.
	LayoutFront = "front"
	LayoutPlain = "plain"

	// metricsPortOffset places the debug listener of a host-network
	// registry:2 alone (--plain) away from the ports neighbouring caches use
	// (5500, 5501, ...). A front cache has no metrics listener unless
	// --metrics-port asks for one: its figures are on its own port.
	metricsPortOffset = 10000
)

// Paths inside the container; the same ones the guide's `docker run` mounts.
const (
	containerConfigPath   = "/etc/docker/registry/config.yml"
	containerDataDir      = "/var/lib/registry"
	containerTLSCertPath  = "/etc/docker/registry/tls/cert.pem"
	containerTLSKeyPath   = "/etc/docker/registry/tls/key.pem"
	containerHtpasswdPath = "/etc/docker/registry/auth/htpasswd"
	containerPort         = 5000
	containerDebugPort    = 5001
)

// Spec says what one cache is. Everything but Password is public and is
// stored on the container as a label; Password goes only into the 0600 config file.
type Spec struct {
	Name        string `json:"name"`
	Upstream    string `json:"upstream"`
	Port        int    `json:"port"`
	Bind        string `json:"bind,omitempty"`
	Network     string `json:"network"`
	ConfigDir   string `json:"configDir"`
	DataDir     string `json:"dataDir"`
	Image       string `json:"image"`
	Restart     string `json:"restart"`
	MetricsPort int    `json:"metricsPort,omitempty"`
	TLSCert     string `json:"tlsCert,omitempty"`
	TLSKey      string `json:"tlsKey,omitempty"`
	Htpasswd    string `json:"htpasswd,omitempty"`
	Username    string `json:"username,omitempty"`
	Password    string `json:"-"`
	// Layout is front (default) or plain (--plain: the guide's registry:2 alone).
	Layout string `json:"layout"`
	// UpstreamRate caps the front's upstream traffic, bytes/s; 0 is unlimited.
	UpstreamRate int64 `json:"upstreamRate,omitempty"`
	// MaxSize is the store's budget in bytes (the front evicts the least
	// recently served content to stay under it); 0 is none.
	MaxSize int64 `json:"maxSize,omitempty"`
}

// ContainerName is the guide's container name for a cache.
func ContainerName(name string) string { return "proxy-" + name }

// DefaultDataDir is the guide's data directory for a cache.
func DefaultDataDir(name string) string { return "/var/lib/registry-" + name }

// ContainerName of this cache.
func (s Spec) ContainerName() string { return ContainerName(s.Name) }

// ConfigPath is the registry config file on the host.
func (s Spec) ConfigPath() string { return filepath.Join(s.ConfigDir, s.Name+".yaml") }

// WithDefaults fills every unset field with the guide's value.
func (s Spec) WithDefaults() Spec {
	if s.Name == "" {
		s.Name = DefaultName
	}
	if s.Upstream == "" {
		s.Upstream = DefaultUpstream
	}
	if s.Port == 0 {
		s.Port = DefaultPort
	}
	if s.Network == "" {
		s.Network = DefaultNetwork
	}
	if s.ConfigDir == "" {
		s.ConfigDir = DefaultConfigDir
	}
	if s.DataDir == "" {
		s.DataDir = DefaultDataDir(s.Name)
	}
	if s.Image == "" {
		s.Image = DefaultImage
	}
	if s.Restart == "" {
		s.Restart = DefaultRestart
	}
	if s.Layout == "" {
		s.Layout = DefaultLayout
	}
	if s.Layout == LayoutPlain && s.Network == NetworkHost && s.MetricsPort == 0 && s.Port+metricsPortOffset <= 65535 {
		s.MetricsPort = s.Port + metricsPortOffset
	}
	s.Upstream = strings.TrimRight(s.Upstream, "/")
	return s
}

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// Validate reports the first thing wrong with a defaulted Spec, naming the flag to fix.
func (s Spec) Validate() error {
	if !validName.MatchString(s.Name) {
		return fmt.Errorf("invalid cache name %q: use lower-case letters, digits, '.', '_' or '-' (--name)", s.Name)
	}
	if err := validateUpstream(s.Upstream); err != nil {
		return err
	}
	if s.Port < 1 || s.Port > 65535 {
		return fmt.Errorf("invalid port %d for cache %s: use 1-65535 (--port)", s.Port, s.Name)
	}
	if s.MetricsPort < 0 || s.MetricsPort > 65535 || (s.MetricsPort != 0 && s.MetricsPort == s.Port) {
		return fmt.Errorf("invalid metrics port %d for cache %s: use 1-65535, not the cache port (--metrics-port)", s.MetricsPort, s.Name)
	}
	if s.MaxSize < 0 || (s.MaxSize > 0 && s.Layout == LayoutPlain) {
		return fmt.Errorf("cache %s: a budget (--max-size, maxSize:) needs the front layout and a positive size; registry:2 alone (--plain) has none", s.Name)
	}
	if s.Bind != "" && net.ParseIP(s.Bind) == nil {
		return fmt.Errorf("invalid bind address %q for cache %s: give an IP address such as 0.0.0.0 or 10.0.0.5 (--bind)", s.Bind, s.Name)
	}
	switch s.Network {
	case NetworkBridge, NetworkHost:
	default:
		return fmt.Errorf("invalid network %q for cache %s: use bridge or host (--network)", s.Network, s.Name)
	}
	if s.Network == NetworkBridge && netaddr.IsLoopback(s.UpstreamHost()) {
		return fmt.Errorf("cache %s: upstream %s is on this host's loopback, which a bridge-network container cannot reach; pass --network host", s.Name, s.Upstream)
	}
	switch s.Layout {
	case LayoutFront, LayoutPlain:
	default:
		return fmt.Errorf("invalid layout %q for cache %s: use front or plain (--plain)", s.Layout, s.Name)
	}
	if s.UpstreamRate < 0 {
		return fmt.Errorf("invalid upstream rate %d for cache %s: give bytes per second such as 20M, or 0 for unlimited (--upstream-rate)", s.UpstreamRate, s.Name)
	}
	if s.UpstreamRate > 0 && s.Layout == LayoutPlain {
		return fmt.Errorf("cache %s: --upstream-rate needs the front; registry:2 alone (--plain) cannot cap its upstream traffic", s.Name)
	}
	switch s.Restart {
	case "no", "always", "unless-stopped", "on-failure":
	default:
		return fmt.Errorf("invalid restart policy %q for cache %s: use no, always, unless-stopped or on-failure (--restart)", s.Restart, s.Name)
	}
	if !filepath.IsAbs(s.ConfigDir) || !filepath.IsAbs(s.DataDir) {
		return fmt.Errorf("config and data directories of cache %s must be absolute paths (got %q, %q)", s.Name, s.ConfigDir, s.DataDir)
	}
	if (s.TLSCert == "") != (s.TLSKey == "") {
		return fmt.Errorf("cache %s: --tls-cert and --tls-key go together", s.Name)
	}
	for _, p := range []string{s.TLSCert, s.TLSKey, s.Htpasswd} {
		if p != "" && !filepath.IsAbs(p) {
			return fmt.Errorf("cache %s: %q must be an absolute path", s.Name, p)
		}
	}
	if s.Password != "" && s.Username == "" {
		return fmt.Errorf("cache %s: a password needs --username", s.Name)
	}
	if s.Username != "" && s.Password == "" {
		return fmt.Errorf("cache %s: --username %s needs a password: pipe it to --password-stdin", s.Name, s.Username)
	}
	return nil
}

func validateUpstream(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("invalid upstream URL %q: give a registry base URL such as https://hub.bktencent.com (--upstream)", raw)
	}
	if u.Path != "" && u.Path != "/" {
		return fmt.Errorf("invalid upstream URL %q: registry:2 ignores a path in proxy.remoteurl; give only scheme and host (--upstream)", raw)
	}
	if u.User != nil {
		return fmt.Errorf("invalid upstream URL: put credentials in --username/--password-stdin, not in the URL (--upstream)")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("invalid upstream URL %q: remove the query or fragment (--upstream)", raw)
	}
	return nil
}

// UpstreamHost is the registry host the cache proxies, e.g. hub.bktencent.com.
func (s Spec) UpstreamHost() string {
	u, err := url.Parse(s.Upstream)
	if err != nil {
		return s.Upstream
	}
	return u.Host
}

// LocalAddress is where a client on this host reaches the cache.
func (s Spec) LocalAddress() string {
	host := "127.0.0.1"
	if s.Bind != "" && s.Bind != "0.0.0.0" && s.Bind != "::" {
		host = s.Bind
	}
	return net.JoinHostPort(host, strconv.Itoa(s.Port))
}

// Scheme is how clients speak to the cache.
func (s Spec) Scheme() string {
	if s.TLSCert != "" {
		return "https"
	}
	return "http"
}
