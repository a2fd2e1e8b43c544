package cache

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/bkcache/bkcache/pkg/front"
	"github.com/bkcache/bkcache/pkg/userfile"
)

// CachesFile is the `-f caches.yaml` of `docker bkcache up`: one entry per
// upstream, since registry:2 proxies a single remote per process.
//
//	caches:
//	- name: bkhub
//	  upstream: https://hub.bktencent.com
//	  port: 5500
//	- name: dockerio
//	  upstream: https://registry-1.docker.io
//	  port: 5501
//	  credentials: /root/.bkcache/dockerio.yaml   # username: and password:, mode 0600
//	  maxSize: 500G                               # budget: least recently served content leaves
type CachesFile struct {
	Caches []CacheEntry `json:"caches"`
}

// CacheEntry is one cache of a CachesFile.
type CacheEntry struct {
	Name        string `json:"name"`
	Upstream    string `json:"upstream"`
	Port        int    `json:"port"`
	DataDir     string `json:"dataDir,omitempty"`
	Bind        string `json:"bind,omitempty"`
	MetricsPort int    `json:"metricsPort,omitempty"`
	Credentials string `json:"credentials,omitempty"`
	// MaxSize is the cache's budget, e.g. 500G (as up --max-size).
	MaxSize string `json:"maxSize,omitempty"`
}

// ParseCachesFile decodes and checks a caches file; unknown keys are errors,
// so a typo does not silently drop a setting.
func ParseCachesFile(data []byte) ([]CacheEntry, error) {
	var f CachesFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("caches file: %w", err)
	}
	if len(f.Caches) == 0 {
		return nil, fmt.Errorf("caches file lists no cache: give a \"caches:\" list of name, upstream, port")
	}
	names, ports := map[string]bool{}, map[int]string{}
	for i, c := range f.Caches {
		if c.Name == "" || c.Upstream == "" || c.Port == 0 {
			return nil, fmt.Errorf("caches file: entry %d needs name, upstream and port", i+1)
		}
		if names[c.Name] {
			return nil, fmt.Errorf("caches file: name %s appears twice", c.Name)
		}
		names[c.Name] = true
		if c.MaxSize != "" {
			if _, err := front.ParseSize(c.MaxSize); err != nil {
				return nil, fmt.Errorf("caches file: cache %s: maxSize: %w", c.Name, err)
			}
		}
		if other, dup := ports[c.Port]; dup {
			return nil, fmt.Errorf("caches file: port %d is given to both %s and %s", c.Port, other, c.Name)
		}
		ports[c.Port] = c.Name
	}
	return f.Caches, nil
}

// ReadCredentials reads `username:` and `password:` from a credentials file,
// refusing one that other users can read.
func ReadCredentials(ctx context.Context, path string) (username, password string, err error) {
	if err := ctx.Err(); err != nil {
		return "", "", err
	}
	// A symlink's own mode says nothing: judge, and name, the file it points to.
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", "", fmt.Errorf("credentials file: %w", err)
	}
	info, err := os.Stat(real)
	if err != nil {
		return "", "", fmt.Errorf("credentials file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return "", "", fmt.Errorf("credentials file %s is not a regular file", path)
	}
	if info.Mode().Perm()&0o077 != 0 {
		via := ""
		if real != path {
			via = fmt.Sprintf(" (%s links to it)", path)
		}
		return "", "", fmt.Errorf("credentials file %s%s is readable by other users (mode %04o); run chmod 600 %s", real, via, info.Mode().Perm(), real)
	}
	data, err := userfile.Read(path)
	if err != nil {
		return "", "", fmt.Errorf("credentials file: %w", err)
	}
	var c struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return "", "", fmt.Errorf("credentials file %s: %w (want username: and password:)", path, err)
	}
	if c.Username == "" || c.Password == "" {
		return "", "", fmt.Errorf("credentials file %s needs both username: and password:", path)
	}
	return c.Username, strings.TrimRight(c.Password, "\n"), nil
}
