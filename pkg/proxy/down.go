package proxy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moby/moby/client"
)

// DownOptions tune Down.
type DownOptions struct {
	// Purge also deletes the cache's config file and data directory.
	Purge bool
	// Confirm is asked before anything is purged, with the paths; nil means yes.
	Confirm func(paths []string) (bool, error)
	// Defaults names the config and data paths to purge when no container is left.
	Defaults Spec
}

// DownResult says what Down did.
type DownResult struct {
	Name      string   `json:"name"`
	Container string   `json:"container"`
	Removed   bool     `json:"removed"`
	Purged    []string `json:"purged,omitempty"`
}

// Down stops and removes a cache's container; with Purge also its config and
// data. A cache that is already gone is not an error: Down is idempotent.
func Down(ctx context.Context, eng Engine, name string, opts DownOptions) (DownResult, error) {
	cname := ContainerName(name)
	res := DownResult{Name: name, Container: cname}
	c, exists, err := inspect(ctx, eng, cname)
	if err != nil {
		return res, err
	}
	defaults := opts.Defaults
	defaults.Name = name
	if defaults.DataDir == "" || defaults.DataDir == DefaultDataDir(DefaultName) {
		defaults.DataDir = DefaultDataDir(name)
	}
	defaults = defaults.WithDefaults()
	paths := []string{defaults.ConfigPath(), defaults.DataDir}
	if exists {
		if src := mountSource(c, containerConfigPath); src != "" {
			paths[0] = src
		}
		if src := mountSource(c, containerDataDir); src != "" {
			paths[1] = src
		}
	}
	front := defaults.FrontPath()
	if exists {
		if src := mountSource(c, containerFrontPath); src != "" {
			front = src
		}
	}
	// The previous config Up kept and the front's binary, if any.
	paths = append(paths, paths[0]+".bak", front)
	if opts.Purge {
		for _, p := range paths {
			if !filepath.IsAbs(p) || filepath.Clean(p) == "/" || filepath.Dir(filepath.Clean(p)) == "/" {
				return res, fmt.Errorf("refusing to purge %q for cache %s: not a cache path; remove it by hand", p, name)
			}
		}
		if opts.Confirm != nil {
			ok, err := opts.Confirm(paths)
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
	if opts.Purge {
		for _, p := range paths {
			if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err := os.RemoveAll(p); err != nil {
				return res, fmt.Errorf("purge %s of cache %s: %w; run as root (sudo)", p, name, err)
			}
			res.Purged = append(res.Purged, p)
		}
	}
	return res, nil
}

// Names lists the caches bkcache manages on this engine, by label.
func Names(ctx context.Context, eng Engine) ([]string, error) {
	list, err := eng.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", LabelManaged+"=true")})
	if err != nil {
		return nil, engineError(eng, err)
	}
	var names []string
	for _, c := range list.Items {
		if n := c.Labels[LabelName]; n != "" {
			names = append(names, n)
		}
	}
	sortStrings(names)
	return names, nil
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}
