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
	// Registry is the registry override the release renders with
	// (global.imageRegistry and the like): a maybe written without a
	// registry is pulled from there, not from Docker Hub.
	Registry string
	// SkipTestHooks leaves out objects annotated `helm.sh/hook: test`.
	SkipTestHooks bool
}

// FromManifests finds the images of every object in a YAML or JSON stream of
// Kubernetes objects (documents separated by ---, `kind: List` expanded).
// Pod specs of the workload kinds are read as typed specs; any other object is
// searched for `image` strings and split image maps, ConfigMap data
// included. Env vars, container args naming an image, ConfigMap values that
// look like images and image keys in YAML or JSON held in ConfigMap values
// are maybes.
func FromManifests(data []byte, opts ManifestOptions) ([]Found, error) {
	w := &walker{lines: opts.Lines, registry: opts.Registry, skipTests: opts.SkipTestHooks}
	where := opts.Source.File
	if where == "" {
		where = "manifest"
	}
	n := 0
	for _, chunk := range splitDocuments(data) {
		// Kinds that hold no image are not parsed: on a large chart they are
		// a third of the output, and CRDs can be megabytes of schema.
		if noImages.Match(chunk.text) {
			n++
			continue
		}
		dec := yaml.NewDecoder(bytes.NewReader(chunk.text))
		for {
			var doc yaml.Node
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			n++
			if err != nil {
				return w.out, fmt.Errorf("%s: document %d (from line %d): %w", where, n, chunk.line, err)
			}
			if len(doc.Content) == 0 {
				continue
			}
			src := opts.Source
			if file := helmSource(&doc); file != "" {
				src.File = file
			}
			w.lineOffset = chunk.line - 1
			w.object(doc.Content[0], src)
		}
	}
	return w.out, nil
}

// noImages matches a document whose kind holds no image: no pod spec, no
// image field, no configuration.
var noImages = regexp.MustCompile(`(?m)^kind:[ \t]*["']?(Service|ServiceAccount|Role|RoleBinding|ClusterRole|ClusterRoleBinding|PersistentVolumeClaim|PersistentVolume|PodDisruptionBudget|NetworkPolicy|Ingress|IngressClass|HorizontalPodAutoscaler|PriorityClass|StorageClass|Endpoints|EndpointSlice|Namespace|ResourceQuota|LimitRange|CustomResourceDefinition|APIService|ValidatingWebhookConfiguration|MutatingWebhookConfiguration|Lease)["']?[ \t]*(#.*)?$`)

type docChunk struct {
	text []byte
	line int // of the chunk's first line in the stream
}

// splitDocuments cuts a YAML stream at its `---` lines (a line starting
// with --- always starts a document: block scalars are indented).
func splitDocuments(data []byte) []docChunk {
	var out []docChunk
	start, line, startLine := 0, 1, 1
	for i := 0; i < len(data); {
		j := bytes.IndexByte(data[i:], '\n')
		end := len(data)
		if j >= 0 {
			end = i + j + 1
		}
		l := data[i:end]
		if bytes.HasPrefix(l, []byte("---")) && (len(l) == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\n' || l[3] == '\r') {
			if i > start {
				out = append(out, docChunk{data[start:i], startLine})
			}
			start, startLine = i, line
		}
		i, line = end, line+1
	}
	if start < len(data) {
		out = append(out, docChunk{data[start:], startLine})
	}
	return out
}

// ValuesOptions says how to read chart values.
type ValuesOptions struct {
	Source Source
	// Registry is the registry override the release renders with; when
	// empty, the values' own (ValuesRegistry) is used.
	Registry string
	// DefaultTag completes a split map whose tag is empty as the chart's
	// templates would: it gets the map's values path and returns the tag and
	// why ("" drops the map: a tag is never invented). Nil drops them all.
	DefaultTag func(path string) (tag, why string)
}

// FromValues finds image-shaped strings and split image maps in chart values
// (YAML or JSON). All are maybes: values feed templates, and an image that
// only appears here is pulled, if at all, by the running application.
func FromValues(data []byte, opts ValuesOptions) ([]Found, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	return fromValues(doc.Content[0], opts), nil
}

// FromValuesTree is FromValues of values already decoded (helm's merged
// values), without a round trip through YAML text.
func FromValuesTree(values map[string]any, opts ValuesOptions) ([]Found, error) {
	var root yaml.Node
	if err := root.Encode(values); err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	return fromValues(&root, opts), nil
}

func fromValues(root *yaml.Node, opts ValuesOptions) []Found {
	reg, key := opts.Registry, ""
	if reg == "" {
		reg, key = valuesRegistry(root)
	}
	w := &walker{registry: reg, registryKey: key, defaultTag: opts.DefaultTag}
	src := opts.Source
	src.Certainty = Maybe
	w.values(root, "", "", src, "the chart values")
	return w.out
}

// ValuesRegistry returns the registry override chart values set and its key:
// global.imageRegistry (Bitnami, BlueKing), imageRegistry, or image.registry
// when `image` holds only a registry (cmdb). Charts that repoint images with
// one value leave the registry out of their split maps.
func ValuesRegistry(values map[string]any) (registry, key string) {
	var root yaml.Node
	if root.Encode(values) != nil {
		return "", ""
	}
	return valuesRegistry(&root)
}

func valuesRegistry(root *yaml.Node) (string, string) {
	if reg := scalar(get(get(root, "global"), "imageRegistry")); reg != "" {
		return strings.TrimSuffix(reg, "/"), "global.imageRegistry"
	}
	if reg := scalar(get(root, "imageRegistry")); reg != "" {
		return strings.TrimSuffix(reg, "/"), "imageRegistry"
	}
	if img := get(root, "image"); get(img, "repository") == nil {
		if reg := scalar(get(img, "registry")); reg != "" {
			return strings.TrimSuffix(reg, "/"), "image.registry"
		}
	}
	return "", ""
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

// imageMap is a reference spelled in parts.
type imageMap struct {
	registry, repository, tag, digest string
	used                              map[string]bool
}

func (m imageMap) name() string {
	if m.registry == "" {
		return m.repository
	}
	return m.registry + "/" + m.repository
}

func (m imageMap) ref() string {
	ref := m.name()
	if m.tag != "" && !strings.Contains(ref[strings.LastIndex(ref, "/")+1:], ":") {
		ref += ":" + m.tag
	}
	if m.digest != "" && !strings.Contains(ref, "@") {
		ref += "@" + m.digest
	}
	return ref
}

// splitImage recognises a map that spells a reference in parts, as Bitnami
// and most operators do: {registry, repository, tag, digest}, or {image, tag}.
func splitImage(n *yaml.Node) (imageMap, bool) {
	repoKey := "repository"
	repo := deref(get(n, repoKey))
	if repo == nil || repo.Kind != yaml.ScalarNode {
		repoKey = "image"
		repo = deref(get(n, repoKey))
		if repo == nil || repo.Kind != yaml.ScalarNode || (get(n, "tag") == nil && get(n, "digest") == nil && get(n, "registry") == nil) {
			return imageMap{}, false
		}
	}
	if repo.Value == "" || strings.Contains(repo.Value, "://") {
		return imageMap{}, false
	}
	m := imageMap{repository: strings.TrimSpace(repo.Value), used: map[string]bool{repoKey: true}}
	part := func(k string) string {
		v := deref(get(n, k))
		if v == nil || v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			return ""
		}
		m.used[k] = true
		return strings.TrimSpace(v.Value)
	}
	m.registry = strings.TrimSuffix(part("registry"), "/")
	m.tag, m.digest = part("tag"), part("digest")
	return m, true
}

// imageShaped: host with a dot or port, a path, and a tag or digest. Strict on
// purpose: it judges free text (values, env vars), where a false hit costs a
// wasted pull and a miss only a maybe.
var imageShaped = regexp.MustCompile(`^(localhost|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+)(:[0-9]+)?/[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$`)

// fullReference: a registry host, a path and a tag or digest.
func fullReference(v string) bool {
	v = strings.TrimSpace(v)
	if !imageShaped.MatchString(v) {
		return false
	}
	// A bare host/path with a port but no tag is too often a URL without scheme.
	return strings.ContainsAny(v[strings.LastIndex(v, "/")+1:], ":@")
}

// looksLikeImage judges a free-text value by itself and by its key's name.
func looksLikeImage(key, v string) bool {
	v = strings.TrimSpace(v)
	if v == "" || strings.Contains(v, "://") {
		return false
	}
	if fullReference(v) {
		return true
	}
	k := strings.ToLower(key)
	if strings.Contains(k, "image") && !strings.Contains(k, "policy") && !strings.Contains(k, "secret") &&
		!strings.Contains(k, "registry") && !strings.Contains(k, "tag") && !strings.Contains(k, "port") {
		_, err := Normalize(v)
		return err == nil && !strings.HasPrefix(v, "/") && plausible(v)
	}
	return false
}

// plausible rejects what parses as a reference but is no image: a bare
// number ("80"), or a single word with no tag, digest or slash ("jetstack").
func plausible(v string) bool {
	if v == "" || !strings.ContainsAny(v, "/:@") {
		return false
	}
	name := v
	if i := strings.IndexAny(name, "@"); i >= 0 {
		name = name[:i]
	}
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	return strings.Trim(name, "0123456789.") != ""
}

// hasRegistry says whether a reference names its registry: a first
// component with a dot or a port, or localhost.
func hasRegistry(ref string) bool {
	first, _, ok := strings.Cut(ref, "/")
	return ok && (strings.ContainsAny(first, ".:") || first == "localhost")
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
