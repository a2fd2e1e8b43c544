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
	root, err := valuesNode(values)
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	return fromValues(root, opts), nil
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
	// Looked up in the maps themselves: encoding a big chart's values into
	// YAML nodes only to read three keys took a tenth of an images run.
	if reg := valueString(valueMap(values["global"])["imageRegistry"]); reg != "" {
		return strings.TrimSuffix(reg, "/"), "global.imageRegistry"
	}
	if reg := valueString(values["imageRegistry"]); reg != "" {
		return strings.TrimSuffix(reg, "/"), "imageRegistry"
	}
	if img := valueMap(values["image"]); img != nil {
		if _, ok := img["repository"]; !ok {
			if reg := valueString(img["registry"]); reg != "" {
				return strings.TrimSuffix(reg, "/"), "image.registry"
			}
		}
	}
	return "", ""
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

var containerLists = []string{"initContainers", "containers", "ephemeralContainers"}

// imageShaped: host with a dot or port, a path, and a tag or digest. Strict on
// purpose: it judges free text (values, env vars), where a false hit costs a
// wasted pull and a miss only a maybe.
var imageShaped = regexp.MustCompile(`^(localhost|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+)(:[0-9]+)?/[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$`)
