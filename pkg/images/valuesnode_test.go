package images

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"go.yaml.in/yaml/v3"
)

// Findings in values are the same from the directly built node tree as from
// Node.Encode's round trip through YAML text, for every values file of the
// tests, with numbers as YAML decodes them (int) and as helm's JSON-based
// loader does (float64), and with --set's int64.
func TestValuesNodeFindsAsEncode(t *testing.T) {
	var files []string
	filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error { //nolint:errcheck // test walk
		if err == nil && !d.IsDir() && filepath.Base(p) == "values.yaml" {
			files = append(files, p)
		}
		return nil
	})
	if len(files) < 10 {
		t.Fatalf("found %d values files", len(files))
	}
	extra := map[string]any{
		"image":    map[string]any{"registry": "r.io", "repository": "a/b", "tag": 1.2},
		"sidecar":  map[string]any{"repository": "x/y", "tag": int64(3)},
		"pinned":   map[string]any{"repository": "x/z", "digest": nil, "tag": true},
		"list":     []any{"busybox:1.36", map[string]any{"image": "lib/c:2"}, nil, 7.0},
		"named":    map[string]int{"n": 1},
		"imageRef": "quay.io/org/tool:v1",
	}
	checked := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var vals map[string]any
		if yaml.Unmarshal(data, &vals) != nil || vals == nil {
			continue
		}
		for _, v := range []map[string]any{vals, toFloats(vals).(map[string]any), merged(vals, extra)} {
			direct, err := valuesNode(v)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var encoded yaml.Node
			if err := encoded.Encode(v); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			opts := ValuesOptions{DefaultTag: func(string) (string, string) { return "1.0", "appVersion" }}
			got, want := sortedFound(fromValues(direct, opts)), sortedFound(fromValues(&encoded, opts))
			if !slices.Equal(got, want) {
				t.Errorf("%s: direct tree finds\n%v\nNode.Encode finds\n%v", f, got, want)
			}
			checked++
		}
	}
	if checked < 30 {
		t.Errorf("checked %d values trees", checked)
	}
}

func sortedFound(found []Found) []string {
	out := make([]string, 0, len(found))
	for _, f := range found {
		out = append(out, fmt.Sprintf("%+v", f))
	}
	slices.Sort(out)
	return out
}

func toFloats(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range t {
			out[k] = toFloats(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = toFloats(e)
		}
		return out
	case int:
		return float64(t)
	default:
		return v
	}
}

func merged(a, b map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}
