package cache

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"sigs.k8s.io/yaml"

	"github.com/bkcache/bkcache/pkg/atomicfile"
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

// StorageWriter is a plain registry:2 (no proxy) on a cache's data dir, so
// content can be written into the cache with distribution's own storage code:
// the storage is built for several registries sharing it. Nothing but this
// process can reach it: it listens on a unix socket in a private (0700)
// directory, its container has no network at all, deletes are off, and Stop
// removes it on every exit path (also after an interrupt).
type StorageWriter struct {
	// Addr is the registry name to push to; only Transport reaches it.
	Addr      string
	socket    string
	container string
	dir       string
	eng       Engine
}

const (
	writerRunDir = "/run/bkcache-writer"
	writerSocket = "registry.sock"
	// writerAddr names the writer in references; Transport ignores it and dials the socket.
	writerAddr = "localhost"
)

// StartStorageWriter runs the writer beside the cache, from the cache's image.
func StartStorageWriter(ctx context.Context, eng Engine, cache Cache) (*StorageWriter, error) {
	if cache.DataDir == "" {
		return nil, fmt.Errorf("cache %s has no data directory mounted; warm it through the proxy instead", cache.Spec.Name)
	}
	dir, err := os.MkdirTemp("", "bkcache-writer-") // 0700: the socket inside is root's alone
	if err != nil {
		return nil, fmt.Errorf("storage writer for cache %s: %w", cache.Spec.Name, err)
	}
	secret, err := NewSecret()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cfg := fmt.Sprintf("version: 0.1\nlog: {fields: {service: registry, cache: %s-writer}}\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: false}, redirect: {disable: true}}\nhttp: {net: unix, addr: %s, secret: %s}\n",
		cache.Spec.Name, containerDataDir, writerRunDir+"/"+writerSocket, secret)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := atomicfile.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	w := &StorageWriter{Addr: writerAddr, socket: filepath.Join(dir, writerSocket), container: ContainerName(cache.Spec.Name) + "-writer", dir: dir, eng: eng}
	// A writer left by an earlier run that was killed outright is replaced.
	eng.ContainerRemove(ctx, w.container, client.ContainerRemoveOptions{Force: true}) //nolint:errcheck
	_, err = eng.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: w.container,
		Config: &container.Config{Image: cache.Spec.Image, Labels: map[string]string{
			LabelName: cache.Spec.Name, "io.bkcache.role": "storage-writer",
		}},
		HostConfig: &container.HostConfig{
			NetworkMode: "none",
			Binds: []string{cfgPath + ":" + containerConfigPath + ":ro", dir + ":" + writerRunDir,
				cache.DataDir + ":" + containerDataDir},
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
	if err := w.waitReady(ctx, 30*time.Second); err != nil {
		w.Stop(context.WithoutCancel(ctx))
		return nil, err
	}
	return w, nil
}

// Transport reaches the writer through its socket, whatever host a request names.
func (w *StorageWriter) Transport() http.RoundTripper {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", w.socket)
		},
		MaxIdleConnsPerHost: 16,
	}
}

func (w *StorageWriter) waitReady(ctx context.Context, wait time.Duration) error {
	httpc := &http.Client{Transport: w.Transport(), Timeout: 2 * time.Second}
	deadline := time.Now().Add(wait)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+writerAddr+"/v2/", nil)
		resp, err := httpc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /v2/ answered %s", resp.Status)
		}
		if c, ok, ierr := inspect(ctx, w.eng, w.container); ierr == nil && (!ok || c.State == nil || !c.State.Running && c.State.Status != container.StateCreated) {
			return fmt.Errorf("storage writer %s stopped while starting; last log lines:\n%s", w.container, tailLogs(ctx, w.eng, w.container, 20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("storage writer %s did not answer within %s (%v); last log lines:\n%s", w.container, wait, err, tailLogs(ctx, w.eng, w.container, 20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop removes the writer container and its private directory.
func (w *StorageWriter) Stop(ctx context.Context) {
	w.eng.ContainerRemove(ctx, w.container, client.ContainerRemoveOptions{Force: true}) //nolint:errcheck
	os.RemoveAll(w.dir)
}
