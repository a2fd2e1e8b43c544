package images

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ManifestOptions says how to label what FromManifests finds.
type ManifestOptions struct {
	// Source is copied into every finding (helmfile, release, chart, file).
	Source Source
	// Lines records line numbers; right for files a user wrote, wrong for
	// rendered chart output, whose lines are no template's lines.
	Lines bool
}

// FromManifests finds the images of every object in a YAML or JSON stream of
// Kubernetes objects (documents separated by ---, `kind: List` expanded).
// Pod specs of the workload kinds are read as typed specs; any other object is
// searched for `image` strings and split image maps. Env vars and ConfigMap
// values that look like images are maybes.
func FromManifests(data []byte, opts ManifestOptions) ([]Found, error) {
	w := &walker{lines: opts.Lines}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for i := 0; ; i++ {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			where := opts.Source.File
			if where == "" {
				where = "manifest"
			}
			return w.out, fmt.Errorf("%s: document %d: %w", where, i+1, err)
		}
		if len(doc.Content) == 0 {
			continue
		}
		src := opts.Source
		if file := helmSource(&doc); file != "" {
			src.File = file
		}
		w.object(doc.Content[0], src)
	}
	return w.out, nil
}

// FromValues finds image-shaped strings and split image maps in chart values
// (YAML or JSON). All are maybes: values feed templates, and an image that
// only appears here is pulled, if at all, by the running application.
func FromValues(data []byte, src Source) ([]Found, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	// Charts that repoint images with one value (BlueKing's imageRegistry,
	// Bitnami's global.imageRegistry) leave the registry out of split maps.
	root := doc.Content[0]
	reg := scalar(get(get(root, "global"), "imageRegistry"))
	if reg == "" {
		reg = scalar(get(root, "imageRegistry"))
	}
	w := &walker{defaultRegistry: reg}
	src.Certainty, src.Reason = Maybe, "image in the chart values"
	w.values(root, "", "", src)
	return w.out, nil
}

// FromChartAnnotation reads a chart's `helm.sh/images` (or
// `artifacthub.io/images`) annotation: a YAML list of {name, image}.
func FromChartAnnotation(key, value string, src Source) ([]Found, error) {
	var list []struct {
		Name  string `yaml:"name"`
		Image string `yaml:"image"`
	}
	if err := yaml.Unmarshal([]byte(value), &list); err != nil {
		return nil, fmt.Errorf("chart annotation %s: %w", key, err)
	}
	var out []Found
	for i, e := range list {
		s := src
		s.Certainty, s.Reason, s.Path = Maybe, "chart annotation "+key, fmt.Sprintf("annotations[%s][%d]", key, i)
		out = append(out, Found{Raw: e.Image, Source: s})
	}
	return out, nil
}

// FromImagesLock reads a Bitnami-style images.lock file (images[].image).
func FromImagesLock(data []byte, src Source) ([]Found, error) {
	var lock struct {
		Images []struct {
			Name  string `yaml:"name"`
			Image string `yaml:"image"`
		} `yaml:"images"`
	}
	if err := yaml.Unmarshal(data, &lock); err != nil {
		return nil, fmt.Errorf("images.lock: %w", err)
	}
	var out []Found
	for i, e := range lock.Images {
		s := src
		s.Certainty, s.Reason, s.Path = Maybe, "images.lock", fmt.Sprintf("images[%d].image", i)
		out = append(out, Found{Raw: e.Image, Source: s})
	}
	return out, nil
}

type walker struct {
	defaultRegistry string
	lines           bool
	out             []Found
	// aliased holds the anchors already walked: each is walked once, so nested
	// aliases ("billion laughs") cannot make a walk exponential.
	aliased map[*yaml.Node]bool
}

// firstVisit reports whether n is worth walking: anything but an alias to an
// anchor that was walked before.
func (w *walker) firstVisit(n *yaml.Node) bool {
	if n == nil || n.Kind != yaml.AliasNode {
		return true
	}
	if w.aliased == nil {
		w.aliased = map[*yaml.Node]bool{}
	}
	if w.aliased[n.Alias] {
		return false
	}
	w.aliased[n.Alias] = true
	return true
}

func (w *walker) emit(n *yaml.Node, raw, path string, src Source) {
	src.Path = path
	if w.lines && n != nil {
		src.Line = n.Line
	}
	w.out = append(w.out, Found{Raw: raw, Source: src})
}

// podKinds maps the workload kinds to where their pod spec lives.
var podKinds = map[string][]string{
	"Pod":                   {"spec"},
	"PodTemplate":           {"template", "spec"},
	"Deployment":            {"spec", "template", "spec"},
	"StatefulSet":           {"spec", "template", "spec"},
	"DaemonSet":             {"spec", "template", "spec"},
	"ReplicaSet":            {"spec", "template", "spec"},
	"ReplicationController": {"spec", "template", "spec"},
	"Job":                   {"spec", "template", "spec"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template", "spec"},
}

func (w *walker) object(n *yaml.Node, src Source) {
	if !w.firstVisit(n) {
		return
	}
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		return
	}
	kind := scalar(get(n, "kind"))
	meta := get(n, "metadata")
	src.Kind, src.Name = kind, scalar(get(meta, "name"))
	if ns := scalar(get(meta, "namespace")); ns != "" {
		src.Namespace = ns // else the release's namespace, if any
	}
	src.Certainty = Sure
	if strings.HasSuffix(kind, "List") {
		if items := deref(get(n, "items")); items != nil && items.Kind == yaml.SequenceNode {
			for _, it := range items.Content {
				w.object(it, Source{Helmfile: src.Helmfile, Release: src.Release, Chart: src.Chart,
					ChartVersion: src.ChartVersion, File: src.File})
			}
			return
		}
	}
	if path, ok := podKinds[kind]; ok {
		spec := n
		for _, k := range path {
			spec = get(spec, k)
		}
		if spec != nil {
			w.podSpec(spec, strings.Join(path, "."), src)
		}
		return
	}
	if kind == "ConfigMap" {
		if data := deref(get(n, "data")); data != nil && data.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(data.Content); i += 2 {
				k, v := data.Content[i].Value, deref(data.Content[i+1])
				if v.Kind == yaml.ScalarNode && looksLikeImage(k, v.Value) {
					s := src
					s.Certainty, s.Reason = Maybe, "image-shaped ConfigMap value"
					w.emit(v, v.Value, "data."+k, s)
				}
			}
		}
		return
	}
	// Unknown kinds and custom resources: search everything but metadata.
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if k == "metadata" || k == "apiVersion" || k == "kind" {
			continue
		}
		w.generic(n.Content[i+1], k, k, src)
	}
}

var containerLists = []string{"initContainers", "containers", "ephemeralContainers"}

func (w *walker) podSpec(spec *yaml.Node, path string, src Source) {
	spec = deref(spec)
	for _, list := range containerLists {
		seq := deref(get(spec, list))
		if seq == nil || seq.Kind != yaml.SequenceNode {
			continue
		}
		for i, c := range seq.Content {
			cpath := fmt.Sprintf("%s.%s[%d]", path, list, i)
			if img := deref(get(c, "image")); img != nil && img.Kind == yaml.ScalarNode {
				w.emit(img, img.Value, cpath+".image", src)
			}
			env := deref(get(c, "env"))
			if env == nil || env.Kind != yaml.SequenceNode {
				continue
			}
			for j, e := range env.Content {
				v := deref(get(e, "value"))
				if v != nil && v.Kind == yaml.ScalarNode && looksLikeImage(scalar(get(e, "name")), v.Value) {
					s := src
					s.Certainty, s.Reason = Maybe, "image-shaped env var "+scalar(get(e, "name"))
					w.emit(v, v.Value, fmt.Sprintf("%s.env[%d].value", cpath, j), s)
				}
			}
		}
	}
}

// isPodSpec says whether a map holds containers with images: a pod spec
// inside some other object (spec.template.spec, jobTemplate, a CR's podSpec).
func isPodSpec(n *yaml.Node) bool {
	seq := deref(get(n, "containers"))
	if seq == nil || seq.Kind != yaml.SequenceNode {
		return false
	}
	for _, c := range seq.Content {
		if get(c, "image") != nil {
			return true
		}
	}
	return false
}

// generic searches any object: pod specs, split image maps, `image` strings.
func (w *walker) generic(n *yaml.Node, key, path string, src Source) {
	if !w.firstVisit(n) {
		return
	}
	n = deref(n)
	switch n.Kind {
	case yaml.ScalarNode:
		if key == "image" && n.Tag == "!!str" {
			w.emit(n, n.Value, path, src)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			w.generic(c, key, fmt.Sprintf("%s[%d]", path, i), src)
		}
	case yaml.MappingNode:
		skip := map[string]bool{}
		if isPodSpec(n) {
			w.podSpec(n, path, src)
			for _, l := range containerLists {
				skip[l] = true
			}
		}
		if ref, used, ok := splitImage(n); ok {
			w.emit(n, ref, path, src)
			skip = used
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if skip[k] {
				continue
			}
			w.generic(n.Content[i+1], k, join(path, k), src)
		}
	}
}

// values searches chart values: split maps and image-shaped strings.
func (w *walker) values(n *yaml.Node, key, path string, src Source) {
	if !w.firstVisit(n) {
		return
	}
	n = deref(n)
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!str" && looksLikeImage(key, n.Value) {
			w.emit(n, n.Value, path, src)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			w.values(c, key, fmt.Sprintf("%s[%d]", path, i), src)
		}
	case yaml.MappingNode:
		skip := map[string]bool{}
		if ref, used, ok := splitImage(n); ok {
			if !used["registry"] && w.defaultRegistry != "" {
				ref = w.defaultRegistry + "/" + ref
			}
			s := src
			s.Reason = "split image map in the chart values"
			w.emit(n, ref, path, s)
			skip = used
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if !skip[k] {
				w.values(n.Content[i+1], k, join(path, k), src)
			}
		}
	}
}

// splitImage recognises a map that spells a reference in parts, as Bitnami
// and most operators do: {registry, repository, tag, digest}, or {image, tag}.
// It returns the joined reference and the keys it used.
func splitImage(n *yaml.Node) (string, map[string]bool, bool) {
	repoKey := "repository"
	repo := deref(get(n, repoKey))
	if repo == nil || repo.Kind != yaml.ScalarNode {
		repoKey = "image"
		repo = deref(get(n, repoKey))
		if repo == nil || repo.Kind != yaml.ScalarNode || (get(n, "tag") == nil && get(n, "digest") == nil && get(n, "registry") == nil) {
			return "", nil, false
		}
	}
	if repo.Value == "" || strings.Contains(repo.Value, "://") {
		return "", nil, false
	}
	used := map[string]bool{repoKey: true}
	part := func(k string) string {
		v := deref(get(n, k))
		if v == nil || v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			return ""
		}
		used[k] = true
		return strings.TrimSpace(v.Value)
	}
	ref := repo.Value
	if reg := strings.TrimSuffix(part("registry"), "/"); reg != "" {
		ref = reg + "/" + ref
	}
	if tag := part("tag"); tag != "" && !strings.Contains(ref[strings.LastIndex(ref, "/")+1:], ":") {
		ref += ":" + tag
	}
	if dig := part("digest"); dig != "" && !strings.Contains(ref, "@") {
		ref += "@" + dig
	}
	return ref, used, true
}

// imageShaped: host with a dot or port, a path, and a tag or digest. Strict on
// purpose: it judges free text (values, env vars), where a false hit costs a
// wasted pull and a miss only a maybe.
var imageShaped = regexp.MustCompile(`^(localhost|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+)(:[0-9]+)?/[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$`)

// looksLikeImage judges a free-text value by itself and by its key's name.
func looksLikeImage(key, v string) bool {
	v = strings.TrimSpace(v)
	if v == "" || strings.Contains(v, "://") {
		return false
	}
	if imageShaped.MatchString(v) && (strings.Contains(v, ":") || strings.Contains(v, "@")) {
		// A bare host/path with a port but no tag is too often a URL without scheme.
		last := v[strings.LastIndex(v, "/")+1:]
		return strings.ContainsAny(last, ":@")
	}
	k := strings.ToLower(key)
	if strings.Contains(k, "image") && !strings.Contains(k, "policy") && !strings.Contains(k, "secret") &&
		!strings.Contains(k, "registry") && !strings.Contains(k, "tag") {
		_, err := Normalize(v)
		return err == nil && !strings.HasPrefix(v, "/")
	}
	return false
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		return deref(n.Content[0])
	}
	return n
}

func get(n *yaml.Node, key string) *yaml.Node {
	n = deref(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func scalar(n *yaml.Node) string {
	n = deref(n)
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

// helmSource reads the template path from helm's "# Source: chart/templates/x.yaml" line.
func helmSource(doc *yaml.Node) string {
	comments := []string{doc.HeadComment}
	if len(doc.Content) > 0 {
		c := doc.Content[0]
		comments = append(comments, c.HeadComment)
		if len(c.Content) > 0 {
			comments = append(comments, c.Content[0].HeadComment)
		}
	}
	for _, c := range comments {
		for _, line := range strings.Split(c, "\n") {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "# Source: "); ok {
				return strings.TrimSpace(rest)
			}
		}
	}
	return ""
}
