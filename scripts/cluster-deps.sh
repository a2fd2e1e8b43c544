#!/usr/bin/env bash
# Installs the Debian packages `scripts/cluster` needs on the host (idempotent, quiet).
# Packages it only unpacks into its cache (etcd-server, busybox-static) are fetched by
# `scripts/cluster up` itself with `apt-get download`, so no service is installed or started.
set -euo pipefail

# The packages the cluster runs from the host: the node's private containerd and runc,
# the CNI loopback plugin, openssl for the certificates, util-linux/mount for unmounting.
CLUSTER_DEBS=(containerd runc containernetworking-plugins openssl ca-certificates curl util-linux mount procps)

missing=()
for p in "${CLUSTER_DEBS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]})); then
	export DEBIAN_FRONTEND=noninteractive
	# Do not let the containerd package start a system containerd (the cluster runs its own).
	policy=/usr/sbin/policy-rc.d
	added_policy=
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added_policy=1
	fi
	trap '[[ -n $added_policy ]] && rm -f "$policy"' EXIT
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		{ apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi
