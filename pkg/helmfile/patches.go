package helmfile

import (
	"bytes"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/kio"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"
	"sigs.k8s.io/yaml"

	"github.com/bkcache/bkcache/pkg/userfile"
)

// This file applies a release's strategicMergePatches and jsonPatches to
// its rendered objects as helmfile does: helmfile hands them to chartify,
// which writes the rendered chart as kustomize resources, each patch as a
// `patches:` entry (a JSON patch with its target), and runs kustomize build.
// Here kustomize's own library (krusty) runs over an in-memory file system.

// releasePatches are a release's patches, read and templated at load.
type releasePatches struct {
	strategic [][]byte // one strategic merge patch document each
	json      []jsonPatch
}

type jsonPatch struct {
	target map[string]any
	ops    []byte // the operations, a YAML list
}

func (p releasePatches) empty() bool { return len(p.strategic) == 0 && len(p.json) == 0 }

// loadPatches reads a release's patches: inline maps as written, strings as
// files relative to the helmfile, rendered first when they are .gotmpl, as
// helmfile renders them, with the release's template data.
func (l *stateLoader) loadPatches(st *state, s releaseSpec, data any) (releasePatches, error) {
	var out releasePatches
	read := func(field string, i int, v any) ([]byte, error) {
		switch x := v.(type) {
		case map[string]any, []any:
			return yaml.Marshal(x)
		case string:
			p := x
			if !filepath.IsAbs(p) {
				p = filepath.Join(st.dir, p)
			}
			b, err := userfile.Read(p)
			if err != nil {
				return nil, fmt.Errorf("%s[%d]: %w", field, i, err)
			}
			if isTemplate(p) {
				if b, err = renderTemplate(p, string(b), 1, data, true); err != nil {
					return nil, fmt.Errorf("%s[%d] %s: %w", field, i, p, err)
				}
			}
			return b, nil
		}
		return nil, fmt.Errorf("%s[%d]: want a map or a file name, got %T", field, i, v)
	}
	for i, v := range s.StrategicMergePatches {
		b, err := read("strategicMergePatches", i, v)
		if err != nil {
			return out, err
		}
		for _, doc := range splitDocs(b) {
			out.strategic = append(out.strategic, doc)
		}
	}
	for i, v := range s.JSONPatches {
		b, err := read("jsonPatches", i, v)
		if err != nil {
			return out, err
		}
		var e struct {
			Target map[string]any `json:"target"`
			Patch  []any          `json:"patch"`
		}
		if err := yaml.Unmarshal(b, &e); err != nil {
			return out, fmt.Errorf("jsonPatches[%d]: %w", i, err)
		}
		if len(e.Patch) == 0 {
			return out, fmt.Errorf("jsonPatches[%d]: no patch: (a list of JSON patch operations) given", i)
		}
		ops, _ := yaml.Marshal(e.Patch)
		out.json = append(out.json, jsonPatch{target: e.Target, ops: ops})
	}
	return out, nil
}

// splitDocs splits a YAML stream into its non-empty documents.
func splitDocs(b []byte) [][]byte {
	var out [][]byte
	for _, d := range partSep.Split(string(b), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			out = append(out, []byte(d))
		}
	}
	return out
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// helmSeparator is a document separator as helm's release manifests
// splitting reads it: "---" at the start or after a newline, whatever
// follows it on the line.
var helmSeparator = regexp.MustCompile(`(?:^|\s*\n)---\s*`)

// sourceAnnotation carries each object's "# Source:" file through kustomize,
// so the patched objects keep the names they were rendered under.
const sourceAnnotation = "bkcache.io/helm-source"

// applyPatches runs kustomize build over the rendered files (each headed by
// helm's "# Source:" line) with the patches, and returns the patched files.
func applyPatches(files []string, p releasePatches) ([]string, error) {
	fs := filesys.MakeFsInMemory()
	var all []*kyaml.RNode
	for _, f := range files {
		head, body, _ := strings.Cut(f, "\n")
		source := strings.TrimPrefix(head, "# Source: ")
		nodes, err := (&kio.ByteReader{Reader: strings.NewReader(body), OmitReaderAnnotations: true}).Read()
		if err != nil {
			return nil, fmt.Errorf("patch: read %s: %w", source, err)
		}
		for _, n := range nodes {
			if err := n.PipeE(kyaml.SetAnnotation(sourceAnnotation, source)); err != nil {
				return nil, fmt.Errorf("patch: %s: %w", source, err)
			}
		}
		all = append(all, nodes...)
	}
	var res bytes.Buffer
	if err := (kio.ByteWriter{Writer: &res}).Write(all); err != nil {
		return nil, err
	}
	var k strings.Builder
	k.WriteString("resources:\n- resources.yaml\npatches:\n")
	write := func(name string, data []byte) error { return fs.WriteFile("/"+name, data) }
	for i, smp := range p.strategic {
		name := fmt.Sprintf("strategic-%d.yaml", i)
		if err := write(name, smp); err != nil {
			return nil, err
		}
		fmt.Fprintf(&k, "- path: %s\n", name)
	}
	for i, jp := range p.json {
		name := fmt.Sprintf("json-%d.yaml", i)
		if err := write(name, jp.ops); err != nil {
			return nil, err
		}
		entry := map[string]any{"path": name}
		if jp.target != nil {
			entry["target"] = jp.target
		}
		b, err := yaml.Marshal([]any{entry})
		if err != nil {
			return nil, err
		}
		k.Write(b)
	}
	if err := write("resources.yaml", res.Bytes()); err != nil {
		return nil, err
	}
	if err := write("kustomization.yaml", []byte(k.String())); err != nil {
		return nil, err
	}
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, "/")
	if err != nil {
		return nil, fmt.Errorf("patch (kustomize build): %w", err)
	}
	bySource := map[string][]string{}
	var order []string
	for _, r := range rm.Resources() {
		annotations := r.GetAnnotations()
		source := annotations[sourceAnnotation]
		delete(annotations, sourceAnnotation)
		if err := r.SetAnnotations(annotations); err != nil {
			return nil, err
		}
		b, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		if !slices.Contains(order, source) {
			order = append(order, source)
		}
		bySource[source] = append(bySource[source], string(b))
	}
	out := make([]string, 0, len(order))
	for _, s := range order {
		out = append(out, "# Source: "+s+"\n"+strings.Join(bySource[s], "---\n"))
	}
	return out, nil
}
