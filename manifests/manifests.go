// Package manifests holds the Kubernetes YAML the plugins embed.
package manifests

import _ "embed"

// RegistryCache is a registry:2 pull-through cache as a Deployment, Service and
// ConfigMap: the in-cluster form of `docker bkcache up`.
//
//go:embed registry-cache.yaml
var RegistryCache []byte
