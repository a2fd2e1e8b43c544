// Package helmfile turns a helmfile deployment, or one chart, into the
// Kubernetes objects it would install, offline, and hands them to pkg/images.
//
// Why not the helmfile module: measured here, github.com/helmfile/helmfile
// v1.8.0 as a library brings its own replace block (k8s.io/api v0.35),
// helm v4, vals with the AWS/GCP/Azure/Vault SDKs and kubedog: 718 modules,
// a 367 s cold build and a 343 MB binary, and its app API shells out to the
// helm binary anyway, which this plugin must not need. What a deployment like
// BlueKing's uses of helmfile's state (bases, environments, nested helmfiles
// with selectors, release values and set, .gotmpl templating with sprig and
// helmfile's functions, release templates rendered per release) is a few
// hundred lines over the helm v3 SDK, which we link for rendering anyway; sprig comes with helm and adds nothing. Left out
// on purpose: secrets (sops), hooks that run commands, `exec`, kustomize and
// jsonPatches; they are reported, not silently ignored.
package helmfile
