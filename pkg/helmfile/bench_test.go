package helmfile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkImagesHelmfile renders a 32-release helmfile of local charts shaped
// like BlueKing's (subcharts with conditions, split image maps, hooks, CRDs,
// custom resources, .gotmpl values).
//
//	go test -run '^$' -bench BenchmarkImages -benchtime 5x ./pkg/helmfile/
func BenchmarkImagesHelmfile(b *testing.B) {
	dir := b.TempDir()
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	var h strings.Builder
	h.WriteString("environments:\n  default:\n    values:\n      - imageRegistry: hub.bktencent.com\n---\nreleases:\n")
	for i := 0; i < 32; i++ {
		chart := abs("testdata/charts/web")
		if i%2 == 1 {
			chart = abs("testdata/charts/bkapp")
		}
		fmt.Fprintf(&h, "  - name: r%02d\n    namespace: blueking\n    chart: %s\n    labels: {seq: s%d}\n    values:\n      - imageRegistry: {{ .Values.imageRegistry }}\n        global: {imageRegistry: {{ .Values.imageRegistry }}}\n        image: {repository: blueking/app-%02d}\n", i, chart, i%4, i)
	}
	if err := os.WriteFile(filepath.Join(dir, "helmfile.yaml.gotmpl"), []byte(h.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		l, err := Images(context.Background(), dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if l.Len() < 32 {
			b.Fatalf("%d images, want at least 32", l.Len())
		}
	}
}
