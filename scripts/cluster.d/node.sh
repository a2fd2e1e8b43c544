# Sourced by scripts/cluster (needs its settings and log/die helpers); not run on its own.
# shellcheck shell=bash
# ================================================================================================
# Processes: started with setsid, tracked by PID file "PID STARTTIME NAME" (the start time guards
# against PID reuse: down never signals a process it did not start)
# ================================================================================================

proc_starttime() { # field 22 of /proc/PID/stat, after the ")" that ends the command name
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	awk '{print $20}' <<<"$stat"
}

start_proc() { # start_proc NAME ENV-PATH CMD ARGS...
	local name=$1 path=$2 pid st; shift 2
	mkdir -p "$LOGS" "$PIDS"
	PATH=$path setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
	pid=$!
	st=$(proc_starttime "$pid") || die "$name exited at once; see $LOGS/$name.log: $(tail -5 "$LOGS/$name.log")"
	echo "$pid $st $name" >"$PIDS/$name.pid"
}

# proc_alive NAME: the recorded process is still the one we started.
proc_alive() {
	local f=$PIDS/$1.pid pid st _
	[[ -f $f ]] || return 1
	read -r pid st _ <"$f"
	[[ -n $pid && $(proc_starttime "$pid" 2>/dev/null) == "$st" ]]
}

stop_proc() { # stop_proc NAME [grace seconds]
	local name=$1 grace=${2:-20} f=$PIDS/$1.pid pid st _ i t0=$SECONDS
	[[ -f $f ]] || return 0
	read -r pid st _ <"$f"
	if proc_alive "$name"; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < grace * 10; i++)); do proc_alive "$name" || break; sleep 0.1; done
		if proc_alive "$name"; then
			log "$name (pid $pid) ignored SIGTERM for ${grace}s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			for ((i = 0; i < 50; i++)); do proc_alive "$name" || break; sleep 0.1; done
		fi
		((SECONDS - t0 < 3)) || log "$name took $((SECONDS - t0)) s to stop"
	fi
	rm -f "$f"
}

# shim_pids SOCK: containerd shims serving the containerd at SOCK, found by their exact -address argument.
shim_pids() {
	local d args
	for d in /proc/[0-9]*; do
		args=$(tr '\0' '\n' 2>/dev/null <"$d/cmdline") || continue
		grep -qxF -- "-address" <<<"$args" && grep -qxF -- "$1" <<<"$args" && echo "${d#/proc/}"
	done
	return 0
}

# pod_pids: every process in the pod cgroups the kubelet and containerd created for this cluster.
pod_pids() {
	local d
	for d in /sys/fs/cgroup/{pids,memory,freezer,}/$CGROUP_ROOT; do
		if [[ -d $d ]]; then find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
	done | sort -un
}

cgroup_dirs() { # the hierarchies to hold $CGROUP_ROOT: every v1 controller, or the v2 root
	local d
	if [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; then echo /sys/fs/cgroup; return 0; fi
	for d in /sys/fs/cgroup/*/; do
		d=${d%/}
		[[ ${d##*/} == unified ]] && continue
		[[ -f $d/cgroup.procs ]] && echo "$d"
	done
}

# ================================================================================================
# Configuration: certificates, kubeconfigs, containerd and kubelet
# ================================================================================================

gen_cert() { # gen_cert NAME SUBJECT EXTKEYUSAGE [SAN]
	local name=$1 subj=$2 eku=$3 san=${4:-} ext
	ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$eku"
	[[ -n $san ]] && ext+=$'\n'"subjectAltName=$san"
	openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
	openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
		-days 365 -sha256 -extfile <(echo "$ext") -out "$PKI/$name.crt" 2>/dev/null
	rm -f "$PKI/$name.csr"
}

gen_pki() {
	mkdir -p "$PKI"; chmod 700 "$PKI"
	openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -subj "/CN=bkcache-cluster-ca" \
		-days 3650 -sha256 -addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out "$PKI/ca.crt" 2>/dev/null
	gen_cert apiserver "/CN=kube-apiserver" serverAuth \
		"DNS:localhost,DNS:$NODE_NAME,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"
	gen_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
	gen_cert admin "/O=system:masters/CN=bkcache-admin" clientAuth
	local i
	for ((i = 1; i <= NCOUNT; i++)); do
		node_vars "$i"
		gen_cert "kubelet-client$N_SUF" "/O=system:nodes/CN=system:node:$N_NAME" clientAuth
		gen_cert "kubelet$N_SUF" "/CN=$N_NAME" serverAuth "DNS:$N_NAME,DNS:localhost,IP:$N_IP"
	done
	openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
	openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

write_kubeconfig() { # write_kubeconfig FILE USER CERTNAME
	cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: bkcache
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $2
  user:
    client-certificate: $PKI/$3.crt
    client-key: $PKI/$3.key
contexts:
- name: bkcache
  context: {cluster: bkcache, user: "$2", namespace: default}
current-context: bkcache
KC
}

write_cni_config() {
	mkdir -p "$STATE/cni/net.d"
	cat >"$STATE/cni/net.d/10-loopback.conflist" <<'CNI'
{"cniVersion": "0.4.0", "name": "bkcache-loopback", "plugins": [{"type": "loopback"}]}
CNI
}

write_containerd_config() { # for node N_* (node_vars)
	mkdir -p "$N_CTRD" "$N_CERTS" "$(dirname "$N_CONFIG")"
	cat >"$N_CONFIG" <<TOML
# The node's private containerd (scripts/cluster). Not the containerd dockerd uses.
version = 2
root = "$N_CTRD/root"
state = "$N_CTRD/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$N_SOCK"
[ttrpc]
  address = "$N_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$N_CTRD/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "$N_IP"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$N_CTRD/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$N_CERTS_ON_NODE"
TOML
}

write_kubelet_config() { # for node N_* (node_vars)
	mkdir -p "$N_KUBELET_DIR"
	cat >"$N_DIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $N_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: $N_IP
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet$N_SUF.crt
tlsPrivateKeyFile: $PKI/kubelet$N_SUF.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: AlwaysAllow
containerRuntimeEndpoint: unix://$N_SOCK
cgroupDriver: cgroupfs
cgroupRoot: /$N_CG
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
$( [[ -z $N_ROOT ]] || echo "# Its own: a kubelet removes the log directories of pods it does not know.
podLogsDir: $N_DIR/pod-logs")
shutdownGracePeriod: 0s
rotateCertificates: false
serverTLSBootstrap: false
# The images cannot be pulled again: never garbage-collect them, never evict for disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
YAML
}

# write_supervisor writes the program that runs as one node (several nodes): started by
# `unshare -m` in a new private mount namespace, it binds the node's directories over the
# standard paths, then runs the node's containerd and starts it again whenever it exits (as
# systemd's Restart=always would), until it gets SIGTERM. The kubelet joins the namespace.
write_supervisor() {
	cat >"$SUPERVISOR" <<'SUP'
#!/bin/bash
# node-supervisor ROOT DIR...: one test node's containerd, in this process's own mount namespace,
# with ROOT/DIR bound on /DIR for each DIR.
set -u
root=$1
shift
for d in "$@"; do
	mount --bind "$root/$d" "/$d" || { echo "supervisor: cannot bind $root/$d on /$d" >&2; exit 1; }
done
stop= child=
trap 'stop=1; [[ -n $child ]] && kill -TERM "$child" 2>/dev/null' TERM INT
while :; do
	containerd --config /etc/containerd/config.toml &
	child=$!
	[[ -n $stop ]] && kill -TERM "$child" 2>/dev/null
	echo "$child" >/run/bkcache-node/containerd.pid.tmp && mv /run/bkcache-node/containerd.pid.tmp /run/bkcache-node/containerd.pid
	while kill -0 "$child" 2>/dev/null; do wait "$child"; done
	[[ -n $stop ]] && exit 0
	echo "supervisor: containerd (pid $child) exited; starting it again" >&2
	sleep 0.5 # a containerd that cannot start is not restarted in a tight loop
done
SUP
	chmod 755 "$SUPERVISOR"
}

# write_restart_command writes node N_*'s restart command into its /run/bkcache-node: it runs on
# the node (in a node-access pod: chroot /host, host PID namespace) and does what `systemctl
# restart containerd` does: stop containerd, wait until the supervisor's new one answers.
write_restart_command() {
	local f=$N_ROOT$RESTART_COMMAND
	cat >"$f" <<RST
#!/bin/sh
# Restarts this test node's containerd (scripts/cluster). The file fail-next-restart beside
# this one makes the next restart fail without touching containerd (tests of a failed restart).
d=$NODE_RUN
if [ -e "\$d/fail-next-restart" ]; then
	rm -f "\$d/fail-next-restart"
	echo "restart-containerd: failing, as \$d/fail-next-restart asked" >&2
	exit 1
fi
old=\$(cat "\$d/containerd.pid") || exit 1
kill -TERM "\$old" || exit 1
n=0
while :; do
	new=\$(cat "\$d/containerd.pid" 2>/dev/null)
	if [ "\$new" != "\$old" ] && ctr -a "$N_SOCK" version >/dev/null 2>&1; then exit 0; fi
	n=\$((n + 1))
	if [ \$n -gt 600 ]; then echo "restart-containerd: containerd did not come back within 60 s" >&2; exit 1; fi
	sleep 0.1
done
RST
	chmod 755 "$f"
}

# ensure_mountpoints creates the bind-mount targets the host lacks (recorded; down removes them).
ensure_mountpoints() {
	local d
	for d in "${NODE_BINDS[@]}"; do
		[[ -d /$d ]] && continue
		mkdir -p "/$d"
		echo "/$d" >>"$ADDED_MOUNTPOINTS"
	done
}

remove_mountpoints() {
	[[ -f $ADDED_MOUNTPOINTS ]] || return 0
	local d
	while read -r d; do
		[[ -n $d ]] && { rmdir "$d" 2>/dev/null || log "could not remove $d (not empty?)"; }
	done < <(sort -ru "$ADDED_MOUNTPOINTS")
	rm -f "$ADDED_MOUNTPOINTS"
}

# start_node starts node N_*'s containerd (in its own mount namespace when there are several
# nodes), loads the local images into it, makes its pod cgroups and starts its kubelet.
start_node() {
	local p d pid
	write_containerd_config
	write_kubelet_config
	write_kubeconfig "$N_DIR/kubelet.kubeconfig" "system:node:$N_NAME" "kubelet-client$N_SUF"
	if [[ -z $N_ROOT ]]; then
		start_proc containerd /usr/bin:/bin containerd --config "$CONTAINERD_CONFIG"
	else
		for d in "${NODE_BINDS[@]}"; do mkdir -p "$N_ROOT/$d"; done
		write_restart_command
		start_proc "$N_CTRD_PROC" /usr/bin:/bin unshare -m --propagation private "$SUPERVISOR" "$N_ROOT" "${NODE_BINDS[@]}"
	fi
	wait_for 30 "$N_CTRD_PROC" ctr -a "$N_SOCK" version || fail_start "$N_CTRD_PROC" "containerd of node $N_NAME did not answer"
	for p in pause busybox; do
		ctr -a "$N_SOCK" -n k8s.io images import --snapshotter overlayfs "$IMAGES/$p.tar" >/dev/null ||
			fail_start "$N_CTRD_PROC" "importing $IMAGES/$p.tar into node $N_NAME failed"
	done

	# Pod cgroups go under their own root in every v1 hierarchy, so down can find and remove them.
	for d in $(cgroup_dirs); do
		mkdir -p "$d/$N_CG"
		if [[ -f $d/cpuset.cpus ]]; then
			[[ -s $d/$CGROUP_ROOT/cpuset.cpus ]] || cat "$d/cpuset.cpus" >"$d/$CGROUP_ROOT/cpuset.cpus"
			[[ -s $d/$CGROUP_ROOT/cpuset.mems ]] || cat "$d/cpuset.mems" >"$d/$CGROUP_ROOT/cpuset.mems"
			if [[ $N_CG != "$CGROUP_ROOT" ]]; then
				cat "$d/cpuset.cpus" >"$d/$N_CG/cpuset.cpus"
				cat "$d/cpuset.mems" >"$d/$N_CG/cpuset.mems"
			fi
		fi
	done

	# /usr/bin only: iptables (in /usr/sbin) stays off the kubelet's PATH, so it leaves the host's rules alone.
	local kubelet=("$KBIN/kubelet" --config "$N_DIR/kubelet.yaml"
		--kubeconfig "$N_DIR/kubelet.kubeconfig" --hostname-override "$N_NAME"
		--root-dir "$N_KUBELET_DIR" --cert-dir "$PKI/kubelet-certs$N_SUF")
	if [[ -z $N_ROOT ]]; then
		start_proc kubelet /usr/bin:/bin "${kubelet[@]}"
	else
		# The kubelet mounts the pods' volumes: in the namespace its containerd sees.
		read -r pid _ <"$PIDS/$N_CTRD_PROC.pid"
		start_proc "$N_KUBELET_PROC" /usr/bin:/bin nsenter --mount="/proc/$pid/ns/mnt" -- "${kubelet[@]}"
	fi
}

# ================================================================================================
# Host side effects: sysctls and /etc/hosts (saved before, restored by down)
# ================================================================================================

save_sysctls() {
	[[ -f $SAVED_SYSCTLS ]] && return 0 # left by a crashed run: it holds the values from before that run
	local k
	for k in "${SYSCTLS[@]}"; do
		[[ -e /proc/sys/${k//.//} ]] && echo "$k=$(cat "/proc/sys/${k//.//}")"
	done >"$SAVED_SYSCTLS.tmp"
	mv "$SAVED_SYSCTLS.tmp" "$SAVED_SYSCTLS"
}

restore_sysctls() {
	[[ -f $SAVED_SYSCTLS ]] || return 0
	local k v
	while IFS== read -r k v; do
		[[ -n $k ]] || continue
		[[ $(cat "/proc/sys/${k//.//}") == "$v" ]] || { echo "$v" >"/proc/sys/${k//.//}" || log "cannot restore $k=$v"; }
	done <"$SAVED_SYSCTLS"
	rm -f "$SAVED_SYSCTLS"
}

resolves_to() { # resolves_to NAME IP
	[[ $(getent ahostsv4 "$1" 2>/dev/null | awk 'NR==1{print $1}') == "$2" ]]
}

# ensure_hosts makes every node name resolve to its node's address.
ensure_hosts() {
	local i tmp
	for ((i = 1; i <= NCOUNT; i++)); do
		node_vars "$i"
		resolves_to "$N_NAME" "$N_IP" && continue
		log "adding '$N_IP $N_NAME' to /etc/hosts (removed by down)"
		tmp=$(mktemp)
		{ echo "$N_IP $N_NAME $HOSTS_MARK"; cat /etc/hosts; } >"$tmp"
		cat "$tmp" >/etc/hosts # in place: /etc/hosts may be a bind mount
		rm -f "$tmp"
		touch "$ADDED_HOSTS"
		resolves_to "$N_NAME" "$N_IP" || die "$N_NAME still does not resolve to $N_IP"
	done
}

restore_hosts() {
	[[ -f $ADDED_HOSTS ]] || return 0
	if grep -qF "$HOSTS_MARK" /etc/hosts; then
		local tmp
		tmp=$(mktemp)
		grep -vF "$HOSTS_MARK" /etc/hosts >"$tmp" || true
		cat "$tmp" >/etc/hosts
		rm -f "$tmp"
	fi
	rm -f "$ADDED_HOSTS"
}

# ================================================================================================
# Health
# ================================================================================================

api_get() { # api_get PATH: GET against the apiserver with the admin certificate
	curl -sf --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
		"https://127.0.0.1:$APISERVER_PORT$1"
}

node_ready() { # node_ready NAME
	local node
	node=$(api_get "/api/v1/nodes/$1" 2>/dev/null) || return 1
	node=${node//[$' \n']/}
	[[ $node == *'"type":"Ready","status":"True"'* ]]
}

wait_for() { # wait_for SECONDS COMPONENT CMD...: until CMD succeeds; gives up early if COMPONENT exits
	local secs=$1 comp=$2 i; shift 2
	for ((i = 0; i < secs * 4; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		proc_alive "$comp" || { log "$comp exited"; return 1; }
		sleep 0.25
	done
	return 1
}

port_free() { ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; } # port_free IP PORT

all_running() {
	local p i
	for p in etcd kube-apiserver kube-controller-manager kube-scheduler; do proc_alive "$p" || return 1; done
	for ((i = 1; i <= NCOUNT; i++)); do
		node_vars "$i"
		proc_alive "$N_CTRD_PROC" && proc_alive "$N_KUBELET_PROC" || return 1
	done
}

all_ready() {
	local i
	for ((i = 1; i <= NCOUNT; i++)); do node_vars "$i"; node_ready "$N_NAME" || return 1; done
}

is_up() { all_running && api_get /readyz >/dev/null 2>&1 && all_ready; }

fail_start() { # fail_start COMPONENT MESSAGE
	trap - EXIT
	log "$2"
	[[ -f $LOGS/$1.log ]] && { log "last lines of $LOGS/$1.log:"; tail -n 25 "$LOGS/$1.log" >&2; }
	log "stopping what was started"
	do_down quiet
	die "cluster did not start: $2 (logs in $LOGS)"
}
