package kubectl

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// restConfig is the cluster connection kubectl's flags describe. Without any
// kubeconfig, client-go falls back to http://localhost:8080 and fails with
// "connection refused", which names neither cause nor cure: say instead
// where a kubeconfig was looked for and how to point at one.
func restConfig(kube *genericclioptions.ConfigFlags) (*rest.Config, error) {
	if looked := missingKubeconfig(kube, os.Getenv); looked != nil {
		return nil, fmt.Errorf("no kubeconfig found: looked at %s; point at one with --kubeconfig FILE or export KUBECONFIG=FILE (on a control-plane node often /etc/kubernetes/admin.conf), or give --server", strings.Join(looked, ", "))
	}
	cfg, err := kube.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w (give --kubeconfig or --context)", err)
	}
	return cfg, nil
}

// missingKubeconfig lists the places looked at when none of them gives a
// cluster, or nil when one does (or a flag names one: client-go then reports
// its own errors, e.g. a --kubeconfig file that does not exist).
func missingKubeconfig(kube *genericclioptions.ConfigFlags, getenv func(string) string) []string {
	if given(kube.KubeConfig) || given(kube.APIServer) || getenv("KUBERNETES_SERVICE_HOST") != "" {
		return nil
	}
	var looked []string
	if env := getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
		for _, p := range strings.Split(env, string(os.PathListSeparator)) {
			if p == "" {
				continue
			}
			if _, err := os.Stat(p); err == nil || !errors.Is(err, os.ErrNotExist) {
				return nil
			}
			looked = append(looked, "KUBECONFIG="+p+" (missing)")
		}
	} else {
		p := clientcmd.RecommendedHomeFile
		if _, err := os.Stat(p); err == nil || !errors.Is(err, os.ErrNotExist) {
			return nil
		}
		looked = append(looked, p+" (missing)")
	}
	return append(looked, "--kubeconfig (not given)", "in-cluster service account (KUBERNETES_SERVICE_HOST not set)")
}

func given(p *string) bool { return p != nil && *p != "" }
