package images

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Formats lists the output formats Write knows.
var Formats = []string{"text", "json", "yaml", "chart-images", "registries"}

// WriteOptions shapes the output.
type WriteOptions struct {
	Format       string // text (default), json, yaml, chart-images, registries
	IncludeMaybe bool
	// Rewrites repoint references (the original stays beside them in json
	// and yaml).
	Rewrites Rewrites
}

// Document is the json/yaml output.
type Document struct {
	Images     []Image       `json:"images"`
	Registries []RegistryUse `json:"registries,omitempty"`
	Invalid    []Invalid     `json:"invalid,omitempty"`
}

// Result applies the options to a list: which images, rewritten how. Two
// images rewritten onto one reference are an error (*CollisionError).
func Result(l *List, opts WriteOptions) (Document, error) {
	imgs := l.Images(opts.IncludeMaybe)
	if !opts.Rewrites.Empty() {
		from := map[string][]string{}
		for i := range imgs {
			if r := opts.Rewrites.Apply(imgs[i].Reference); r != imgs[i].Reference {
				imgs[i].Original, imgs[i].Reference = imgs[i].Reference, r
			}
			orig := imgs[i].Reference
			if imgs[i].Original != "" {
				orig = imgs[i].Original
			}
			from[imgs[i].Reference] = append(from[imgs[i].Reference], orig)
		}
		coll := map[string][]string{}
		for to, origs := range from {
			if len(origs) > 1 {
				slices.Sort(origs)
				coll[to] = origs
			}
		}
		if len(coll) > 0 {
			return Document{}, &CollisionError{Rewrites: opts.Rewrites, Collisions: coll}
		}
	}
	return Document{Images: imgs, Registries: Registries(imgs), Invalid: l.Invalid()}, nil
}

// Write prints the list. text: one reference per line, sure ones sorted and
// unique, then (with IncludeMaybe) the maybes after a `#` comment line, which
// `docker bkcache warm -f -` skips. chart-images: BlueKing's
// chart-images.txt, `chart version image image…` per chart.
func Write(w io.Writer, l *List, opts WriteOptions) error {
	doc, err := Result(l, opts)
	if err != nil {
		return err
	}
	switch opts.Format {
	case "", "text":
		var b strings.Builder
		maybeHeader := false
		for _, img := range doc.Images {
			if img.Certainty == Maybe && !maybeHeader {
				b.WriteString("# maybe: pulled at run time perhaps (values, env vars, ConfigMaps, chart annotations)\n")
				maybeHeader = true
			}
			b.WriteString(img.Reference + "\n")
		}
		_, err := io.WriteString(w, b.String())
		return err
	case "json":
		if doc.Images == nil {
			doc.Images = []Image{}
		}
		b, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	case "yaml":
		if doc.Images == nil {
			doc.Images = []Image{}
		}
		b, err := yaml.Marshal(doc)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	case "chart-images":
		_, err := io.WriteString(w, chartImages(doc.Images))
		return err
	case "registries":
		return writeRegistries(w, doc.Registries)
	default:
		return fmt.Errorf("unknown output format %q: use one of %s", opts.Format, strings.Join(Formats, ", "))
	}
}

// chartImages groups references by the chart they came from, TABs between
// fields: BlueKing's scripts read the file with awk (any blank) and with
// `cut -f1` (a TAB after the chart name). References without a chart
// (manifests, a cluster) go on a line of their own named "-".
func chartImages(imgs []Image) string {
	type key struct{ chart, version string }
	groups := map[key]map[string]bool{}
	for _, img := range imgs {
		for _, s := range img.Sources {
			k := key{s.Chart, s.ChartVersion}
			if k.chart == "" {
				k = key{"-", "-"}
			}
			if k.version == "" {
				k.version = "-"
			}
			if groups[k] == nil {
				groups[k] = map[string]bool{}
			}
			groups[k][img.Reference] = true
		}
	}
	keys := make([]key, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].chart != keys[j].chart {
			return keys[i].chart < keys[j].chart
		}
		return keys[i].version < keys[j].version
	})
	var b strings.Builder
	for _, k := range keys {
		refs := make([]string, 0, len(groups[k]))
		for r := range groups[k] {
			refs = append(refs, r)
		}
		sort.Strings(refs)
		fmt.Fprintf(&b, "%s\t%s\t%s\n", k.chart, k.version, strings.Join(refs, "\t"))
	}
	return b.String()
}

// WriteWhy prints every place an image came from, one per line.
func WriteWhy(w io.Writer, img Image) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s)\n", img.Reference, img.Certainty)
	for _, s := range img.Sources {
		fmt.Fprintf(&b, "  %s\n", s.String())
	}
	_, err := io.WriteString(w, b.String())
	return err
}
