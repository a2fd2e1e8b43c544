package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"sigs.k8s.io/yaml"
)

// UpstreamCredentials reads the upstream user and password a cache's config
// file holds (the file is 0600 and root's; so is this call).
func UpstreamCredentials(spec Spec) (username, password string, err error) {
	data, err := os.ReadFile(spec.ConfigPath())
	if err != nil {
		return "", "", fmt.Errorf("read credentials of cache %s: %w; run as root (sudo)", spec.Name, err)
	}
	var cfg struct {
		Proxy struct {
			Username string `json:"username"`
			Password string `json:"password"`
		} `json:"proxy"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return "", "", fmt.Errorf("read credentials of cache %s from %s: %w", spec.Name, spec.ConfigPath(), err)
	}
	return cfg.Proxy.Username, cfg.Proxy.Password, nil
}

// StorageWriter is a plain registry:2 (no proxy) serving a cache's data dir on
// loopback, so content can be written into the cache with distribution's own
// storage code: the storage is built for several registries sharing it.
type StorageWriter struct {
	Addr      string
	container string
	dir       string
	eng       Engine
}

// StartStorageWriter runs the writer beside the cache, from the cache's image,
// on a free loopback port of this host.
func StartStorageWriter(ctx context.Context, eng Engine, cache Cache) (*StorageWriter, error) {
	if cache.DataDir == "" {
		return nil, fmt.Errorf("cache %s has no data directory mounted; warm it through the proxy instead", cache.Spec.Name)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir, err := os.MkdirTemp("", "bkcache-writer-")
	if err != nil {
		return nil, err
	}
	secret, err := NewSecret()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cfg := fmt.Sprintf("version: 0.1\nlog: {fields: {service: registry, cache: %s-writer}}\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}, redirect: {disable: true}}\nhttp: {addr: %q, secret: %s}\n",
		cache.Spec.Name, containerDataDir, addr, secret)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := writeFileAtomic(cfgPath, []byte(cfg), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	w := &StorageWriter{Addr: addr, container: ContainerName(cache.Spec.Name) + "-writer", dir: dir, eng: eng}
	// A writer left by an interrupted warm is replaced.
	eng.ContainerRemove(ctx, w.container, client.ContainerRemoveOptions{Force: true}) //nolint:errcheck
	_, err = eng.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: w.container,
		Config: &container.Config{Image: cache.Spec.Image, Labels: map[string]string{
			LabelName: cache.Spec.Name, "io.bkcache.role": "storage-writer",
		}},
		HostConfig: &container.HostConfig{
			NetworkMode: container.NetworkMode(NetworkHost),
			Binds:       []string{cfgPath + ":" + containerConfigPath + ":ro", cache.DataDir + ":" + containerDataDir},
		},
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("create storage writer %s: %w", w.container, engineError(eng, err))
	}
	if _, err := eng.ContainerStart(ctx, w.container, client.ContainerStartOptions{}); err != nil {
		w.Stop(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("start storage writer %s: %w", w.container, err)
	}
	// Named so its container is w.container: waitReady watches it by that name.
	spec := Spec{Name: cache.Spec.Name + "-writer", Port: port, Network: NetworkHost}
	if err := waitReady(ctx, eng, spec, 30*time.Second, io.Discard); err != nil {
		w.Stop(context.WithoutCancel(ctx))
		return nil, err
	}
	return w, nil
}

// Stop removes the writer container and its config.
func (w *StorageWriter) Stop(ctx context.Context) {
	w.eng.ContainerRemove(ctx, w.container, client.ContainerRemoveOptions{Force: true}) //nolint:errcheck
	os.RemoveAll(w.dir)
}
