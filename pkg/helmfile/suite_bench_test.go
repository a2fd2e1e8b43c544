package helmfile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
)

// suiteSize is the generated suite: subs sub-helmfiles of perSub releases,
// every sub-helmfile taking the shared environments base, whose values
// template calls derivePassword passwords times.
const (
	suiteSubs      = 8
	suitePerSub    = 8
	suitePasswords = 6
)

// writeSuite writes a suite shaped like public multi-helmfile deployments
// and returns its root and the environment values template.
func writeSuite(tb testing.TB) (string, string) {
	dir := tb.TempDir()
	chart, err := filepath.Abs("testdata/charts/web")
	if err != nil {
		tb.Fatal(err)
	}
	write := func(name, text string) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	var pw strings.Builder
	pw.WriteString("imageRegistry: registry.example\npasswords:\n")
	for i := range suitePasswords {
		fmt.Fprintf(&pw, "  p%d: {{ derivePassword 1 \"long\" \"secret\" \"user%d\" \"example.com\" | quote }}\n", i, i)
	}
	write("values.yaml.gotmpl", pw.String())
	// Paths in a base are relative to the helmfile that takes it.
	write("environments.yaml", "environments:\n  default:\n    values:\n      - ../../values.yaml.gotmpl\n")
	var root strings.Builder
	root.WriteString("helmfiles:\n")
	for s := range suiteSubs {
		fmt.Fprintf(&root, "  - apps/app%d/helmfile.yaml.gotmpl\n", s)
		var h strings.Builder
		h.WriteString("bases:\n  - ../../environments.yaml\n---\nreleases:\n")
		for r := range suitePerSub {
			fmt.Fprintf(&h, "  - name: app%d-%d\n    namespace: app%d\n    chart: %s\n    values:\n      - image: {registry: {{ .Values.imageRegistry }}, repository: corp/app%d-%d}\n        password: {{ .Values.passwords.p0 | quote }}\n", s, r, s, chart, s, r)
		}
		write(fmt.Sprintf("apps/app%d/helmfile.yaml.gotmpl", s), h.String())
	}
	write("helmfile.yaml", root.String())
	return dir, filepath.Join(dir, "values.yaml.gotmpl")
}

// BenchmarkSuiteVsResolvePlusTemplate times Images over the generated suite
// (64 releases, derivePassword in the environment's values) against an
// independent resolver: the values template rendered once, then one helm
// template (the helm SDK's client-only install) per release, one after
// another; Images runs one render at a time too. Target: ours/peer ≤ 1.2.
//
//	go test -run '^$' -bench BenchmarkSuiteVsResolvePlusTemplate -benchtime 3x ./pkg/helmfile/
func BenchmarkSuiteVsResolvePlusTemplate(b *testing.B) {
	dir, valuesTemplate := writeSuite(b)
	chart, _ := filepath.Abs("testdata/charts/web")
	var ours, peer time.Duration
	n := 0
	for b.Loop() {
		start := time.Now()
		l, err := Images(context.Background(), dir, Options{Parallel: 1})
		if err != nil {
			b.Fatal(err)
		}
		if l.Len() < suiteSubs*suitePerSub {
			b.Fatalf("%d images, want at least %d", l.Len(), suiteSubs*suitePerSub)
		}
		ours += time.Since(start)

		start = time.Now()
		vals, err := readValuesFile(valuesTemplate, templateData("default", nil, nil))
		if err != nil {
			b.Fatal(err)
		}
		for s := range suiteSubs {
			for r := range suitePerSub {
				chrt, err := loader.Load(chart)
				if err != nil {
					b.Fatal(err)
				}
				inst := action.NewInstall(&action.Configuration{})
				inst.DryRun, inst.DryRunOption, inst.ClientOnly, inst.IncludeCRDs, inst.Replace = true, "client", true, true, true
				inst.ReleaseName, inst.Namespace = fmt.Sprintf("app%d-%d", s, r), fmt.Sprintf("app%d", s)
				relVals := map[string]any{"image": map[string]any{"registry": vals["imageRegistry"], "repository": fmt.Sprintf("corp/app%d-%d", s, r)}}
				if _, err := inst.Run(chrt, relVals); err != nil {
					b.Fatal(err)
				}
			}
		}
		peer += time.Since(start)
		n++
	}
	b.ReportMetric(ours.Seconds()/float64(n), "ours-s/op")
	b.ReportMetric(peer.Seconds()/float64(n), "peer-s/op")
	ratio := float64(ours) / float64(peer)
	b.ReportMetric(ratio, "ours/peer")
	verdict := "met"
	if ratio > 1.2 {
		verdict = "MISSED"
	}
	b.Logf("%d releases, %d runs: ours %.2f s, resolve + helm template per release %.2f s; ours/peer %.2f (target ≤ 1.2: %s)",
		suiteSubs*suitePerSub, n, ours.Seconds()/float64(n), peer.Seconds()/float64(n), ratio, verdict)
}
