package helmfile

import (
	"bufio"
	"context"
	"errors"
	"io"
	"io/fs"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/bkcache/bkcache/pkg/images"
	"github.com/google/go-containerregistry/pkg/name"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/strvals"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// TestIndependentCheck: for every fixture chart, the sure list equals what a
// separate, plain walk of the helm SDK's own render finds. The walk below
// shares no code with pkg/images: it decodes the manifests and hooks into maps
// and collects pod-spec images of the workload kinds, and `image` strings and
// registry/repository/tag/digest maps of every other object.
func TestIndependentCheck(t *testing.T) {
	// Extra value sets flip the fixtures' conditions and overrides; every
	// chart is also rendered with its defaults.
	extra := map[string][][]string{
		"web": {
			{"metrics.enabled=true", "redis.enabled=false"},
			{"global.imageRegistry=reg.example:5000"},
			{"image.digest=sha256:" + strings.Repeat("ab", 32)},
		},
		"operators": {
			{"debug.enabled=false", "registry=reg.example:5000"},
		},
		"bkapp": {
			{"operator.enabled=false"},
			{"imageRegistry=10.0.0.1:5500", "image.tag=9"},
		},
	}
	var charts []string
	err := filepath.WalkDir("testdata", func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && d.Name() == "corpus" {
			return filepath.SkipDir // its charts need their file:// dependencies built: corpus_test.go
		}
		if err == nil && d.Name() == "Chart.yaml" {
			charts = append(charts, filepath.Dir(p))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(charts) < 4 {
		t.Fatalf("found %d fixture charts, want web, bkapp and their subcharts: %v", len(charts), charts)
	}
	for _, dir := range charts {
		sets := append([][]string{nil}, extra[filepath.Base(dir)]...)
		for _, set := range sets {
			for _, tests := range []bool{false, true} {
				t.Run(dir+"/"+strings.Join(set, ",")+map[bool]string{true: "/include-tests"}[tests], func(t *testing.T) {
					want := walkHelmRender(t, dir, set, tests)
					if len(want) == 0 {
						t.Fatalf("the walk found no image in %s: the fixture or the walk is broken", dir)
					}
					l, err := ChartImages(context.Background(), ChartOptions{Chart: dir, Set: set, RenderOptions: RenderOptions{IncludeTests: tests}})
					if err != nil {
						t.Fatal(err)
					}
					got := sureRefs(t, l)
					if !slices.Equal(got, want) {
						t.Errorf("sure list differs from the helm SDK walk\n got: %v\nwant: %v", got, want)
					}
				})
			}
		}
	}
}

// walkHelmRender renders a chart with the helm SDK as `helm template
// --include-crds` does and walks what it produced.
func walkHelmRender(t *testing.T, dir string, set []string, includeTests bool) []string {
	t.Helper()
	chrt, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]any{}
	for _, s := range set {
		if err := strvals.ParseInto(s, vals); err != nil {
			t.Fatal(err)
		}
	}
	inst := action.NewInstall(&action.Configuration{})
	inst.DryRun, inst.DryRunOption, inst.ClientOnly, inst.IncludeCRDs, inst.Replace = true, "client", true, true, true
	inst.ReleaseName, inst.Namespace = chrt.Name(), "default"
	rel, err := inst.Run(chrt, vals)
	if err != nil {
		t.Fatalf("helm render of %s: %v", dir, err)
	}
	docs := []string{rel.Manifest}
	for _, h := range rel.Hooks {
		if includeTests || !slices.Contains(h.Events, release.HookTest) {
			docs = append(docs, h.Manifest)
		}
	}
	seen := map[string]bool{}
	for _, d := range docs {
		for _, ref := range manifestRefs(t, d) {
			seen[ref] = true
		}
	}
	var out []string
	for r := range seen {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// podSpecPath is where the workload kinds keep their pod spec.
var podSpecPath = map[string][]string{
	"Pod":                   {"spec"},
	"Deployment":            {"spec", "template", "spec"},
	"StatefulSet":           {"spec", "template", "spec"},
	"DaemonSet":             {"spec", "template", "spec"},
	"ReplicaSet":            {"spec", "template", "spec"},
	"ReplicationController": {"spec", "template", "spec"},
	"Job":                   {"spec", "template", "spec"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template", "spec"},
}

func objectImages(obj map[string]any) []string {
	if obj == nil {
		return nil
	}
	kind, _ := obj["kind"].(string)
	if path, ok := podSpecPath[kind]; ok {
		var spec any = obj
		for _, k := range path {
			m, _ := spec.(map[string]any)
			spec = m[k]
		}
		var out []string
		m, _ := spec.(map[string]any)
		for _, list := range []string{"containers", "initContainers", "ephemeralContainers"} {
			cs, _ := m[list].([]any)
			for _, c := range cs {
				cm, _ := c.(map[string]any)
				if img, ok := cm["image"].(string); ok {
					out = append(out, img)
				}
			}
		}
		return out
	}
	var out []string
	for k, v := range obj {
		if k != "metadata" && k != "kind" && k != "apiVersion" {
			out = append(out, anyImages(k, v)...)
		}
	}
	return out
}

// anyImages: `image` strings, and maps with a repository (or image) and a
// registry, tag or digest beside it.
func anyImages(key string, v any) []string {
	switch x := v.(type) {
	case string:
		if key == "image" {
			return []string{x}
		}
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, anyImages(key, e)...)
		}
		return out
	case map[string]any:
		repo, _ := x["repository"].(string)
		if repo == "" {
			repo, _ = x["image"].(string)
		}
		reg, _ := x["registry"].(string)
		tag, _ := x["tag"].(string)
		dig, _ := x["digest"].(string)
		if repo != "" && (reg != "" || tag != "" || dig != "" || x["repository"] != nil) {
			ref := repo
			if reg != "" {
				ref = reg + "/" + ref
			}
			if tag != "" {
				ref += ":" + tag
			}
			if dig != "" {
				ref += "@" + dig
			}
			return []string{ref}
		}
		var out []string
		for k, e := range x {
			out = append(out, anyImages(k, e)...)
		}
		return out
	}
	return nil
}

// manifestRefs are the images of every object in a rendered manifest, each
// spelled canonically, in order.
func manifestRefs(t *testing.T, manifest string) []string {
	t.Helper()
	var out []string
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifest)))
	for {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(raw, &obj); err != nil {
			t.Fatalf("decode rendered object: %v\n%s", err, raw)
		}
		for _, ref := range objectImages(obj) {
			out = append(out, canonical(t, ref))
		}
	}
}

// sureRefs are a list's sure images, spelled canonically, sorted.
func sureRefs(t *testing.T, l *images.List) []string {
	t.Helper()
	var got []string
	for _, img := range l.Images(false) {
		got = append(got, canonical(t, img.Reference))
	}
	sort.Strings(got)
	return got
}

// canonical spells a reference one way for comparison, with
// go-containerregistry alone: repository with registry, then tag or digest.
func canonical(t *testing.T, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatalf("reference %q: %v", ref, err)
	}
	if d, ok := r.(name.Digest); ok {
		return d.Context().Name() + "@" + d.DigestStr()
	}
	return r.Context().Name() + ":" + r.Identifier()
}
