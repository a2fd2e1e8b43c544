package helmfile

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// benchRelease is one release of the benchmark helmfile, with the values a
// `helm template` of it needs to render the same.
type benchRelease struct {
	name, chart, values string
}

// benchHelmfile writes a 32-release helmfile of local charts shaped like
// BlueKing's (subcharts with conditions, split image maps, hooks, CRDs,
// custom resources, .gotmpl templating) and returns its directory.
func benchHelmfile(tb testing.TB) (string, []benchRelease) {
	dir := tb.TempDir()
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	const registry = "hub.bktencent.com"
	var h strings.Builder
	h.WriteString("environments:\n  default:\n    values:\n      - imageRegistry: " + registry + "\n---\nreleases:\n")
	var rels []benchRelease
	for i := 0; i < 32; i++ {
		chart := abs("testdata/charts/web")
		if i%2 == 1 {
			chart = abs("testdata/charts/bkapp")
		}
		fmt.Fprintf(&h, "  - name: r%02d\n    namespace: blueking\n    chart: %s\n    labels: {seq: s%d}\n    values:\n      - imageRegistry: {{ .Values.imageRegistry }}\n        global: {imageRegistry: {{ .Values.imageRegistry }}}\n        image: {repository: blueking/app-%02d}\n", i, chart, i%4, i)
		rels = append(rels, benchRelease{
			name: fmt.Sprintf("r%02d", i), chart: chart,
			values: fmt.Sprintf("imageRegistry: %s\nglobal: {imageRegistry: %s}\nimage: {repository: blueking/app-%02d}\n", registry, registry, i),
		})
	}
	if err := os.WriteFile(filepath.Join(dir, "helmfile.yaml.gotmpl"), []byte(h.String()), 0o644); err != nil {
		tb.Fatal(err)
	}
	return dir, rels
}

// BenchmarkImagesHelmfile renders the 32-release helmfile.
//
//	go test -run '^$' -bench BenchmarkImagesHelmfile -benchtime 5x ./pkg/helmfile/
func BenchmarkImagesHelmfile(b *testing.B) {
	dir, _ := benchHelmfile(b)
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

// BenchmarkImagesVsHelmTemplate times, in one run, our render of the
// 32-release helmfile against the peer pipeline the issue names: `helm
// template` per release piped through `grep image:` (done here in Go), with
// the helm binary built from the helm module (v3.22.0, its own module graph)
// into a temporary directory. The peer runs once one release after another,
// as a shell loop or `helmfile template --concurrency 1` does, and once with
// as many releases at a time as we render (GOMAXPROCS). It reports both
// ratios and what each side found.
//
//	go test -run '^$' -bench BenchmarkImagesVsHelmTemplate -benchtime 3x ./pkg/helmfile/
//
// The first run builds helm (minutes cold; seconds from the build cache).
func BenchmarkImagesVsHelmTemplate(b *testing.B) {
	helm := buildHelm(b)
	dir, rels := benchHelmfile(b)
	for i := range rels {
		f := filepath.Join(dir, rels[i].name+"-values.yaml")
		if err := os.WriteFile(f, []byte(rels[i].values), 0o644); err != nil {
			b.Fatal(err)
		}
		rels[i].values = f
	}
	home := b.TempDir()
	env := append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(home, "cache"), "HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"), "KUBECONFIG="+filepath.Join(home, "none"))
	n := runtime.GOMAXPROCS(0)
	var ours, seq, par time.Duration
	var oursN, peerN int
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		l, err := Images(context.Background(), dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		ours += time.Since(start)
		oursN = l.Len()

		start = time.Now()
		found, err := helmTemplateGrep(helm, env, rels, 1)
		if err != nil {
			b.Fatal(err)
		}
		seq += time.Since(start)
		peerN = len(found)

		start = time.Now()
		if _, err := helmTemplateGrep(helm, env, rels, n); err != nil {
			b.Fatal(err)
		}
		par += time.Since(start)
	}
	runs := float64(b.N)
	ms := func(d time.Duration) float64 { return float64(d.Milliseconds()) / runs }
	b.ReportMetric(ms(ours), "ours-ms/op")
	b.ReportMetric(ms(seq), "peer-seq-ms/op")
	b.ReportMetric(ms(par), "peer-par-ms/op")
	b.ReportMetric(seq.Seconds()/ours.Seconds(), "ratio-seq")
	b.ReportMetric(par.Seconds()/ours.Seconds(), "ratio-par")
	b.Logf("%d releases: ours %.0f ms (%d images, split maps and CRs included); helm template | grep image: %.0f ms one at a time, %.0f ms %d at a time (%d image: lines); %.1fx and %.1fx faster",
		len(rels), ms(ours), oursN, ms(seq), ms(par), n, peerN, seq.Seconds()/ours.Seconds(), par.Seconds()/ours.Seconds())
}

// buildHelm builds the helm CLI from the module proxy, outside our module
// (its own module graph, not ours), into a temporary directory.
func buildHelm(b *testing.B) string {
	b.Helper()
	bin := b.TempDir()
	cmd := exec.Command("go", "install", "helm.sh/helm/v3/cmd/helm@v3.22.0")
	cmd.Dir = bin
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=", "CGO_ENABLED=0")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build helm v3.22.0 from the module proxy: %v\n%s", err, out)
	}
	b.Logf("built helm v3.22.0 in %v", time.Since(start).Round(time.Second))
	return filepath.Join(bin, "helm")
}

var imageLine = regexp.MustCompile(`^\s*-?\s*image:\s*["']?([^"'\s]+)`)

// helmTemplateGrep runs `helm template` for each release, at most parallel
// at a time, and keeps what `grep image:` would: the value of every line
// with an `image:` key that holds a string.
func helmTemplateGrep(helm string, env []string, rels []benchRelease, parallel int) (map[string]bool, error) {
	var mu sync.Mutex
	found := map[string]bool{}
	var firstErr error
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, r := range rels {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			cmd := exec.Command(helm, "template", r.name, r.chart, "-n", "blueking", "-f", r.values, "--include-crds")
			cmd.Env = env
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			err := cmd.Run()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("helm template %s: %v\n%s", r.name, err, errOut.String())
				}
				return
			}
			sc := bufio.NewScanner(&out)
			for sc.Scan() {
				if m := imageLine.FindStringSubmatch(sc.Text()); m != nil {
					found[m[1]] = true
				}
			}
		}()
	}
	wg.Wait()
	return found, firstErr
}
