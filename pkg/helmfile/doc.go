// Package helmfile turns a helmfile deployment, or one chart, into the
// Kubernetes objects it would install, offline, and hands them to pkg/images.
//
// Why not the helmfile module: measured here, github.com/helmfile/helmfile
// v1.8.0 as a library brings its own replace block (k8s.io/api v0.35),
// helm v4, vals with the AWS/GCP/Azure/Vault SDKs and kubedog: 718 modules,
// a 367 s cold build and a 343 MB binary, and its app API shells out to the
// helm binary anyway, which this plugin must not need. What deployments use
// of helmfile's state (bases, environments passed down to nested helmfiles,
// selectors, release values, set and setString, .gotmpl templating with
// sprig and helmfile's functions, release templates, helmDefaults'
// templateArgs and args, apiVersions and kubeVersion, strategicMergePatches
// and jsonPatches) is a few hundred lines over the helm v3 SDK and
// kustomize's library, both linked anyway. Chart dependencies are completed
// in memory as `helm dependency build` would vendor them (file:// relative to
// the chart's own directory), never in the user's tree. Left out on purpose:
// secrets (sops), hooks that run commands, `exec`, post-renderers and
// kustomize transformers; they are reported (an error with Strict), not
// silently ignored.
package helmfile
