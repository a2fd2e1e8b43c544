package kubectl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	"github.com/bkcache/bkcache/pkg/helmfile"
	"github.com/bkcache/bkcache/pkg/imageref"
	"github.com/bkcache/bkcache/pkg/images"
	"github.com/bkcache/bkcache/pkg/userfile"
)

// imagesOptions are the flags of `kubectl bkcache images`.
type imagesOptions struct {
	FromHelmfile  string
	FromChart     string
	FromManifests string
	FromCluster   bool
	AllNamespaces bool

	ValuesFiles []string
	Set         []string
	SetString   []string
	Version     string
	Repo        string
	ReleaseName string

	Environment      string
	Selectors        []string
	StateValuesSet   []string
	StateValuesFiles []string

	KubeVersion  string
	APIVersions  []string
	IncludeTests bool

	Output          string
	IncludeMaybe    bool
	RewriteRegistry []string
	Upstreams       bool
	CacheHost       string
	Why             string
	KeepGoing       bool
	Strict          bool
	Check           string
	Insecure        bool
}

func newImagesCommand(streams genericiooptions.IOStreams, kube *genericclioptions.ConfigFlags) *cobra.Command {
	o := &imagesOptions{}
	cmd := &cobra.Command{
		Use:   "images (--from-helmfile FILE|DIR | --from-chart CHART | --from-manifests FILE|DIR|- | --from-cluster)",
		Short: "List every image a helmfile deployment, chart, manifest or cluster needs",
		Long: `List every container image a deployment needs, rendered offline with the helm v3 SDK:
no helm or helmfile binary, no cluster (except --from-cluster).

Images in pod specs, and "image" fields and split maps (registry/repository/tag/digest)
of any object (custom resources, ConfigMap data) are sure. Images pulled at run time
perhaps are "maybe": image-shaped strings in values, env vars and ConfigMaps, image keys
in YAML/JSON held in ConfigMap values, operator flags naming an image
(--<name>-image=REF, or any flag whose value is a full reference), the helm.sh/images
annotation and images.lock files. A maybe never gets an invented tag or registry: a
split map with an empty tag is completed only as its chart's templates complete it
(appVersion, "v" + appVersion) or dropped, and one without a registry takes the
release's registry override (global.imageRegistry, imageRegistry). --include-maybe
lists them after the sure ones; --why REF says where each came from and why.
Test hooks are left out unless --include-tests.

Helmfiles are read as helmfile 0.142 (BlueKing's pinned version) and today's helmfile
read them, missingFileHandler included: a missing optional file (Warn/Info) is reported
once on stderr and skipped. Nested helmfiles take the environment as helmfile does;
helmDefaults.templateArgs/args, apiVersions, kubeVersion, strategicMergePatches and
jsonPatches are applied to each release's render; what is not (postRenderer,
transformers) is a warning naming the release, an error with --strict.

The text output pipes into the docker plugin: one reference per line, # comments.
-o registries lists the registries the deployment pulls from, and the images that
escape the configured imageRegistry; --upstreams prints a caches file for
"docker bkcache up -f" with the "kubectl bkcache mirror" command for each cache.`,
		Example: `  # every image of BlueKing's helmfile, one per line
  kubectl bkcache images --from-helmfile base.yaml.gotmpl
  kubectl bkcache images --from-helmfile base.yaml.gotmpl --state-values-set imageRegistry=10.0.0.5:5000
  kubectl bkcache images --from-helmfile base.yaml.gotmpl -e default --selector seq=third -o chart-images
  # which registries it pulls from, and one cache for each
  kubectl bkcache images --from-helmfile base.yaml.gotmpl -o registries
  kubectl bkcache images --from-helmfile base.yaml.gotmpl --upstreams --cache-host 10.0.0.5 > caches.yaml
  kubectl bkcache images --from-helmfile . --why hub.bktencent.com/blueking/bk-paas:1.2.3
  kubectl bkcache images --from-chart ./charts/bk-paas -f values.yaml --set image.tag=x -o json
  kubectl bkcache images --from-manifests rendered.yaml
  helm template x ./chart | kubectl bkcache images --from-manifests -
  kubectl bkcache images --from-cluster -A
  kubectl bkcache images --from-helmfile . --rewrite-registry hub.bktencent.com=10.0.0.5:5500 --rewrite-registry docker.io=10.0.0.5:5501
  kubectl bkcache images --from-helmfile . --rewrite-registry 10.0.0.5:5000    # everything from one intranet registry
  kubectl bkcache images --from-helmfile . | docker bkcache warm -f -
  # which images the intranet registry lacks (listed on stdout; exit 1 if any)
  kubectl bkcache images --from-helmfile . --check 10.0.0.1:5000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runImages(cmd.Context(), streams, kube, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.FromHelmfile, "from-helmfile", "", "render every release of a helmfile: helmfile.yaml(.gotmpl), a helmfile.d/ directory, or a directory holding one")
	f.StringVar(&o.FromChart, "from-chart", "", "render one chart: a directory, a .tgz, a name with --repo, or oci://")
	f.StringVar(&o.FromManifests, "from-manifests", "", "read Kubernetes objects from a YAML/JSON file, a directory of them, or - for stdin")
	f.BoolVar(&o.FromCluster, "from-cluster", false, "read the pods the cluster runs now (kubeconfig, -n or -A)")
	f.BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "with --from-cluster: every namespace")
	f.StringArrayVarP(&o.ValuesFiles, "values", "f", nil, "with --from-chart: a values file (repeatable)")
	f.StringArrayVar(&o.Set, "set", nil, "with --from-chart: set values (key=value[,key=value])")
	f.StringArrayVar(&o.SetString, "set-string", nil, "with --from-chart: set string values")
	f.StringVar(&o.Version, "version", "", "with --from-chart: chart version or constraint (repository and oci charts)")
	f.StringVar(&o.Repo, "repo", "", "with --from-chart: chart repository URL")
	f.StringVar(&o.ReleaseName, "release-name", "", "with --from-chart: release name (default: the chart's name)")
	f.StringVarP(&o.Environment, "environment", "e", "default", "helmfile environment")
	f.StringArrayVarP(&o.Selectors, "selector", "l", nil, "helmfile release selector key=value[,key!=value] (repeatable: ORed)")
	f.StringArrayVar(&o.StateValuesSet, "state-values-set", nil, "helmfile state values key=value (repeatable)")
	f.StringArrayVar(&o.StateValuesFiles, "state-values-file", nil, "helmfile state values file (repeatable)")
	f.StringVar(&o.KubeVersion, "kube-version", "", "Kubernetes version charts see in .Capabilities (e.g. v1.30.0)")
	f.StringArrayVar(&o.APIVersions, "api-versions", nil, "extra API versions charts see in .Capabilities (repeatable)")
	f.BoolVar(&o.IncludeTests, "include-tests", false, "include helm test hooks")
	f.StringVarP(&o.Output, "output", "o", "text", "output format: "+strings.Join(images.Formats, "|"))
	f.BoolVar(&o.IncludeMaybe, "include-maybe", false, "also list images pulled at run time perhaps (after the sure ones)")
	f.StringArrayVar(&o.RewriteRegistry, "rewrite-registry", nil, "print references as pulled through another registry: FROM=HOST[:PORT] per registry (repeatable), or HOST[:PORT] for all; refused when two images would land on one name")
	f.BoolVar(&o.Upstreams, "upstreams", false, "print a caches file for \"docker bkcache up -f\", one cache per registry the deployment pulls from, with the \"kubectl bkcache mirror\" commands")
	f.StringVar(&o.CacheHost, "cache-host", "", "with --upstreams: the host the caches run on, as nodes reach it")
	f.StringVar(&o.Why, "why", "", "print every place IMAGE came from instead of the list")
	f.BoolVar(&o.KeepGoing, "keep-going", false, "list what renders, then exit non-zero with a summary of the failures")
	f.BoolVar(&o.Strict, "strict", false, "with --from-helmfile: fail a release that uses what is not applied here (postRenderer, transformers, unknown helm flags in helmDefaults), instead of a warning")
	f.StringVar(&o.Check, "check", "", "ask REGISTRY (HOST[:PORT]) for each listed image's manifest (HEAD, repointed at it); list the missing ones and exit non-zero if any")
	f.BoolVar(&o.Insecure, "insecure", false, "with --check: plain HTTP or an unverified certificate for any registry (loopback and private addresses try plain HTTP anyway)")
	return cmd
}

func (o *imagesOptions) validate() error {
	n := 0
	for _, set := range []bool{o.FromHelmfile != "", o.FromChart != "", o.FromManifests != "", o.FromCluster} {
		if set {
			n++
		}
	}
	if n != 1 {
		return errors.New("give exactly one of --from-helmfile, --from-chart, --from-manifests, --from-cluster")
	}
	if o.FromChart == "" && (len(o.ValuesFiles)+len(o.Set)+len(o.SetString) > 0 || o.Version != "" || o.Repo != "" || o.ReleaseName != "") {
		return errors.New("-f, --set, --set-string, --version, --repo and --release-name go with --from-chart; a helmfile gives them per release")
	}
	if o.Strict && o.FromHelmfile == "" {
		return errors.New("--strict goes with --from-helmfile")
	}
	if o.AllNamespaces && !o.FromCluster {
		return errors.New("-A goes with --from-cluster")
	}
	known := false
	for _, f := range images.Formats {
		known = known || f == o.Output
	}
	if !known {
		return fmt.Errorf("unknown output format %q: use one of %s", o.Output, strings.Join(images.Formats, ", "))
	}
	if o.Insecure && o.Check == "" {
		return errors.New("--insecure goes with --check")
	}
	if o.Check != "" {
		if o.Why != "" {
			return errors.New("--check and --why do not go together: --why prints sources, not a list")
		}
		if err := imageref.ValidateRegistry(o.Check); err != nil {
			return fmt.Errorf("--check: %w", err)
		}
	}
	if o.CacheHost != "" && !o.Upstreams {
		return errors.New("--cache-host goes with --upstreams")
	}
	if o.Upstreams && (o.Why != "" || o.Check != "" || len(o.RewriteRegistry) > 0 || o.Output != "text") {
		return errors.New("--upstreams prints a caches file: it does not go with --why, --check, --rewrite-registry or -o")
	}
	if o.CacheHost != "" {
		if err := imageref.ValidateRegistry(o.CacheHost); err != nil || strings.Contains(o.CacheHost, ":") {
			return fmt.Errorf("--cache-host %q: give the host only (ports come from the caches file)", o.CacheHost)
		}
	}
	_, err := images.ParseRewrites(o.RewriteRegistry)
	return err
}

func runImages(ctx context.Context, streams genericiooptions.IOStreams, kube *genericclioptions.ConfigFlags, o *imagesOptions) error {
	if err := o.validate(); err != nil {
		return err
	}
	rewrites, err := images.ParseRewrites(o.RewriteRegistry)
	if err != nil {
		return err
	}
	render := helmfile.RenderOptions{KubeVersion: o.KubeVersion, APIVersions: o.APIVersions, IncludeTests: o.IncludeTests}
	var list *images.List
	switch {
	case o.FromHelmfile != "":
		list, err = helmfile.Images(ctx, o.FromHelmfile, helmfile.Options{
			LoadOptions: helmfile.LoadOptions{
				Environment: o.Environment, Selectors: o.Selectors, Namespace: namespace(kube),
				StateValuesSet: o.StateValuesSet, StateValuesFiles: o.StateValuesFiles,
				Notify: func(n helmfile.Notice) { printNotice(streams.ErrOut, n) },
			},
			RenderOptions: render, KeepGoing: o.KeepGoing, Strict: o.Strict,
		})
	case o.FromChart != "":
		list, err = helmfile.ChartImages(ctx, helmfile.ChartOptions{
			Chart: o.FromChart, RepoURL: o.Repo, Version: o.Version, ReleaseName: o.ReleaseName,
			Namespace: namespace(kube), ValuesFiles: o.ValuesFiles, Set: o.Set, SetString: o.SetString,
			RenderOptions: render,
		})
	case o.FromManifests != "":
		list, err = manifestImages(ctx, o.FromManifests, streams.In, o.KeepGoing)
	case o.FromCluster:
		list, err = clusterImages(ctx, kube, o.AllNamespaces)
	}
	if list == nil {
		return err
	}
	if err != nil && !o.KeepGoing {
		return err
	}
	for _, inv := range list.Invalid() {
		fmt.Fprintf(streams.ErrOut, "warning: invalid image reference %q (%s): %s\n", inv.Value, inv.Source.String(), inv.Error)
	}
	if o.Why != "" {
		img, ok := list.Why(o.Why)
		if !ok {
			return errors.Join(err, fmt.Errorf("image %s: not found in what was read; run without --why to list the images", o.Why))
		}
		return errors.Join(images.WriteWhy(streams.Out, img), err)
	}
	wopts := images.WriteOptions{Format: o.Output, IncludeMaybe: o.IncludeMaybe, Rewrites: rewrites}
	if o.Check != "" {
		return errors.Join(checkImages(ctx, streams, list, o.Check, o.Insecure, wopts), err)
	}
	doc, rerr := images.Result(list, wopts)
	if rerr != nil {
		return errors.Join(rerr, err)
	}
	if o.Upstreams {
		return errors.Join(images.WriteUpstreams(streams.Out, doc.Registries, images.UpstreamOptions{CacheHost: o.CacheHost}), err)
	}
	werr := images.Write(streams.Out, list, wopts)
	if werr == nil && o.Output == "text" && isTerminal(streams.ErrOut) && len(doc.Registries) > 0 {
		fmt.Fprintln(streams.ErrOut, "# "+images.Summary(doc.Registries))
	}
	return errors.Join(werr, err)
}

// printNotice reports a skipped optional file at its level: Warn and Info
// on stderr, Debug not (helmfile's default log level is info).
func printNotice(w io.Writer, n helmfile.Notice) {
	switch n.Level {
	case "Warn":
		fmt.Fprintln(w, "warning: "+n.String())
	case "Info":
		fmt.Fprintln(w, "info: "+n.String())
	}
}

// isTerminal says whether w is a terminal, where a person reads it.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// checkImages asks the registry for every listed image and prints the
// missing ones, in the chosen format, for a pipe into push or warm.
func checkImages(ctx context.Context, streams genericiooptions.IOStreams, list *images.List, registry string, insecure bool, wopts images.WriteOptions) error {
	var refs []string
	for _, img := range list.Images(wopts.IncludeMaybe) {
		refs = append(refs, img.Reference)
	}
	results := images.Check(ctx, refs, registry, 8, headManifest(insecure))
	var missing []string
	for _, r := range results {
		if r.Missing {
			missing = append(missing, r.Reference)
		}
	}
	werr := images.Write(streams.Out, list.Only(missing), wopts)
	if cerr := images.CheckSummary(registry, results); cerr != nil {
		return errors.Join(cerr, werr)
	}
	fmt.Fprintf(streams.ErrOut, "all %d images present in %s\n", len(results), registry)
	return werr
}

// namespace is -n as kubectl resolves it (flag, then kubeconfig context), "default" without a kubeconfig.
func namespace(kube *genericclioptions.ConfigFlags) string {
	if kube.Namespace != nil && *kube.Namespace != "" {
		return *kube.Namespace
	}
	if ns, _, err := kube.ToRawKubeConfigLoader().Namespace(); err == nil && ns != "" {
		return ns
	}
	return "default"
}

// manifestImages reads a file, every *.yaml/*.yml/*.json under a directory, or stdin.
func manifestImages(ctx context.Context, path string, stdin io.Reader, keepGoing bool) (*images.List, error) {
	list := images.NewList()
	read := func(name string, data []byte) error {
		found, err := images.FromManifests(data, images.ManifestOptions{Source: images.Source{File: name}, Lines: true})
		list.Add(found...)
		return err
	}
	if path == "-" {
		data, err := userfile.ReadStdin(ctx, stdin)
		if err != nil {
			return nil, fmt.Errorf("read stdin: %w", err)
		}
		return list, read("stdin", data)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("--from-manifests: %w", err)
	}
	files := []string{path}
	if st.IsDir() {
		files = nil
		err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch strings.ToLower(filepath.Ext(p)) {
			case ".yaml", ".yml", ".json":
				if !d.IsDir() {
					files = append(files, p)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("--from-manifests %s: %w", path, err)
		}
		sort.Strings(files)
	}
	var errs []error
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return list, err
		}
		data, err := userfile.Read(f)
		if err == nil {
			err = read(f, data)
		}
		if err != nil {
			if !keepGoing {
				return list, err
			}
			errs = append(errs, err)
		}
	}
	return list, errors.Join(errs...)
}

// clusterImages lists pods through the kubeconfig and hands them to pkg/images.
func clusterImages(ctx context.Context, kube *genericclioptions.ConfigFlags, all bool) (*images.List, error) {
	cfg, err := restConfig(kube)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	ns := namespace(kube)
	if all {
		ns = metav1.NamespaceAll
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods in %s: %w", describeNS(ns), err)
	}
	list := images.NewList()
	for i := range pods.Items {
		p := &pods.Items[i]
		p.Kind, p.APIVersion = "Pod", "v1"
		data, err := json.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
		}
		found, err := images.FromManifests(data, images.ManifestOptions{Source: images.Source{File: "cluster"}})
		if err != nil {
			return nil, fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
		}
		list.Add(found...)
	}
	return list, nil
}

func describeNS(ns string) string {
	if ns == "" {
		return "all namespaces"
	}
	return "namespace " + ns
}
