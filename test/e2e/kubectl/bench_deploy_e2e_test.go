//go:build cluster

package kubectl

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/bkcache/bkcache/internal/clustertest"
	"github.com/bkcache/bkcache/internal/registrytest"
)

const deployChart = `apiVersion: v2
name: bkbench
version: 7.2.0
`

// One Deployment per component, on the node the values name: the pods spread over the nodes.
const deployTemplate = `{{- range .Values.components }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $.Release.Name }}-{{ .name }}
spec:
  replicas: 1
  selector:
    matchLabels: {app: {{ $.Release.Name }}-{{ .name }}}
  template:
    metadata:
      labels: {app: {{ $.Release.Name }}-{{ .name }}}
    spec:
      nodeSelector: {kubernetes.io/hostname: {{ .node }}}
      hostNetwork: true
      terminationGracePeriodSeconds: 0
      containers:
      - name: main
        image: "{{ $.Values.imageRegistry }}/{{ $.Values.prefix }}/{{ $.Release.Name }}-{{ .name }}:7.2.0"
        imagePullPolicy: IfNotPresent
{{- end }}
`

// writeHelmfile writes a helmfile of the four releases, their images under registry/prefix,
// component k on node k mod len(nodes), and returns its directory.
func writeHelmfile(tb testing.TB, registry, prefix string, nodes []clustertest.Node) string {
	tb.Helper()
	dir := tb.TempDir()
	files := map[string]string{
		"charts/bkbench/Chart.yaml":                deployChart,
		"charts/bkbench/templates/deployment.yaml": deployTemplate,
	}
	var hf strings.Builder
	hf.WriteString("releases:\n")
	k := 0
	for _, rel := range deployReleases {
		fmt.Fprintf(&hf, "- name: %s\n  chart: ./charts/bkbench\n  values:\n  - ./values/%s.yaml\n", rel, rel)
		vals := fmt.Sprintf("imageRegistry: %s\nprefix: %s\ncomponents:\n", registry, prefix)
		for _, comp := range []string{"api", "web"} {
			vals += fmt.Sprintf("- {name: %s, node: %s}\n", comp, nodes[k%len(nodes)].Name)
			k++
		}
		files["values/"+rel+".yaml"] = vals
	}
	files["helmfile.yaml"] = hf.String()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// renderDeployments renders every release of the helmfile with the helm SDK (as `helm
// template` does) and returns its Deployments.
func renderDeployments(tb testing.TB, dir, ns string) []*appsv1.Deployment {
	tb.Helper()
	chrt, err := loader.Load(filepath.Join(dir, "charts", "bkbench"))
	if err != nil {
		tb.Fatal(err)
	}
	var out []*appsv1.Deployment
	for _, rel := range deployReleases {
		vals, err := chartutil.ReadValuesFile(filepath.Join(dir, "values", rel+".yaml"))
		if err != nil {
			tb.Fatal(err)
		}
		inst := action.NewInstall(&action.Configuration{})
		inst.DryRun, inst.DryRunOption, inst.ClientOnly, inst.Replace = true, "client", true, true
		inst.ReleaseName, inst.Namespace = rel, ns
		r, err := inst.Run(chrt, vals)
		if err != nil {
			tb.Fatalf("render %s: %v", rel, err)
		}
		for _, doc := range strings.Split(r.Manifest, "\n---") {
			if !strings.Contains(doc, "kind: Deployment") {
				continue
			}
			d := &appsv1.Deployment{}
			if err := yaml.Unmarshal([]byte(doc), d); err != nil {
				tb.Fatalf("decode %s: %v\n%s", rel, err, doc)
			}
			out = append(out, d)
		}
	}
	return out
}

// applyAndWait creates the Deployments in a new namespace and returns how long until every
// pod is Ready.
func applyAndWait(tb testing.TB, ctx context.Context, cs kubernetes.Interface, ns string, deps []*appsv1.Deployment) time.Duration {
	tb.Helper()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	start := time.Now()
	for _, d := range deps {
		if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
			tb.Fatalf("create %s: %v", d.Name, err)
		}
	}
	var ready int
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		ready = 0
		for _, p := range pods.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		return ready == len(deps), nil
	})
	if err != nil {
		tb.Fatalf("%s: %d of %d pods Ready: %v", ns, ready, len(deps), err)
	}
	return time.Since(start)
}

// writeNodeHosts points each node's hosts.toml for upstream (by name) at a host tried first,
// then the upstream itself: what mirror writes, with plain http throughout. (containerd 1.6
// ignores a hosts.toml without a [host] table, so even the direct run names its meter so.)
func writeNodeHosts(tb testing.TB, env clustertest.Env, upstream string, first func(i int) string) {
	tb.Helper()
	for i, n := range env.Nodes {
		body := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+upstream, "http://"+first(i))
		p := n.HostPath("/etc/containerd/certs.d/" + upstream + "/hosts.toml")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// removeNodeImages removes the images the benchmark made the nodes pull.
func removeNodeImages(env clustertest.Env, registry string) {
	for _, n := range env.Nodes {
		out, _ := exec.Command("ctr", "-a", n.ContainerdSock, "-n", "k8s.io", "images", "ls", "-q").Output()
		for _, ref := range strings.Fields(string(out)) {
			if strings.HasPrefix(ref, registry+"/") {
				_ = exec.Command("ctr", "-a", n.ContainerdSock, "-n", "k8s.io", "images", "rm", ref).Run()
			}
		}
	}
}

// BenchmarkDeploy applies a BlueKing-shaped helmfile (4 releases, 8 pods over the 3 nodes,
// 160 MiB of images sharing base layers) with every node pulling over one shared 8 MiB/s
// link: (a) from the upstream directly, (b) through a cold `docker bkcache up` cache, (c)
// after `kubectl bkcache images --from-helmfile … | docker bkcache warm -f -`. Each run has
// its own image set of the same shape. Prints time until every pod is Ready, upstream bytes
// per image set, and the bytes each node pulled.
//
//	go test -tags cluster -run '^$' -bench BenchmarkDeploy -benchtime 1x -timeout 30m ./test/e2e/kubectl/
func BenchmarkDeploy(b *testing.B) {
	env := clustertest.Get(b)
	env.NeedNodes(b, 3)
	cs := clientset(b, env)
	kpath, _ := pluginPath(b, env)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	rate := int64(8 << 20)

	upstream := registrytest.Start(b)
	relay := registrytest.StartRelay(b, upstream.URL)
	cache := startDockerCache(b, env, relay.URL)
	b.Cleanup(func() { removeNodeImages(env, relay.Addr) })
	removeOnNodes(b, env, "/etc/containerd/certs.d/"+relay.Addr)
	busybox := busyboxLayer(b)

	var lines []string
	for i := 0; i < b.N; i++ {
		for k, mode := range []string{"a-direct", "b-cold-cache", "c-warm-cache"} {
			prefix := fmt.Sprintf("bench%d-%s", i, mode[:1])
			set := newDeploySet(b, busybox, prefix, int64(100*i+k+1))
			for ref, img := range set.images {
				if _, err := upstream.Push(ref, img); err != nil {
					b.Fatal(err)
				}
			}
			meters := make([]*meter, len(env.Nodes))
			target := cache.Addr
			if mode == "a-direct" {
				target = relay.Addr
			}
			for j := range meters {
				meters[j] = startMeter(b, target)
			}
			writeNodeHosts(b, env, relay.Addr, func(j int) string { return meters[j].Addr })
			dir := writeHelmfile(b, relay.Addr, prefix, env.Nodes)
			relay.SetRate(rate)
			relay.ResetLog()
			warmNote := ""
			if mode == "c-warm-cache" {
				start := time.Now()
				pipe := exec.CommandContext(ctx, "sh", "-c", "kubectl bkcache images --from-helmfile \"$1\" | docker bkcache warm -f -", "sh", dir)
				pipe.Env = append(append(cache.env, kpath...), "KUBECONFIG="+env.Kubeconfig)
				if out, err := pipe.CombinedOutput(); err != nil {
					b.Fatalf("images | warm: %v\n%s", err, out)
				}
				warmNote = fmt.Sprintf(" (warm: %s, upstream %.2fx)", time.Since(start).Round(100*time.Millisecond), float64(relay.BlobBytes(""))/float64(set.bytes))
				relay.ResetLog()
			}
			deps := renderDeployments(b, dir, prefix)
			took := applyAndWait(b, ctx, cs, prefix, deps)
			line := fmt.Sprintf("%-13s %8s  upstream %.2fx of %d MiB", mode, took.Round(100*time.Millisecond), float64(relay.BlobBytes(""))/float64(set.bytes), set.bytes>>20)
			for j, n := range env.Nodes {
				line += fmt.Sprintf("  %s %d MiB", n.Name, meters[j].down.Load()>>20)
			}
			lines = append(lines, line+warmNote)
			b.ReportMetric(took.Seconds(), "s-"+mode)
		}
	}
	b.Logf("deployment of %d pods over %d nodes, one %d MiB/s link:\n%s", 2*len(deployReleases), len(env.Nodes), rate>>20, strings.Join(lines, "\n"))
}
