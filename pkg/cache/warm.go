package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bkcache/bkcache/pkg/transfer"
)

// Ways Warm fills a cache (WarmResult.Mode).
const (
	// WarmFront pulls everything through the cache's front, which fetches
	// each blob from the upstream once and stores it.
	WarmFront = "front"
	// WarmStorage (plain layout, data dir on this host) fetches each blob
	// once and writes it with registry:2's own storage code.
	WarmStorage = "storage"
	// WarmProxy pulls everything through the cache as a node would.
	WarmProxy = "proxy"
)

// WarmOptions tune Warm.
type WarmOptions struct {
	// Cache is a cache NAME on this engine, or HOST:PORT of a cache
	// elsewhere; "" gives each image to the cache whose upstream serves it.
	Cache string
	// Platforms picks the images of an index the nodes pull; empty: all.
	Platforms []v1.Platform
	// IntoStorage insists on writing into the cache's storage on this host;
	// ThroughProxy insists on pulling through the cache as nodes do. For a
	// front cache both mean the same: its front stores what it fetches.
	IntoStorage, ThroughProxy bool
	// Jobs is how many blobs are fetched at once.
	Jobs int
	// Progress gets one line per image; Meter its bytes. Both optional.
	Progress io.Writer
	Meter    *transfer.Meter
}

// WarmResult is the warm of one cache.
type WarmResult struct {
	Cache string `json:"cache"`
	transfer.WarmReport
}

// WarmOutcome is the warm of a list: one result per cache, and every image
// that failed, including those no cache serves.
type WarmOutcome struct {
	Caches []WarmResult           `json:"caches"`
	Failed []transfer.ImageResult `json:"failed,omitempty"`
}

// Warm fills caches from a list of images before a deployment, so that the
// first node finds everything stored. Images go to the cache whose upstream
// serves their registry (or opts.Cache); what a cache holds is skipped. A
// front cache is warmed through its front (each blob crosses the slow link
// once, -j at a time); a plain cache into its storage through a temporary
// storage writer, or through the cache. It returns an error naming how many
// images failed; the outcome lists them.
func Warm(ctx context.Context, eng Engine, entries []transfer.Entry, opts WarmOptions) (WarmOutcome, error) {
	var out WarmOutcome
	if err := opts.validate(); err != nil {
		return out, err
	}
	groups, unserved, err := groupByCache(ctx, eng, opts.Cache, entries)
	if err != nil {
		return out, err
	}
	for _, u := range unserved {
		reg := u.Ref.Context().RegistryStr()
		out.Failed = append(out.Failed, transfer.ImageResult{Line: u.Line, Source: u.Ref.String(),
			Error: "no bkcache cache on this engine proxies " + reg + "; run \"docker bkcache up --upstream https://" + reg + " ...\" or pass --cache"})
	}
	for _, g := range groups {
		rep, err := warmGroup(ctx, eng, g, opts)
		out.Caches = append(out.Caches, WarmResult{Cache: g.label, WarmReport: rep})
		out.Failed = append(out.Failed, rep.Failed...)
		if err != nil && len(rep.Failed) == 0 {
			out.Failed = append(out.Failed, transfer.ImageResult{Source: "cache " + g.label, Error: err.Error()})
		}
	}
	if err := ctx.Err(); err != nil {
		return out, err
	}
	return out, failedError(out.Failed, outages(out.Caches))
}

// failedError sums up failed images: retrying helps with a broken link, not
// with an image the upstream does not have. outage names caches whose
// upstream is unreachable ("" for none).
func failedError(failed []transfer.ImageResult, outage string) error {
	missing := 0
	for _, f := range failed {
		if f.NotFound {
			missing++
		}
	}
	switch {
	case len(failed) == 0:
		return nil
	case missing == len(failed):
		return fmt.Errorf("%d images were not found upstream (see above): check their names and tags in the list", missing)
	case missing > 0:
		return fmt.Errorf("%d images could not be warmed%s: %d not found upstream (check their names and tags), %d failed otherwise; run the same command again to retry those (what was warmed is kept)", len(failed), outage, missing, len(failed)-missing)
	default:
		return fmt.Errorf("%d images could not be warmed%s; run the same command again to retry them (what was warmed is kept)", len(failed), outage)
	}
}

// outages names the caches that said their upstream cannot be reached:
// ": cache NAME: upstream … unreachable since …", or "".
func outages(results []WarmResult) string {
	var parts []string
	for _, r := range results {
		if r.Outage != "" {
			parts = append(parts, "cache "+r.Cache+": "+r.Outage)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return ": " + strings.Join(parts, "; ")
}

// validate checks the options that exclude each other.
func (o WarmOptions) validate() error {
	if o.IntoStorage && o.ThroughProxy {
		return errors.New("--into-storage and --through-proxy exclude each other")
	}
	return nil
}

type cacheGroup struct {
	label   string
	cache   *Cache // nil for a HOST:PORT cache elsewhere
	address string
	entries []transfer.Entry // as named in the list (upstream registry)
}

// groupByCache assigns each image to the cache that proxies its registry.
func groupByCache(ctx context.Context, eng Engine, flag string, entries []transfer.Entry) ([]*cacheGroup, []transfer.Entry, error) {
	if strings.Contains(flag, ":") {
		return []*cacheGroup{{label: flag, address: flag, entries: entries}}, nil, nil
	}
	var caches []Cache
	if flag != "" {
		c, err := Lookup(ctx, eng, flag)
		if err != nil {
			return nil, nil, err
		}
		caches = []Cache{c}
	} else {
		all, err := All(ctx, eng)
		if err != nil {
			return nil, nil, err
		}
		if len(all) == 0 {
			return nil, nil, errors.New("no bkcache cache on this engine; run \"docker bkcache up\" first or pass --cache HOST:PORT")
		}
		caches = all
	}
	byName := map[string]*cacheGroup{}
	var groups []*cacheGroup
	var unserved []transfer.Entry
	for _, e := range entries {
		var match *Cache
		var serving []Cache
		for i := range caches {
			if flag != "" || serves(caches[i].Spec, e.Ref) {
				if match == nil {
					match = &caches[i]
				}
				serving = append(serving, caches[i])
			}
		}
		if len(serving) > 1 {
			// Picking one silently would fill a cache the nodes may not use.
			return nil, nil, fmt.Errorf("several caches proxy %s: %s; name the one to fill with --cache NAME", e.Ref.Context().RegistryStr(), describeCaches(serving))
		}
		if match == nil {
			unserved = append(unserved, e)
			continue
		}
		g, ok := byName[match.Spec.Name]
		if !ok {
			g = &cacheGroup{label: match.Spec.Name, cache: match, address: match.Spec.LocalAddress()}
			byName[match.Spec.Name] = g
			groups = append(groups, g)
		}
		g.entries = append(g.entries, e)
	}
	return groups, unserved, nil
}

// serves says whether a cache's upstream is the registry ref names.
func serves(spec Spec, ref name.Reference) bool {
	reg, up := ref.Context().RegistryStr(), spec.UpstreamHost()
	return reg == up || (isDockerHub(reg) && isDockerHub(up))
}

// warmMode picks how a group is warmed, or says why the flags cannot be met.
func warmMode(g *cacheGroup, dataDirHere bool, opts WarmOptions) (string, error) {
	switch {
	case g.cache == nil:
		if opts.IntoStorage {
			return "", fmt.Errorf("cache %s is not on this engine, so --into-storage cannot write its storage; leave it out", g.label)
		}
		return WarmProxy, nil
	case g.cache.Spec.Layout == LayoutFront:
		return WarmFront, nil
	case opts.ThroughProxy:
		return WarmProxy, nil
	case dataDirHere:
		return WarmStorage, nil
	case opts.IntoStorage:
		return "", fmt.Errorf("cache %s: its data directory is not on this host, so --into-storage cannot write it; use --through-proxy", g.label)
	default:
		return WarmProxy, nil
	}
}

func warmGroup(ctx context.Context, eng Engine, g *cacheGroup, opts WarmOptions) (transfer.WarmReport, error) {
	// The same images, named on the cache.
	var viaCache []transfer.Entry
	for _, e := range g.entries {
		ref, err := transfer.TargetRef(e.Ref, g.address, "", true)
		if err != nil {
			return transfer.WarmReport{}, err
		}
		viaCache = append(viaCache, transfer.Entry{Line: e.Line, Ref: ref})
	}
	dataDir := ""
	if g.cache != nil {
		if !g.cache.Running {
			return transfer.WarmReport{}, fmt.Errorf("cache %s is not running; run \"docker bkcache up --name %s\"", g.label, g.label)
		}
		if _, err := os.Stat(g.cache.DataDir); err == nil {
			dataDir = g.cache.DataDir
		}
	}
	mode, err := warmMode(g, dataDir != "", opts)
	if err != nil {
		return transfer.WarmReport{}, err
	}
	wopts := transfer.WarmOptions{Platforms: opts.Platforms, DataDir: dataDir, Jobs: opts.Jobs, Progress: opts.Progress, Meter: opts.Meter}
	switch mode {
	case WarmProxy:
		return transfer.WarmThroughCache(ctx, viaCache, wopts)
	case WarmFront:
		return warmFront(ctx, eng, g, viaCache, wopts)
	}

	// The storage mode writes into the cache's files: no up or down of it meanwhile.
	unlock, err := lockCache(ctx, g.cache.Spec.ConfigDir, g.cache.Spec.Name, opts.Progress)
	if err != nil {
		return transfer.WarmReport{}, err
	}
	defer unlock()
	writer, err := StartStorageWriter(ctx, eng, *g.cache)
	if err != nil {
		return transfer.WarmReport{}, err
	}
	defer writer.Stop(context.WithoutCancel(ctx))
	popts := transfer.PushOptions{
		To: writer.Addr, TargetTransport: writer.Transport(), Insecure: true, Platforms: opts.Platforms, Jobs: opts.Jobs, Progress: io.Discard, Meter: opts.Meter,
		SourceInsecure: strings.HasPrefix(g.cache.Spec.Upstream, "http://"),
		From:           g.cache.Spec.UpstreamHost(),
	}
	if g.cache.Spec.Username != "" {
		user, pass, err := UpstreamCredentials(g.cache.Spec)
		if err != nil {
			return transfer.WarmReport{}, err
		}
		popts.SourceAuth = &authn.Basic{Username: user, Password: pass}
	}
	up, pushErr := transfer.Push(ctx, g.entries, popts)
	// Then the cache itself fetches the (small) manifests and links what is stored.
	wopts.Meter = nil
	rep, err := transfer.WarmThroughCache(ctx, viaCache, wopts)
	rep.Mode, rep.Upstream = WarmStorage, &up
	for _, r := range up.Images {
		if r.Error != "" {
			rep.Failed = append(rep.Failed, r)
		}
	}
	if pushErr != nil {
		return rep, pushErr
	}
	return rep, err
}

// warmFront pulls every manifest and blob through the cache's front, which
// fetches each blob from the upstream once whatever the number of
// repositories and requests; its counters say what crossed the slow link.
func warmFront(ctx context.Context, eng Engine, g *cacheGroup, viaCache []transfer.Entry, wopts transfer.WarmOptions) (transfer.WarmReport, error) {
	before, beforeErr := frontCounters(ctx, eng, g.cache.Spec)
	wopts.Front = true
	rep, err := transfer.WarmThroughCache(ctx, viaCache, wopts)
	rep.Mode = WarmFront
	// The last blobs may still be on their way into storage: let the front
	// finish them, so a restart right after the warm loses nothing.
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline) && ctx.Err() == nil; {
		if fs, err := frontStatus(ctx, eng, g.cache.Spec); err != nil || fs.InFlight == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if after, afterErr := frontCounters(ctx, eng, g.cache.Spec); beforeErr == nil && afterErr == nil {
		rep.Upstream = &transfer.Report{
			BlobsFetched: after.BlobFetches - before.BlobFetches,
			BytesFetched: after.UpstreamBytes - before.UpstreamBytes,
		}
	}
	return rep, err
}

// frontCounters reads the counters of a front cache on this engine.
func frontCounters(ctx context.Context, eng Engine, spec Spec) (FrontCounters, error) {
	fs, err := frontStatus(ctx, eng, spec)
	return fs.Counters, err
}
