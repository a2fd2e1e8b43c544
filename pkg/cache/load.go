package cache

import (
	"context"
	"io"

	"github.com/bkcache/bkcache/pkg/transfer"
)

// LoadIntoCache writes an archive made by save into the storage of the cache
// name on this engine, through a storage writer only this process can reach,
// holding the cache's lock so no up or down of the cache runs meanwhile.
// Repository paths stay as saved: the cache serves what its upstream names.
func LoadIntoCache(ctx context.Context, eng Engine, name, archive string, opts transfer.LoadOptions, progress io.Writer) (transfer.Report, error) {
	c, err := Lookup(ctx, eng, name)
	if err != nil {
		return transfer.Report{}, err
	}
	unlock, err := lockCache(ctx, c.Spec.ConfigDir, c.Spec.Name, progress)
	if err != nil {
		return transfer.Report{}, err
	}
	defer unlock()
	writer, err := StartStorageWriter(ctx, eng, c)
	if err != nil {
		return transfer.Report{}, err
	}
	defer writer.Stop(context.WithoutCancel(ctx))
	opts.To, opts.Transport, opts.Insecure, opts.Prefix = writer.Addr, writer.Transport(), true, ""
	opts.ShownAs = c.Spec.LocalAddress() // where nodes will pull it, not the writer's private address
	return transfer.Load(ctx, archive, opts)
}
