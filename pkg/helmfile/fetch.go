package helmfile

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/Masterminds/semver/v3"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/registry"
	"helm.sh/helm/v3/pkg/repo"
	"sigs.k8s.io/yaml"

	"github.com/bkcache/bkcache/pkg/netaddr"
)

// Repository is a chart repository a helmfile names.
type Repository struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	OCI  bool   `json:"oci,omitempty"`
}

// fetcher finds charts: local paths, HTTP repositories (index.yaml + .tgz)
// and oci:// registries. It caches indexes and archives for one run, so 30
// releases of one repository fetch its index once.
type fetcher struct {
	client *http.Client

	mu      sync.Mutex
	indexes map[string]*indexEntry
	blobs   map[string]*blobEntry
}

type indexEntry struct {
	once sync.Once
	idx  *repo.IndexFile
	err  error
}

type blobEntry struct {
	once sync.Once
	data []byte
	err  error
}

func newFetcher() *fetcher {
	return &fetcher{client: &http.Client{}, indexes: map[string]*indexEntry{}, blobs: map[string]*blobEntry{}}
}

// chartRef says where a chart lives.
type chartRef struct {
	Local   string // a directory or .tgz on disk
	RepoURL string // an HTTP repository: Name is the chart's name in its index
	OCI     string // oci://host/path/name
	Name    string
	Version string // exact or a constraint
}

// load returns a fresh chart (helm edits a chart while rendering it, so two
// releases never share one).
func (f *fetcher) load(ctx context.Context, ref chartRef) (*chart.Chart, error) {
	switch {
	case ref.Local != "":
		return f.loadLocalChart(ctx, ref.Local)
	case ref.OCI != "":
		data, err := f.blob(ref.OCI+"@"+ref.Version, func() ([]byte, error) { return f.pullOCI(ctx, ref.OCI, ref.Version) })
		if err != nil {
			return nil, err
		}
		return loadArchive(ref.OCI, data)
	case ref.RepoURL != "":
		u, err := f.chartURL(ctx, ref.RepoURL, ref.Name, ref.Version)
		if err != nil {
			return nil, err
		}
		data, err := f.blob(u, func() ([]byte, error) { return f.get(ctx, u) })
		if err != nil {
			return nil, err
		}
		return loadArchive(u, data)
	}
	return nil, fmt.Errorf("no chart given")
}

func loadArchive(from string, data []byte) (*chart.Chart, error) {
	c, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("load chart archive %s: %w", from, err)
	}
	return c, nil
}

func (f *fetcher) blob(key string, get func() ([]byte, error)) ([]byte, error) {
	f.mu.Lock()
	e, ok := f.blobs[key]
	if !ok {
		e = &blobEntry{}
		f.blobs[key] = e
	}
	f.mu.Unlock()
	e.once.Do(func() { e.data, e.err = get() })
	return e.data, e.err
}

// chartURL looks a chart version up in a repository's index.yaml.
func (f *fetcher) chartURL(ctx context.Context, repoURL, name, version string) (string, error) {
	f.mu.Lock()
	e, ok := f.indexes[repoURL]
	if !ok {
		e = &indexEntry{}
		f.indexes[repoURL] = e
	}
	f.mu.Unlock()
	e.once.Do(func() {
		var data []byte
		data, e.err = f.get(ctx, strings.TrimSuffix(repoURL, "/")+"/index.yaml")
		if e.err != nil {
			return
		}
		idx := &repo.IndexFile{}
		if err := yaml.Unmarshal(data, idx); err != nil {
			e.err = fmt.Errorf("repository %s: index.yaml: %w", repoURL, err)
			return
		}
		idx.SortEntries()
		e.idx = idx
	})
	if e.err != nil {
		return "", e.err
	}
	cv, err := e.idx.Get(name, version)
	if err != nil {
		want := version
		if want == "" {
			want = "latest"
		}
		return "", fmt.Errorf("repository %s has no chart %s version %s: %w", repoURL, name, want, err)
	}
	if len(cv.URLs) == 0 {
		return "", fmt.Errorf("repository %s: chart %s %s has no download URL", repoURL, name, cv.Version)
	}
	return repo.ResolveReferenceURL(repoURL, cv.URLs[0])
}

func (f *fetcher) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	return b, nil
}

// pullOCI pulls a chart from an OCI registry. The reference may carry its tag
// (oci://host/charts/name:1.2.3) instead of a version.
func (f *fetcher) pullOCI(ctx context.Context, ref, version string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	plain := strings.TrimPrefix(ref, "oci://")
	if i := strings.LastIndex(plain, ":"); i > strings.LastIndex(plain, "/") {
		tag := plain[i+1:]
		if version != "" && version != tag {
			return nil, fmt.Errorf("chart %s: the reference's tag %s and --version %s differ: give one of them", ref, tag, version)
		}
		plain, version = plain[:i], tag
	}
	c, err := newRegistryClient(ctx)
	if err != nil {
		return nil, fmt.Errorf("chart %s: registry client: %w", ref, err)
	}
	if version == "" || isConstraint(version) {
		tags, err := c.Tags(plain)
		if err != nil {
			return nil, fmt.Errorf("chart %s: list its tags: %w (is the registry up, and is this a chart repository?)", ref, err)
		}
		if version, err = pickVersion(tags, version); err != nil {
			return nil, fmt.Errorf("chart %s: %w", ref, err)
		}
	}
	res, err := c.Pull(plain+":"+version, registry.PullOptWithChart(true))
	if err != nil {
		return nil, fmt.Errorf("pull chart %s version %s: %w", ref, version, err)
	}
	return res.Chart.Data, nil
}

// newRegistryClient is helm's OCI client (credentials from helm's registry
// config and ~/.docker/config.json) over a transport that speaks plain HTTP
// to loopback registries, as a local or port-forwarded registry is, and ends
// requests with ctx: the client itself uses context.Background.
func newRegistryClient(ctx context.Context) (*registry.Client, error) {
	hc := &http.Client{Transport: &registryTransport{ctx: ctx, base: registry.NewTransport(false)}}
	return registry.NewClient(registry.ClientOptWriter(io.Discard), registry.ClientOptHTTPClient(hc))
}

type registryTransport struct {
	ctx  context.Context
	base http.RoundTripper
}

func (t *registryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(t.ctx)
	if r.URL.Scheme == "https" && netaddr.IsLoopback(r.URL.Host) {
		r.URL.Scheme = "http"
	}
	return t.base.RoundTrip(r)
}

func isConstraint(v string) bool {
	_, err := semver.StrictNewVersion(strings.TrimPrefix(v, "v"))
	return err != nil
}

func pickVersion(tags []string, constraint string) (string, error) {
	if constraint == "" {
		constraint = ">=0.0.0-0"
	}
	c, err := semver.NewConstraint(constraint)
	if err != nil {
		return "", fmt.Errorf("version constraint %q: %w", constraint, err)
	}
	var vs []*semver.Version
	for _, t := range tags {
		if v, err := semver.NewVersion(t); err == nil && c.Check(v) {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return "", fmt.Errorf("no tag matches version %q (tags: %s)", constraint, strings.Join(tags, ", "))
	}
	sort.Sort(semver.Collection(vs))
	return vs[len(vs)-1].Original(), nil
}

// resolveChart turns a helmfile's `chart:` into a chartRef: a local path
// (relative to the helmfile) first, then `repo/name` over the helmfile's
// repositories, then oci://.
func resolveChart(dir, chartName, version string, repos map[string]Repository) (chartRef, error) {
	if strings.HasPrefix(chartName, "oci://") {
		return chartRef{OCI: chartName, Version: version}, nil
	}
	local := chartName
	if !filepath.IsAbs(local) {
		local = filepath.Join(dir, chartName)
	}
	if _, err := os.Stat(local); err == nil {
		return chartRef{Local: local}, nil
	}
	if strings.HasPrefix(chartName, ".") || strings.HasPrefix(chartName, "/") {
		return chartRef{}, fmt.Errorf("chart %s: no such directory or file %s", chartName, local)
	}
	repoName, name, ok := strings.Cut(chartName, "/")
	if !ok {
		return chartRef{}, fmt.Errorf("chart %s: not a local path and not REPO/NAME", chartName)
	}
	r, ok := repos[repoName]
	if !ok {
		return chartRef{}, fmt.Errorf("chart %s: no local path %s and no repository %q in the helmfile's repositories:", chartName, local, repoName)
	}
	if r.OCI || strings.HasPrefix(r.URL, "oci://") {
		base := strings.TrimSuffix(strings.TrimPrefix(r.URL, "oci://"), "/")
		return chartRef{OCI: "oci://" + base + "/" + name, Version: version}, nil
	}
	if _, err := url.Parse(r.URL); err != nil {
		return chartRef{}, fmt.Errorf("repository %s: url %q: %w", r.Name, r.URL, err)
	}
	return chartRef{RepoURL: r.URL, Name: name, Version: version}, nil
}
