// Package manifests holds the Kubernetes YAML the plugins embed. registry-cache.yaml beside it
// is not embedded: it is applied by hand (kubectl apply -f) to run the cache inside a cluster.
package manifests

import _ "embed"

// NodeAccessPod is the privileged pod `kubectl bkcache mirror` runs on a node to reach its
// files and commands; pkg/nodes sets name, node, image and labels. mirror-rbac.yaml beside it
// is the ClusterRole a user needs for the command.
//
//go:embed node-access-pod.yaml
var NodeAccessPod []byte
