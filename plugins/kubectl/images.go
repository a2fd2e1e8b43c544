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
	"github.com/bkcache/bkcache/pkg/images"
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
	RewriteRegistry string
	Why             string
	KeepGoing       bool
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

Images in pod specs, in any "image" field of custom resources, and in split maps
(registry/repository/tag/digest) are sure. Image-shaped strings in values, env vars,
ConfigMaps, the helm.sh/images chart annotation and images.lock files are "maybe":
pulled at run time perhaps; --include-maybe lists them after the sure ones.
Test hooks are left out unless --include-tests.

The text output pipes into the docker plugin: one reference per line, # comments.`,
		Example: `  # every image of BlueKing's helmfile, one per line
  kubectl bkcache images --from-helmfile base.yaml.gotmpl
  kubectl bkcache images --from-helmfile base.yaml.gotmpl -e default --selector seq=third -o chart-images
  kubectl bkcache images --from-helmfile . --why hub.bktencent.com/blueking/bk-paas:1.2.3
  kubectl bkcache images --from-chart ./charts/bk-paas -f values.yaml --set image.tag=x -o json
  kubectl bkcache images --from-manifests rendered.yaml
  helm template x ./chart | kubectl bkcache images --from-manifests -
  kubectl bkcache images --from-cluster -A
  kubectl bkcache images --from-helmfile . --rewrite-registry 10.0.0.1:5500
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
	f.StringVar(&o.RewriteRegistry, "rewrite-registry", "", "print references as pulled through HOST:PORT (a cache or intranet registry)")
	f.StringVar(&o.Why, "why", "", "print every place IMAGE came from instead of the list")
	f.BoolVar(&o.KeepGoing, "keep-going", false, "list what renders, then exit non-zero with a summary of the failures")
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
		if err := images.ValidateRegistry(o.Check); err != nil {
			return fmt.Errorf("--check: %w", err)
		}
	}
	if o.RewriteRegistry != "" {
		return images.ValidateRegistry(o.RewriteRegistry)
	}
	return nil
}

func runImages(ctx context.Context, streams genericiooptions.IOStreams, kube *genericclioptions.ConfigFlags, o *imagesOptions) error {
	if err := o.validate(); err != nil {
		return err
	}
	render := helmfile.RenderOptions{KubeVersion: o.KubeVersion, APIVersions: o.APIVersions, IncludeTests: o.IncludeTests}
	var list *images.List
	var err error
	switch {
	case o.FromHelmfile != "":
		list, err = helmfile.Images(ctx, o.FromHelmfile, helmfile.Options{
			LoadOptions: helmfile.LoadOptions{
				Environment: o.Environment, Selectors: o.Selectors, Namespace: namespace(kube),
				StateValuesSet: o.StateValuesSet, StateValuesFiles: o.StateValuesFiles,
			},
			RenderOptions: render, KeepGoing: o.KeepGoing,
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
	wopts := images.WriteOptions{Format: o.Output, IncludeMaybe: o.IncludeMaybe, Registry: o.RewriteRegistry}
	if o.Check != "" {
		return errors.Join(checkImages(ctx, streams, list, o.Check, o.Insecure, wopts), err)
	}
	werr := images.Write(streams.Out, list, wopts)
	return errors.Join(werr, err)
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
		data, err := io.ReadAll(stdin)
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
		data, err := os.ReadFile(f)
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
	cfg, err := kube.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w (give --kubeconfig or --context)", err)
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
