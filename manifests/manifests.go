// Package manifests holds the Kubernetes YAML the plugins embed.
package manifests

import _ "embed"

// RegistryCache is a registry:2 pull-through cache as a Deployment, Service and
// ConfigMap: the in-cluster form of `docker bkcache up`.
//
//go:embed registry-cache.yaml
var RegistryCache []byte

// NodeAccessPod is the privileged pod `kubectl bkcache mirror` runs on a node to reach its
// files and commands; pkg/nodes sets name, node, image and labels. mirror-rbac.yaml beside it
// is the ClusterRole a user needs for the command.
//
//go:embed node-access-pod.yaml
var NodeAccessPod []byte
