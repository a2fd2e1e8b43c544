package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"sigs.k8s.io/yaml"
)

// DownOptions tune Down.
type DownOptions struct {
	// Purge also deletes the cache's config file and data directory.
	Purge bool
	// Confirm is asked before anything is purged, with the paths; nil means yes.
	Confirm func(paths []string) (bool, error)
	// Defaults names the config and data paths to purge when no container is left.
	Defaults Spec
	// Progress hears when Down waits for another command on the same cache.
	Progress io.Writer
}

// DownResult says what Down did.
type DownResult struct {
	Name      string   `json:"name"`
	Container string   `json:"container"`
	Removed   bool     `json:"removed"`
	Purged    []string `json:"purged,omitempty"`
	// Left is what --purge found beside the cache's own files and did not touch.
	Left []string `json:"left,omitempty"`
}

// Down stops and removes a cache's container; with Purge also its config and
// data. A cache that is already gone is not an error: Down is idempotent.
// Down acts only on what it can recognise as a cache's: a container named
// proxy-NAME that bkcache made or the guide's script ran, files that are a
// registry config or the front's binary, and in the data directory only
// registry:2's storage (see purgeDataDir); everything else is left and named.
func Down(ctx context.Context, eng Engine, name string, opts DownOptions) (DownResult, error) {
	if err := ValidateName(name); err != nil {
		return DownResult{Name: name}, err
	}
	cname := ContainerName(name)
	res := DownResult{Name: name, Container: cname}
	defaults := opts.Defaults
	defaults.Name = name
	if defaults.DataDir == "" || defaults.DataDir == DefaultDataDir(DefaultName) {
		defaults.DataDir = DefaultDataDir(name)
	}
	defaults = defaults.WithDefaults()
	c, exists, err := inspect(ctx, eng, cname)
	if err != nil {
		return res, err
	}
	configDir := defaults.ConfigDir
	if exists {
		if why := strangerContainer(&c, name); why != "" {
			return res, fmt.Errorf("container %s (image %s) is not a cache: %s; bkcache removes only caches it made or the guide's registry:2, so remove it yourself (docker rm -f %s) if you mean to", cname, containerImage(&c), why, cname)
		}
		if src := mountSource(c, containerConfigPath); src != "" {
			configDir = filepath.Dir(src)
		}
	}
	if _, err := os.Stat(configDir); err == nil { // no config dir: no cache files to guard, and none to create
		unlock, err := lockCache(ctx, configDir, name, opts.Progress)
		if err != nil {
			return res, err
		}
		defer unlock()
	}

	configPath, dataDir, front := defaults.ConfigPath(), defaults.DataDir, defaults.FrontPath()
	recordSpec := defaults
	recordSpec.ConfigDir = configDir
	if rec := recordedDataDir(recordSpec); rec != "" {
		dataDir = rec // a plain down removed the container: the record says where
	}
	if exists {
		if src := mountSource(c, containerConfigPath); src != "" {
			configPath = src
		}
		if src := mountSource(c, containerDataDir); src != "" {
			dataDir = src
		}
		if src := mountSource(c, containerFrontPath); src != "" {
			front = src
		}
	}
	files := []string{configPath, configPath + ".bak", front}
	if opts.Purge {
		if err := CheckDataDir(dataDir, true); err != nil {
			return res, fmt.Errorf("refusing to purge cache %s: %w", name, err)
		}
		if opts.Confirm != nil {
			ok, err := opts.Confirm(append(files[:1:1], dataDir))
			if err != nil {
				return res, err
			}
			if !ok {
				return res, fmt.Errorf("purge of cache %s cancelled; nothing was removed", name)
			}
		}
	}
	if exists {
		if _, err := eng.ContainerRemove(ctx, cname, client.ContainerRemoveOptions{Force: true}); err != nil {
			return res, fmt.Errorf("remove container %s: %w", cname, engineError(eng, err))
		}
		res.Removed = true
	}
	if !opts.Purge {
		if exists {
			if _, err := os.Stat(configDir); err == nil {
				// The container held the only record of a --data-dir: keep one for down --purge.
				if err := recordDataDir(recordSpec, dataDir); err != nil && opts.Progress != nil {
					fmt.Fprintf(opts.Progress, "warning: %v\n", err)
				}
			}
		}
		return res, nil
	}
	err = purge(&res, name, files, dataDir, recordSpec)
	return res, err
}

// purge deletes the cache's own files and storage, and last the record of its
// data directory (an interrupted purge still finds it next time); what is not
// the cache's own is listed as left.
func purge(res *DownResult, name string, files []string, dataDir string, recordSpec Spec) error {
	for _, p := range files {
		switch ours, err := cacheFile(p); {
		case err != nil:
			return err
		case ours:
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("purge %s of cache %s: %w; run as root (sudo)", p, name, err)
			}
			res.Purged = append(res.Purged, p)
		default:
			if _, err := os.Lstat(p); err == nil {
				res.Left = append(res.Left, p)
			}
		}
	}
	removed, left, err := purgeDataDir(dataDir)
	res.Purged = append(res.Purged, removed...)
	res.Left = append(res.Left, left...)
	if err != nil {
		return err
	}
	if p := recordSpec.DataDirRecord(); isRecord(p) {
		if err := os.Remove(p); err == nil {
			res.Purged = append(res.Purged, p)
		}
	}
	return nil
}

// strangerContainer says why the container named for cache name is not one
// Down may remove, or "".
func strangerContainer(c *container.InspectResponse, name string) string {
	var labels map[string]string
	if c.Config != nil {
		labels = c.Config.Labels
	}
	if _, managed := labels[LabelManaged]; managed {
		// Inherited image labels cannot be told apart here without the image;
		// the name and spec checks still hold.
		return notOurs(ContainerName(name), labels, nil)
	}
	if ok, why := guideRegistry(c); !ok {
		return why
	}
	return ""
}

// cacheFile says whether p is one of a cache's own files: a registry config
// (ours or the guide's) or the front's binary. A missing file is not ours.
func cacheFile(p string) (bool, error) {
	info, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("purge: %w", err)
	}
	if !info.Mode().IsRegular() {
		return false, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return false, fmt.Errorf("purge: %w", err)
	}
	defer f.Close()
	head := make([]byte, 64<<10)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if bytes.HasPrefix(head, []byte("\x7fELF")) {
		return strings.HasSuffix(p, ".front"), nil
	}
	var cfg struct {
		Version any            `json:"version"`
		Storage map[string]any `json:"storage"`
	}
	if info.Size() > int64(len(head)) || yaml.Unmarshal(head, &cfg) != nil {
		return false, nil
	}
	return cfg.Version != nil && cfg.Storage != nil, nil
}
