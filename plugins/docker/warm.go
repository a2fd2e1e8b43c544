package docker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/docker/cli/cli/command"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/bkcache/bkcache/pkg/proxy"
	"github.com/bkcache/bkcache/pkg/transfer"

	"github.com/bkcache/bkcache/pkg/printer"
)

type warmOptions struct {
	file, cache, platforms, output string
	intoStorage, throughProxy      bool
	jobs                           int
}

func newWarmCommand(dockerCli command.Cli) *cobra.Command {
	var o warmOptions
	cmd := &cobra.Command{
		Use:   "warm -f LIST",
		Short: "Fill the cache from a list of images before the deployment starts",
		Long: `Fills a bkcache cache with every manifest, index child and blob the nodes will
pull, so that the first node finds them stored. Images are matched to the cache
whose upstream serves their registry (or --cache); images no cache serves are
reported. What the cache holds is skipped.

Two modes. Into storage (the default when the cache's data directory is on this
host): bkcache fetches each blob from the upstream once and writes it with
registry:2's own storage code, through a second, plain registry:2 container on
the cache's data directory; then the cache fetches only the small manifests.
Through the proxy (--through-proxy, or when the cache is remote): bkcache pulls
every blob through the cache as a node would, one request per blob at a time;
registry:2 2.8 then fetches each uncached blob from the upstream twice, and a
blob shared by several repositories once per repository. Into storage is the
default because the slow link is what bkcache is for: it carries each byte once.`,
		Example: `  kubectl bkcache images --from-helmfile . > images.txt
  docker bkcache warm -f images.txt
  kubectl bkcache images --from-helmfile . | docker bkcache warm -f -
  docker bkcache warm -f images.txt --cache bkhub --platform linux/amd64,linux/arm64 --through-proxy`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runWarm(cmd.Context(), dockerCli, o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.file, "file", "f", "", "image list, one reference per line (- for stdin)")
	f.StringVar(&o.cache, "cache", "", "cache NAME on this engine, or HOST:PORT of a cache elsewhere (default: the cache whose upstream serves each image)")
	f.StringVar(&o.platforms, "platform", "linux/amd64", "platforms of an index the nodes pull, comma-separated, or all")
	f.BoolVar(&o.intoStorage, "into-storage", false, "write into the cache's storage (fail if it is not on this host)")
	f.BoolVar(&o.throughProxy, "through-proxy", false, "pull everything through the cache, as nodes would")
	f.IntVarP(&o.jobs, "jobs", "j", 8, "blobs fetched at once")
	f.StringVarP(&o.output, "output", "o", "", "output format: json|yaml")
	return cmd
}

func runWarm(ctx context.Context, dockerCli command.Cli, o warmOptions) error {
	if o.intoStorage && o.throughProxy {
		return errors.New("--into-storage and --through-proxy exclude each other")
	}
	entries, bad, err := readList(dockerCli, o.file)
	if err != nil {
		return err
	}
	platforms, err := parsePlatforms(o.platforms)
	if err != nil {
		return err
	}
	groups, unserved, err := groupByCache(ctx, dockerCli, o.cache, entries)
	if err != nil {
		return err
	}
	var reports []transfer.WarmReport
	var failures []transfer.ImageResult
	for _, u := range unserved {
		failures = append(failures, transfer.ImageResult{Line: u.Line, Source: u.Ref.String(), Error: "no bkcache cache on this engine proxies " + u.Ref.Context().RegistryStr() + "; run \"docker bkcache up --upstream https://" + u.Ref.Context().RegistryStr() + " ...\" or pass --cache"})
	}
	for _, g := range groups {
		rep, err := warmGroup(ctx, dockerCli, g, platforms, o)
		reports = append(reports, rep)
		failures = append(failures, rep.Failed...)
		if err != nil && len(rep.Failed) == 0 {
			failures = append(failures, transfer.ImageResult{Source: "cache " + g.label, Error: err.Error()})
		}
	}
	if ok, err := printer.Structured(dockerCli.Out(), o.output, reports); ok {
		if err != nil {
			return err
		}
	} else {
		for i, r := range reports {
			fmt.Fprintf(dockerCli.Out(), "cache %s (%s): %d images, %d manifests, %d blobs (%d already cached, %s); %s\n",
				groups[i].label, r.Mode, r.Images, r.Manifests, r.Blobs, r.BlobsCached, humanBytes(r.BytesCached), upstreamLine(r))
		}
		printFailures(dockerCli.Out(), failures)
	}
	if len(failures) > 0 {
		return fmt.Errorf("%d images could not be warmed; see the table above", len(failures))
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d lines of %s are not image references (see above); the rest was warmed", len(bad), o.file)
	}
	return nil
}

func upstreamLine(r transfer.WarmReport) string {
	if r.Upstream != nil {
		return fmt.Sprintf("%s from the upstream in %.1fs", humanBytes(r.Upstream.BytesFetched), r.Seconds)
	}
	return fmt.Sprintf("%s pulled through the cache in %.1fs (registry:2 fetches each uncached blob from the upstream twice)", humanBytes(r.BytesFetched), r.Seconds)
}

type cacheGroup struct {
	label   string
	cache   *proxy.Cache // nil for a HOST:PORT cache elsewhere
	address string
	entries []transfer.Entry // as named in the list (upstream registry)
}

// groupByCache assigns each image to the cache that proxies its registry.
func groupByCache(ctx context.Context, dockerCli command.Cli, flag string, entries []transfer.Entry) ([]*cacheGroup, []transfer.Entry, error) {
	if strings.Contains(flag, ":") {
		return []*cacheGroup{{label: flag, address: flag, entries: entries}}, nil, nil
	}
	var caches []proxy.Cache
	if flag != "" {
		c, err := proxy.Lookup(ctx, dockerCli.Client(), flag)
		if err != nil {
			return nil, nil, err
		}
		caches = []proxy.Cache{c}
	} else {
		all, err := proxy.All(ctx, dockerCli.Client())
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
		var match *proxy.Cache
		for i := range caches {
			if flag != "" || serves(caches[i].Spec, e.Ref) {
				match = &caches[i]
				break
			}
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

func serves(spec proxy.Spec, ref name.Reference) bool {
	reg := ref.Context().RegistryStr()
	up := spec.UpstreamHost()
	if reg == up {
		return true
	}
	hub := map[string]bool{"index.docker.io": true, "docker.io": true, "registry-1.docker.io": true}
	return hub[reg] && hub[up]
}

func warmGroup(ctx context.Context, dockerCli command.Cli, g *cacheGroup, platforms []v1.Platform, o warmOptions) (transfer.WarmReport, error) {
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
		if _, err := os.Stat(g.cache.DataDir); err == nil {
			dataDir = g.cache.DataDir
		}
		if !g.cache.Running {
			return transfer.WarmReport{}, fmt.Errorf("cache %s is not running; run \"docker bkcache up --name %s\"", g.label, g.label)
		}
	}
	storage := dataDir != "" && !o.throughProxy
	if o.intoStorage && !storage {
		return transfer.WarmReport{}, fmt.Errorf("cache %s: its data directory is not on this host, so --into-storage cannot write it; use --through-proxy", g.label)
	}
	progress := newProgress(dockerCli, len(g.entries))
	defer progress.Close()
	wopts := transfer.WarmOptions{Platforms: platforms, DataDir: dataDir, Jobs: o.jobs, Progress: progress}
	if !storage {
		return transfer.WarmThroughCache(ctx, viaCache, wopts)
	}

	writer, err := proxy.StartStorageWriter(ctx, dockerCli.Client(), *g.cache)
	if err != nil {
		return transfer.WarmReport{}, err
	}
	defer writer.Stop(context.WithoutCancel(ctx))
	popts := transfer.PushOptions{
		To: writer.Addr, Insecure: true, Platforms: platforms, Jobs: o.jobs, Progress: progress,
		SourceInsecure: strings.HasPrefix(g.cache.Spec.Upstream, "http://"),
		From:           g.cache.Spec.UpstreamHost(),
	}
	if g.cache.Spec.Username != "" {
		user, pass, err := proxy.UpstreamCredentials(g.cache.Spec)
		if err != nil {
			return transfer.WarmReport{}, err
		}
		popts.SourceAuth = &authn.Basic{Username: user, Password: pass}
	}
	up, pushErr := transfer.Push(ctx, g.entries, popts)
	progress.Close()
	// Then the cache itself fetches the (small) manifests and links what is stored.
	manifests := newProgress(dockerCli, len(viaCache))
	defer manifests.Close()
	wopts.Progress = manifests
	rep, err := transfer.WarmThroughCache(ctx, viaCache, wopts)
	rep.Mode, rep.Upstream = "storage", &up
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
