package cache

import (
	"context"
	"fmt"
)

// Cache is what a command needs to know of a running bkcache cache.
type Cache struct {
	Spec    Spec
	DataDir string
	Running bool
}

// Lookup finds a bkcache cache by name on this engine.
func Lookup(ctx context.Context, eng Engine, name string) (Cache, error) {
	if err := ValidateName(name); err != nil {
		return Cache{}, err
	}
	c, ok, err := inspect(ctx, eng, ContainerName(name))
	if err != nil {
		return Cache{}, err
	}
	if !ok {
		return Cache{}, notFound(name)
	}
	spec, ok := specFromLabels(c.Config.Labels)
	if !ok {
		return Cache{}, fmt.Errorf("container %s was not made by bkcache; run \"docker bkcache up --name %s\" to adopt it first", ContainerName(name), name)
	}
	return Cache{Spec: spec, DataDir: mountSource(c, containerDataDir), Running: c.State != nil && c.State.Running}, nil
}

// All returns every bkcache cache on this engine (strangers left out; see Names).
func All(ctx context.Context, eng Engine) ([]Cache, error) {
	names, _, err := Names(ctx, eng)
	if err != nil {
		return nil, err
	}
	var out []Cache
	for _, n := range names {
		c, err := Lookup(ctx, eng, n)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
