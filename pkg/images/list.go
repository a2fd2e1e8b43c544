// Package images finds container image references in Kubernetes objects and
// values, normalises them and writes them out as lists. It is pure: bytes in,
// references out; it imports no network or cluster client (reading a cluster or
// rendering charts happens at the edges, which hand their objects over here).
package images

import (
	"fmt"
	"sort"
	"strings"

	"github.com/bkcache/bkcache/pkg/imageref"
)

// Certainty says whether a deployment surely pulls an image.
type Certainty string

const (
	// Sure: a container of a pod spec, an `image` field or split image map of an object.
	Sure Certainty = "sure"
	// Maybe: pulled at run time perhaps: image-shaped strings in values,
	// ConfigMaps, env vars, chart annotations and images.lock files.
	Maybe Certainty = "maybe"
)

// Source says where a reference was found.
type Source struct {
	Helmfile     string `json:"helmfile,omitempty"`
	Release      string `json:"release,omitempty"`
	Chart        string `json:"chart,omitempty"`
	ChartVersion string `json:"chartVersion,omitempty"`
	// File is the manifest file, or the chart template (helm's "# Source:" line).
	File      string `json:"file,omitempty"`
	Line      int    `json:"line,omitempty"`
	Kind      string `json:"kind,omitempty"`
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	// Path is the field path inside the object or the values, e.g.
	// spec.template.spec.containers[0].image.
	Path      string    `json:"path,omitempty"`
	Certainty Certainty `json:"certainty"`
	// Reason says why a maybe is listed.
	Reason string `json:"reason,omitempty"`
	// Raw is the text as written, before normalisation.
	Raw string `json:"raw,omitempty"`
	// ImageRegistry is the registry the deployment is configured to pull
	// this image's release from (the helmfile's imageRegistry state value,
	// or the release's global.imageRegistry and the like); an image from
	// another registry escaped it.
	ImageRegistry string `json:"imageRegistry,omitempty"`
}

// String renders a source for --why and error messages.
func (s Source) String() string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("helmfile", s.Helmfile)
	add("release", s.Release)
	if s.Chart != "" {
		c := s.Chart
		if s.ChartVersion != "" {
			c += "@" + s.ChartVersion
		}
		add("chart", c)
	}
	if s.File != "" {
		f := s.File
		if s.Line > 0 {
			f = fmt.Sprintf("%s:%d", f, s.Line)
		}
		add("file", f)
	}
	if s.Kind != "" || s.Name != "" {
		obj := s.Kind + "/" + s.Name
		if s.Namespace != "" {
			obj = s.Namespace + "/" + obj
		}
		add("object", obj)
	}
	add("path", s.Path)
	add("certainty", string(s.Certainty))
	add("reason", s.Reason)
	return strings.Join(parts, " ")
}

// Found is one raw reference at one place, before normalisation.
type Found struct {
	Raw    string
	Source Source
}

// Image is one normalised reference with every place it came from.
type Image struct {
	Reference string    `json:"reference"`
	Original  string    `json:"original,omitempty"` // set when --rewrite-registry changed Reference
	Certainty Certainty `json:"certainty"`
	Sources   []Source  `json:"sources"`
}

// Invalid is a value found where an image belongs that does not parse.
type Invalid struct {
	Value  string `json:"value"`
	Error  string `json:"error"`
	Source Source `json:"source"`
}

// List gathers findings; sure wins over maybe for one reference.
type List struct {
	byRef   map[string]*Image
	invalid []Invalid
}

// NewList returns an empty list.
func NewList() *List { return &List{byRef: map[string]*Image{}} }

// Add normalises and records findings. Invalid sure references are kept as
// Invalid; invalid maybes are dropped, since they are guesses from free text.
func (l *List) Add(found ...Found) {
	for _, f := range found {
		ref, err := imageref.Normalize(f.Raw)
		if err != nil {
			if f.Source.Certainty != Maybe {
				l.invalid = append(l.invalid, Invalid{Value: f.Raw, Error: err.Error(), Source: f.Source})
			}
			continue
		}
		src := f.Source
		src.Raw = f.Raw
		if src.Certainty == "" {
			src.Certainty = Sure
		}
		img, ok := l.byRef[ref]
		if !ok {
			img = &Image{Reference: ref, Certainty: src.Certainty}
			l.byRef[ref] = img
		}
		if src.Certainty == Sure {
			img.Certainty = Sure
		}
		img.Sources = append(img.Sources, src)
	}
}

// Merge adds everything of another list.
func (l *List) Merge(o *List) {
	for _, img := range o.byRef {
		for _, s := range img.Sources {
			l.Add(Found{Raw: s.Raw, Source: s})
		}
	}
	l.invalid = append(l.invalid, o.invalid...)
}

// Invalid returns the references that did not parse, in the order found.
func (l *List) Invalid() []Invalid { return append([]Invalid(nil), l.invalid...) }

// Len counts the distinct references.
func (l *List) Len() int { return len(l.byRef) }

// Images returns the images sorted: sure ones first, then maybes, each by reference.
// Maybes are left out unless includeMaybe.
func (l *List) Images(includeMaybe bool) []Image {
	// A maybe that is a sure image under another registry (values before a
	// registry override) adds nothing to pull.
	sureRest := map[string]bool{}
	for ref, img := range l.byRef {
		if img.Certainty == Sure {
			sureRest[ref[strings.Index(ref, "/")+1:]] = true
		}
	}
	var out []Image
	for ref, img := range l.byRef {
		if img.Certainty == Maybe && (!includeMaybe || sureRest[ref[strings.Index(ref, "/")+1:]]) {
			continue
		}
		c := *img
		c.Sources = append([]Source(nil), img.Sources...)
		sort.SliceStable(c.Sources, func(i, j int) bool { return c.Sources[i].String() < c.Sources[j].String() })
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Certainty != out[j].Certainty {
			return out[i].Certainty == Sure
		}
		return out[i].Reference < out[j].Reference
	})
	return out
}

// Why returns the image a reference names (normalised first), or false.
func (l *List) Why(ref string) (Image, bool) {
	n, err := imageref.Normalize(ref)
	if err != nil {
		return Image{}, false
	}
	img, ok := l.byRef[n]
	if !ok {
		return Image{}, false
	}
	return *img, true
}
