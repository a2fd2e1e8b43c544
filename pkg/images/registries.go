package images

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"

	"github.com/bkcache/bkcache/pkg/imageref"
)

// RegistryUse is one registry a deployment pulls from.
type RegistryUse struct {
	Registry string `json:"registry"`
	Images   int    `json:"images"`
	Maybe    int    `json:"maybe,omitempty"`
	// Escaped lists the images pulled from here although their release is
	// configured with another imageRegistry (EscapedFrom): the override did
	// not reach them.
	Escaped     []string `json:"escaped,omitempty"`
	EscapedFrom []string `json:"escapedFrom,omitempty"`
}

// Registries groups images by the registry they are pulled from, most
// images first.
func Registries(imgs []Image) []RegistryUse {
	by := map[string]*RegistryUse{}
	for _, img := range imgs {
		ref := img.Reference
		if img.Original != "" {
			ref = img.Original // where the image comes from, before --rewrite-registry
		}
		reg := imageref.Registry(ref)
		u := by[reg]
		if u == nil {
			u = &RegistryUse{Registry: reg}
			by[reg] = u
		}
		u.Images++
		if img.Certainty == Maybe {
			u.Maybe++
		}
		if conf := escaped(ref, img.Sources); conf != "" {
			u.Escaped = append(u.Escaped, ref)
			if !slices.Contains(u.EscapedFrom, conf) {
				u.EscapedFrom = append(u.EscapedFrom, conf)
			}
		}
	}
	out := make([]RegistryUse, 0, len(by))
	for _, reg := range slices.Sorted(maps.Keys(by)) {
		u := by[reg]
		slices.Sort(u.Escaped)
		slices.Sort(u.EscapedFrom)
		out = append(out, *u)
	}
	slices.SortStableFunc(out, func(a, b RegistryUse) int { return b.Images - a.Images })
	return out
}

// escaped returns the imageRegistry an image's release is configured with
// when the image does not come from it; "" when it does or none is set.
func escaped(ref string, sources []Source) string {
	conf := ""
	for _, s := range sources {
		r := strings.TrimSuffix(s.ImageRegistry, "/")
		if r == "" {
			continue
		}
		if c := canonicalRegistry(r); strings.HasPrefix(ref, c+"/") {
			return ""
		}
		if conf == "" || r < conf {
			conf = r
		}
	}
	return conf
}

func writeRegistries(w io.Writer, uses []RegistryUse) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGISTRY\tIMAGES\tMAYBE\tESCAPED")
	for _, u := range uses {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", u.Registry, u.Images, u.Maybe, len(u.Escaped))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var b strings.Builder
	for _, u := range uses {
		if len(u.Escaped) == 0 {
			continue
		}
		verb := "come"
		if len(u.Escaped) == 1 {
			verb = "comes"
		}
		fmt.Fprintf(&b, "\n%s %s from %s although their releases are configured with imageRegistry %s:\n",
			plural(len(u.Escaped), "image"), verb, u.Registry, strings.Join(u.EscapedFrom, ", "))
		for _, ref := range u.Escaped {
			b.WriteString("  " + ref + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Summary is a one-line count of images per registry, for a terminal.
func Summary(uses []RegistryUse) string {
	total, esc := 0, 0
	var regs, from []string
	for _, u := range uses {
		total += u.Images
		esc += len(u.Escaped)
		regs = append(regs, fmt.Sprintf("%s %d", u.Registry, u.Images))
		for _, f := range u.EscapedFrom {
			if !slices.Contains(from, f) {
				from = append(from, f)
			}
		}
	}
	s := fmt.Sprintf("%s from %s: %s", plural(total, "image"), plural(len(uses), "registry"), strings.Join(regs, ", "))
	if esc > 0 {
		s += fmt.Sprintf("; %d escape imageRegistry %s", esc, strings.Join(from, ", "))
	}
	return s + " (-o registries lists them; --upstreams prints a cache per registry)"
}

// UpstreamOptions shape --upstreams.
type UpstreamOptions struct {
	// CacheHost is the host the caches run on, as nodes reach it.
	CacheHost string
	// FirstPort is the first cache's port (5500, the guide's), then +1 each.
	FirstPort int
}

// cachesFile is docker bkcache up's `-f caches.yaml` (pkg/cache.CachesFile;
// not imported: this package links no Docker client).
type cachesFile struct {
	Caches []cacheEntry `json:"caches"`
}

type cacheEntry struct {
	Name     string `json:"name"`
	Upstream string `json:"upstream"`
	Port     int    `json:"port"`
}

// WriteUpstreams prints a caches file for `docker bkcache up -f`, one cache
// per registry the deployment pulls from, headed by the `kubectl bkcache
// mirror` commands that point nodes at each, as comments.
func WriteUpstreams(w io.Writer, uses []RegistryUse, opts UpstreamOptions) error {
	if opts.FirstPort == 0 {
		opts.FirstPort = 5500
	}
	host := opts.CacheHost
	if host == "" {
		host = "CACHE_HOST"
	}
	var f cachesFile
	var mirror, skipped []string
	names := map[string]bool{}
	for _, u := range uses {
		if u.Registry == host || strings.HasPrefix(u.Registry, host+":") {
			skipped = append(skipped, fmt.Sprintf("# %s from %s: already pulled through a cache on %s\n", plural(u.Images, "image"), u.Registry, host))
			continue
		}
		port := opts.FirstPort + len(f.Caches)
		e := cacheEntry{Name: cacheName(u.Registry), Upstream: "https://" + u.Registry, Port: port}
		if u.Registry == "docker.io" {
			e.Upstream = "https://registry-1.docker.io"
		}
		for names[e.Name] {
			e.Name += "-" + fmt.Sprint(port)
		}
		names[e.Name] = true
		f.Caches = append(f.Caches, e)
		mirror = append(mirror, fmt.Sprintf("#   kubectl bkcache mirror --registry %s:%d --upstream %s", host, port, u.Registry))
	}
	if len(f.Caches) == 0 {
		return fmt.Errorf("no registry to cache: every image already comes from %s", host)
	}
	b, err := yaml.Marshal(f)
	if err != nil {
		return err
	}
	head := fmt.Sprintf("# %s for the registries this deployment pulls from. Save this as caches.yaml, then\n#   docker bkcache up -f caches.yaml\n# and point the nodes at them:\n%s\n%s",
		plural(len(f.Caches), "cache"), strings.Join(mirror, "\n"), strings.Join(skipped, ""))
	_, err = io.WriteString(w, head+string(b))
	return err
}

// cacheName names a registry's cache as `docker bkcache up` accepts it;
// hub.bktencent.com keeps the guide's name.
func cacheName(registry string) string {
	if registry == "hub.bktencent.com" {
		return "bkhub"
	}
	b := []byte(strings.ToLower(registry))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			b[i] = '-'
		}
	}
	name := strings.Trim(string(b), "-")
	if len(name) > 63 {
		name = name[:63]
	}
	return name
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	if strings.HasSuffix(word, "y") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(word, "y"))
	}
	return fmt.Sprintf("%d %ss", n, word)
}
