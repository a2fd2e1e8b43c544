package images

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

type walker struct {
	// registry is the release's registry override for registry-less maybes;
	// registryKey the values key it came from, for reasons.
	registry    string
	registryKey string
	defaultTag  func(path string) (string, string)
	lines       bool
	// inData: walking the maps of a ConfigMap's data, where image-shaped
	// strings under other keys are maybes.
	inData     bool
	skipTests  bool
	lineOffset int // of the document being walked, in the stream
	out        []Found
	// aliased holds the anchors already walked: each is walked once, so nested
	// aliases ("billion laughs") cannot make a walk exponential.
	aliased map[*yaml.Node]bool
}

// isTestHook: helm's test hooks, run by `helm test`, not by a deployment.
func isTestHook(hook string) bool {
	for _, h := range strings.Split(hook, ",") {
		switch strings.TrimSpace(h) {
		case "test", "test-success", "test-failure":
			return true
		}
	}
	return false
}

// configMap reads a ConfigMap's data: maps and `image` keys are sure, as in
// any object (charts that declare their images for delivery render them
// so); image-shaped values and image keys in YAML or JSON held in a value
// are maybes.
func (w *walker) configMap(n *yaml.Node, src Source) {
	data := deref(get(n, "data"))
	if data == nil || data.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(data.Content); i += 2 {
		k, v := data.Content[i].Value, data.Content[i+1]
		path := "data." + k
		if !w.firstVisit(v) {
			continue
		}
		v = deref(v)
		switch {
		case v.Kind != yaml.ScalarNode:
			w.inData = true
			w.generic(v, k, path, src)
			w.inData = false
		case k == "image" && v.Tag == "!!str":
			w.emit(v, v.Value, path, src)
		case looksLikeImage(k, v.Value):
			w.maybe(v, v.Value, path, src, "image-shaped ConfigMap value")
		default:
			w.embedded(v, path, src)
		}
	}
}

// embedded reads YAML or JSON held in a string (a config file in a
// ConfigMap value) for image keys and split image maps.
func (w *walker) embedded(v *yaml.Node, path string, src Source) {
	text := strings.TrimSpace(v.Value)
	if !strings.Contains(text, "\n") && !strings.HasPrefix(text, "{") && !strings.HasPrefix(text, "[") {
		return
	}
	var doc yaml.Node
	if yaml.Unmarshal([]byte(text), &doc) != nil || len(doc.Content) == 0 {
		return
	}
	root := deref(doc.Content[0])
	if root.Kind != yaml.MappingNode && root.Kind != yaml.SequenceNode {
		return
	}
	inner := &walker{registry: w.registry, registryKey: w.registryKey}
	inner.values(root, "", "", src, "YAML/JSON in ConfigMap value "+path)
	for _, f := range inner.out {
		f.Source.Path = path + ": " + f.Source.Path
		if w.lines {
			f.Source.Line = v.Line
		}
		w.out = append(w.out, f)
	}
}

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
			for _, field := range []string{"command", "args"} {
				w.args(deref(get(c, field)), cpath+"."+field, src)
			}
			env := deref(get(c, "env"))
			if env == nil || env.Kind != yaml.SequenceNode {
				continue
			}
			for j, e := range env.Content {
				v := deref(get(e, "value"))
				if v != nil && v.Kind == yaml.ScalarNode && looksLikeImage(scalar(get(e, "name")), v.Value) {
					w.maybe(v, v.Value, fmt.Sprintf("%s.env[%d].value", cpath, j), src, "image-shaped env var "+scalar(get(e, "name")))
				}
			}
		}
	}
}

// args finds images an operator starts later, given in its flags:
// --<name>-image=REF or --<name>-image REF, and any flag whose value is a
// full reference (registry, path and tag or digest), as flags named after an
// injected sidecar carry (--config-reloader=quay.io/…:v0.70.0).
func (w *walker) args(seq *yaml.Node, path string, src Source) {
	if seq == nil || seq.Kind != yaml.SequenceNode {
		return
	}
	for i, a := range seq.Content {
		a = deref(a)
		if a.Kind != yaml.ScalarNode || !strings.HasPrefix(a.Value, "-") {
			continue
		}
		name, val, inline := strings.Cut(strings.TrimLeft(a.Value, "-"), "=")
		at, node := i, a
		if !inline {
			if i+1 >= len(seq.Content) {
				continue
			}
			node = deref(seq.Content[i+1])
			if node.Kind != yaml.ScalarNode || strings.HasPrefix(node.Value, "-") {
				continue
			}
			val, at = node.Value, i+1
		}
		if flagSaysImage(name) && looksLikeImage("image", val) || fullReference(val) {
			w.maybe(node, val, fmt.Sprintf("%s[%d]", path, at), src, "container arg --"+name)
		}
	}
}

func flagSaysImage(name string) bool {
	n := strings.ToLower(name)
	return strings.Contains(n, "image") && !strings.Contains(n, "policy") && !strings.Contains(n, "secret") &&
		!strings.Contains(n, "registry") && !strings.Contains(n, "tag")
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
		} else if w.inData && n.Tag == "!!str" && looksLikeImage(key, n.Value) {
			w.maybe(n, n.Value, path, src, "image-shaped ConfigMap value")
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
		if m, ok := splitImage(n); ok {
			w.emit(n, m.ref(), path, src)
			skip = m.used
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

// values searches values (chart values, or YAML held in a ConfigMap value)
// for split maps and image-shaped strings; all are maybes. where names the
// document for reasons.
func (w *walker) values(n *yaml.Node, key, path string, src Source, where string) {
	if !w.firstVisit(n) {
		return
	}
	n = deref(n)
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!str" && looksLikeImage(key, n.Value) {
			w.maybe(n, n.Value, path, src, "image in "+where)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			w.values(c, key, fmt.Sprintf("%s[%d]", path, i), src, where)
		}
	case yaml.MappingNode:
		skip := map[string]bool{}
		if m, ok := splitImage(n); ok {
			skip = m.used
			w.splitMaybe(n, m, path, src, where)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if !skip[k] {
				w.values(n.Content[i+1], k, join(path, k), src, where)
			}
		}
	}
}

// splitMaybe records a split map of values. Its registry, when it names
// none, is the release's override; an empty tag is completed only as the
// chart's templates complete it, or the map is dropped.
func (w *walker) splitMaybe(n *yaml.Node, m imageMap, path string, src Source, where string) {
	reason := "split image map in " + where
	name := m.name()
	if !strings.Contains(name, "/") && m.tag == "" && m.digest == "" {
		return // a single word and no tag: `repository: jetstack` is no image
	}
	if m.tag == "" && m.digest == "" {
		if w.defaultTag == nil {
			return
		}
		tag, why := w.defaultTag(path)
		if tag == "" {
			return
		}
		m.tag = tag
		reason += "; tag " + why
	}
	// A global override (Bitnami's global.imageRegistry, BlueKing's
	// imageRegistry) wins over the map's own registry, as those charts
	// render it; a component registry (cmdb's image.registry) only fills in.
	global := w.registryKey == "global.imageRegistry" || w.registryKey == "imageRegistry"
	if w.registry != "" && m.registry != w.registry && (m.registry == "" && !hasRegistry(name) || global && m.registry != "") {
		m.registry = w.registry
		reason += "; registry " + w.registry
		if w.registryKey != "" {
			reason += " from " + w.registryKey
		}
	}
	if !plausible(m.ref()) {
		return
	}
	src.Certainty, src.Reason = Maybe, reason
	w.emit(n, m.ref(), path, src)
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
	if path == "" {
		path = "." // the document itself
	}
	src.Path = path
	if w.lines && n != nil {
		src.Line = n.Line + w.lineOffset
	}
	w.out = append(w.out, Found{Raw: raw, Source: src})
}

// maybe records a run-time image candidate, if it is plausibly an image,
// with the release's registry override in front when it names no registry.
func (w *walker) maybe(n *yaml.Node, raw, path string, src Source, reason string) {
	raw = strings.TrimSpace(raw)
	if !plausible(raw) {
		return
	}
	if w.registry != "" && !hasRegistry(raw) {
		raw = w.registry + "/" + raw
		reason += "; registry " + w.registry
		if w.registryKey != "" {
			reason += " from " + w.registryKey
		} else {
			reason += ", the release's registry override"
		}
	}
	src.Certainty, src.Reason = Maybe, reason
	w.emit(n, raw, path, src)
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
	if w.skipTests && isTestHook(scalar(get(get(meta, "annotations"), "helm.sh/hook"))) {
		return
	}
	src.Kind, src.Name = kind, scalar(get(meta, "name"))
	if ns := scalar(get(meta, "namespace")); ns != "" {
		src.Namespace = ns // else the release's namespace, if any
	}
	src.Certainty = Sure
	if strings.HasSuffix(kind, "List") {
		if items := deref(get(n, "items")); items != nil && items.Kind == yaml.SequenceNode {
			for _, it := range items.Content {
				w.object(it, Source{Helmfile: src.Helmfile, Release: src.Release, Chart: src.Chart,
					ChartVersion: src.ChartVersion, File: src.File, ImageRegistry: src.ImageRegistry})
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
		w.configMap(n, src)
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
