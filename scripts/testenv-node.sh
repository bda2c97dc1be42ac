# shellcheck shell=bash
# The real node of scripts/testenv (sourced by it): containerd with runc and CNI, kubelet,
# kube-proxy and kube-scheduler beside the control plane. docs/testing.md, "The node", says what it
# needs from the host and how to look inside.
#
# Addresses, all on this machine (nothing leaves it):
#   NODE_IP      an address on `lo`: the node's InternalIP and what every server the pods reach
#                (kube-apiserver, MinIO, moto, Alertmanager, the tests' Heroku fake) listens on
#   POD_CIDR     pods, one veth each (CNI ptp + host-local); `unreachable` for what is not allocated
#   SERVICE_CIDR ClusterIPs, DNATed by kube-proxy; routed to lo, and rejected (filter OUTPUT and
#                FORWARD) when still addressed there after the DNAT: not allocated, no endpoint
# A FORWARD rule drops whatever a pod sends outside POD_CIDR that was not DNATed to a pod, so no
# packet from a pod follows the default route out of the machine.

NODE_IP=10.0.2.1
POD_CIDR=10.0.1.0/24
POD_GATEWAY=10.0.1.1
NODE_NAME=drainpipe-node
# Only pods that tolerate this run on the node: older tests create Deployments whose pods must
# stay unscheduled (they play the kubelet for them), and the node test's pods tolerate it.
NODE_TAINT_KEY=drainpipe.dev/testenv-node
NODE_CHAIN=DRAINPIPE-TESTENV

node_dir() { printf '%s/node\n' "$STATE"; }

# What the node needs from the host, checked before anything is changed.
node_preflight() {
    [[ $(id -u) == 0 ]] || die "the node needs root (network routes, mounts, cgroups): run scripts/testenv as root"
    [[ -d /sys/fs/cgroup/memory || -f /sys/fs/cgroup/cgroup.controllers ]] || die "no memory cgroup controller under /sys/fs/cgroup"
    [[ -e /dev/kmsg ]] || die "/dev/kmsg is missing (kubelet's OOM watcher reads it)"
    local bin
    for bin in runc iptables conntrack "$CONTAINERD" "$CTR" "$KUBELET" "$KUBE_PROXY" "$KUBE_SCHEDULER"; do
        command -v "$bin" >/dev/null || die "$bin is missing: run \`scripts/testenv install\` first"
    done
    [[ -f "$PAUSE_DIR/bin/pause.tar" ]] || die "the pause image is missing: run \`scripts/testenv install\` first"
    # The node's addresses and rule names are fixed, so one machine runs one node: another
    # checkout's (another state dir) must be stopped first.
    if ip -4 addr show dev lo | grep -qw "$NODE_IP" || iptables -w -S "$NODE_CHAIN" >/dev/null 2>&1; then
        die "another test environment's node holds $NODE_IP or the $NODE_CHAIN rules (not this state dir $STATE): stop it with its own \`scripts/testenv down\` first"
    fi
}

# Network: the node address, the drop routes, forwarding for pod-to-pod and Service traffic, and
# the rule that keeps pods' traffic on this machine. Every change is recorded in node/undo so that
# `down` reverses exactly what `up` did.
node_network_up() {
    local d; d=$(node_dir)
    mkdir -p "$d"
    : >"$d/undo"
    if ! ip -4 addr show dev lo | grep -qw "$NODE_IP"; then
        ip addr add "$NODE_IP/32" dev lo
        echo "ip addr del $NODE_IP/32 dev lo" >>"$d/undo"
    fi
    # Pods: each allocated address gets a /32 route to its veth (CNI ptp); the rest of the range
    # is unreachable, so nothing for a free pod address follows the default route.
    if ! ip route show type unreachable | grep -q "^unreachable $POD_CIDR"; then
        ip route add unreachable "$POD_CIDR"
        echo "ip route del unreachable $POD_CIDR" >>"$d/undo"
    fi
    # Services: a connection from this machine to a ClusterIP is routed before kube-proxy's DNAT
    # (nat OUTPUT) rewrites it, so an `unreachable` route would refuse every ClusterIP at
    # connect(). The range goes to lo with the node address as source instead; whatever is
    # still addressed to it after the DNAT (an unallocated ClusterIP, one without endpoints) is
    # rejected by the rules below and never leaves.
    if ! ip route show "$SERVICE_CIDR" | grep -q "dev lo"; then
        ip route add "$SERVICE_CIDR" dev lo src "$NODE_IP"
        echo "ip route del $SERVICE_CIDR dev lo" >>"$d/undo"
    fi
    local fwd; fwd=$(cat /proc/sys/net/ipv4/ip_forward)
    if [[ "$fwd" != 1 ]]; then
        echo 1 >/proc/sys/net/ipv4/ip_forward
        echo "echo $fwd >/proc/sys/net/ipv4/ip_forward" >>"$d/undo"
    fi
    # undo runs bottom-up: the jump goes before the chain it jumps to.
    iptables -w -N "$NODE_CHAIN" 2>/dev/null || iptables -w -F "$NODE_CHAIN"
    echo "iptables -w -X $NODE_CHAIN" >>"$d/undo"
    iptables -w -A "$NODE_CHAIN" -s "$POD_CIDR" -d "$POD_CIDR" -j RETURN
    iptables -w -A "$NODE_CHAIN" -s "$POD_CIDR" -m comment --comment "drainpipe testenv: pods stay on this machine" -j DROP
    # tcp-reset and port-unreachable, not net-unreachable: TCP takes the latter as a soft error
    # and retries until its timeout.
    iptables -w -A "$NODE_CHAIN" -d "$SERVICE_CIDR" -p tcp -m comment --comment "drainpipe testenv: no such ClusterIP" -j REJECT --reject-with tcp-reset
    iptables -w -A "$NODE_CHAIN" -d "$SERVICE_CIDR" -m comment --comment "drainpipe testenv: no such ClusterIP" -j REJECT --reject-with icmp-port-unreachable
    echo "iptables -w -F $NODE_CHAIN" >>"$d/undo"
    local hook
    for hook in FORWARD OUTPUT; do
        iptables -w -C "$hook" -j "$NODE_CHAIN" 2>/dev/null || iptables -w -I "$hook" 1 -j "$NODE_CHAIN"
        echo "iptables -w -D $hook -j $NODE_CHAIN" >>"$d/undo"
    done
}

# The chains kube-proxy, kubelet (KUBE-FIREWALL, KUBE-KUBELET-CANARY) and the portmap plugin
# (CNI-*) made, in every table, for IPv4 and IPv6: first the rules that jump to them, then the
# chains. No other Kubernetes runs on a test machine, so every KUBE-* chain is the node's.
remove_node_chains() {
    local cmd table chains rule chain
    for cmd in iptables ip6tables; do
        command -v "$cmd" >/dev/null || continue
        for table in filter nat mangle; do
            chains=$("$cmd" -w -t "$table" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/ { print $2 }')
            [[ -n "$chains" ]] || continue
            "$cmd" -w -t "$table" -S 2>/dev/null | awk '/^-A / && / -j (KUBE-|CNI-)/ { sub(/^-A/, "-D"); print }' |
                while read -r rule; do eval "$cmd -w -t $table $rule" 2>/dev/null || true; done
            for chain in $chains; do "$cmd" -w -t "$table" -F "$chain" 2>/dev/null || true; done
            for chain in $chains; do "$cmd" -w -t "$table" -X "$chain" 2>/dev/null || true; done
        done
    done
}

node_certs() {
    local p="$STATE/pki"
    (
        cd "$p"
        leaf kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
        leaf kubelet-serving "/CN=$NODE_NAME" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
        leaf kube-proxy "/CN=system:kube-proxy" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
        leaf kube-scheduler "/CN=system:kube-scheduler" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
        # kube-apiserver's identity towards the kubelet (logs, exec): bound to
        # system:kubelet-api-admin once the apiserver is up.
        leaf apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    )
}

# component_kubeconfig <name> <server>: a kubeconfig with the client cert pki/<name>.crt.
component_kubeconfig() {
    local name="$1" server="$2"
    b64() { base64 -w0 <"$1"; }
    cat >"$STATE/pki/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: drainpipe-testenv
  cluster:
    server: $server
    certificate-authority-data: $(b64 "$STATE/pki/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(b64 "$STATE/pki/$name.crt")
    client-key-data: $(b64 "$STATE/pki/$name.key")
contexts:
- name: default
  context: {cluster: drainpipe-testenv, user: $name}
current-context: default
EOF
    chmod 600 "$STATE/pki/$name.kubeconfig"
}

start_containerd() {
    local d; d=$(node_dir)
    mkdir -p "$d/containerd/root" "$d/containerd/state" "$d/cni"
    cat >"$d/cni/10-drainpipe.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "drainpipe-testenv",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$d/cni-ipam",
        "ranges": [[{ "subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
    cat >"$d/containerd/config.toml" <<EOF
# written by scripts/testenv up
version = 3
root = "$d/containerd/root"
state = "$d/containerd/state"
disabled_plugins = ["io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$d/containerd.sock"

[ttrpc]
  address = "$d/containerd.sock.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"

[plugins.'io.containerd.cri.v1.runtime']
  # Pods' network namespaces under the state dir, not /var/run/netns: testenv down unmounts them there.
  netns_mounts_under_state_dir = true
  # No process here may lower an oom_score_adj: CAP_SYS_RESOURCE is not in this machine's
  # bounding set, and runc fails every sandbox kubelet asks for at -998 ("can't get final
  # child's PID from pipe"). Clamp to containerd's own score instead, as rootless setups do.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "${DRAINPIPE_TESTENV_RUNC:-$(command -v runc)}"
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI_DIR/bin"]
    conf_dir = "$d/cni"
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF
    say "starting containerd on $d/containerd.sock"
    start containerd PATH="$CONTAINERD_DIR/bin:$PATH" -- "$CONTAINERD" --config "$d/containerd/config.toml"
}

containerd_ready() { ctr_k8s version; }

ctr_k8s() { "$CTR" --address "$(node_dir)/containerd.sock" --namespace k8s.io "$@"; }

# import_image <archive> <name>: an OCI or docker archive into containerd's CRI namespace under
# exactly <name>, so kubelet finds it and never pulls.
import_image() {
    local archive="$1" name="$2" out ref
    out=$(ctr_k8s images import --all-platforms --digests --base-name "${name%:*}" "$archive" 2>&1) ||
        die "ctr could not import $archive: $out"
    # `ctr import` names the image after the archive's own ref, or import-<date>@<digest> without
    # one; the digest it prints is what gets the chart's name.
    ref=$(printf '%s\n' "$out" | awk '/saving|unpacking|^ *$/ { next } { print $1 }' | grep -m1 . || true)
    local digest
    digest=$(printf '%s\n' "$out" | grep -o 'sha256:[0-9a-f]\{64\}' | head -1)
    [[ -n "$digest" ]] || die "ctr printed no digest importing $archive: $out"
    local src
    src=$(ctr_k8s images ls -q | while read -r r; do
        [[ "$(ctr_k8s images ls "name==$r" | awk 'NR == 2 { print $3 }')" == "$digest" ]] && { echo "$r"; break; }
    done)
    [[ -n "$src" ]] || die "imported $archive (${ref:-?}) but found no image with digest $digest"
    [[ "$src" == "$name" ]] || ctr_k8s images tag --force "$src" "$name" >/dev/null
    # Labelled pinned so kubelet's image GC leaves it (imageGCHighThresholdPercent: 100 too).
    ctr_k8s images label "$name" io.cri-containerd.pinned=pinned >/dev/null
}

start_kubelet() {
    local api_port="$1" kubelet_port="$2" healthz_port="$3" d; d=$(node_dir)
    mkdir -p "$d/kubelet" "$d/pod-logs"
    component_kubeconfig kubelet "https://$NODE_IP:$api_port"
    # No cluster DNS here: pods reach servers by address, and a lookup must fail at once inside the
    # pod rather than ask the host's resolver (which may forward off the machine).
    printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"$d/resolv.conf"
    cat >"$d/kubelet.yaml" <<EOF
# written by scripts/testenv up (after hack/local-up-cluster.sh)
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
tlsCertFile: $STATE/pki/kubelet-serving.crt
tlsPrivateKeyFile: $STATE/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$d/containerd.sock
cgroupDriver: cgroupfs
# This machine mounts cgroup v1, which kubelet 1.36 refuses by default (KEP-5573).
failCgroupV1: false
failSwapOn: false
podLogsDir: $d/pod-logs
resolvConf: $d/resolv.conf
clusterDomain: cluster.local
# The images are imported, never pulled: keep them whatever the disk holds.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
maxPods: 40
registerWithTaints:
- key: $NODE_TAINT_KEY
  value: "true"
  effect: NoSchedule
serializeImagePulls: false
syncFrequency: 10s
EOF
    say "starting kubelet ($NODE_NAME at $NODE_IP:$kubelet_port)"
    start kubelet PATH="$PATH" -- "$KUBELET" --config "$d/kubelet.yaml" \
        --kubeconfig "$STATE/pki/kubelet.kubeconfig" \
        --root-dir "$d/kubelet" \
        --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
        --v 1
}

start_kube_proxy() {
    local api_port="$1" healthz_port="$2" metrics_port="$3" d; d=$(node_dir)
    component_kubeconfig kube-proxy "https://$NODE_IP:$api_port"
    cat >"$d/kube-proxy.yaml" <<EOF
# written by scripts/testenv up (after hack/local-up-cluster.sh)
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $STATE/pki/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
# NodePorts only on the node address, never on the machine's outside interface.
nodePortAddresses: ["$NODE_IP/32"]
healthzBindAddress: 127.0.0.1:$healthz_port
metricsBindAddress: 127.0.0.1:$metrics_port
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
    say "starting kube-proxy (iptables mode)"
    start kube-proxy PATH="$PATH" -- "$KUBE_PROXY" --config "$d/kube-proxy.yaml" --v 1
}

start_kube_scheduler() {
    local api_port="$1" port="$2" d; d=$(node_dir)
    component_kubeconfig kube-scheduler "https://$NODE_IP:$api_port"
    cat >"$d/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $STATE/pki/kube-scheduler.kubeconfig
leaderElection:
  leaderElect: false
EOF
    say "starting kube-scheduler on 127.0.0.1:$port"
    start kube-scheduler -- "$KUBE_SCHEDULER" --config "$d/kube-scheduler.yaml" \
        --authentication-kubeconfig "$STATE/pki/kube-scheduler.kubeconfig" \
        --authorization-kubeconfig "$STATE/pki/kube-scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --secure-port "$port" --v 1
}

# The apiserver's identity towards the kubelet may read logs and exec; the node is Ready.
node_rbac() {
    "$KUBECTL" --kubeconfig "$STATE/kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: drainpipe-testenv:apiserver-kubelet-client
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:kubelet-api-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: kube-apiserver-kubelet-client}
EOF
}

node_ready() {
    "$KUBECTL" --kubeconfig "$STATE/kubeconfig" get node "$NODE_NAME" \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}

# The cgroups kubelet made (one tree per v1 controller, or one under v2).
kubepods_cgroups() {
    local root
    for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods /sys/fs/cgroup/unified/kubepods; do
        [[ -d "$root" ]] && printf '%s\n' "$root"
    done
    return 0
}

# Pod processes live in kubepods cgroups and outlive kubelet and containerd: kill them by cgroup.
kill_pod_processes() {
    local root pids
    for _ in 1 2 3; do
        pids=$(kubepods_cgroups | while read -r root; do find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null; done | sort -u)
        [[ -n "$pids" ]] || return 0
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
        sleep 0.5
    done
}

remove_kubepods_cgroups() {
    local root
    kubepods_cgroups | while read -r root; do
        find "$root" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
}

# Everything mounted under the node's state (secret tmpfs, overlay rootfs, netns bind mounts),
# deepest first.
unmount_node() {
    local d; d=$(node_dir)
    awk -v d="$d" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# Network namespaces of pods: containerd pins them under its state dir (unmounted above); the
# veths go with them. What is left of kube-proxy's rules goes with `kube-proxy --cleanup`.
node_network_down() {
    local d; d=$(node_dir)
    [[ ! -x "$KUBE_PROXY" ]] || "$KUBE_PROXY" --cleanup >/dev/null 2>&1 || true
    remove_node_chains
    if [[ -f "$d/undo" ]]; then
        local line
        tac "$d/undo" | while read -r line; do eval "$line" 2>/dev/null || true; done
        rm -f "$d/undo"
    fi
    # Host-side veths whose pod netns vanished are gone with it; any left (kill -9 of the
    # runtime mid-setup) are removed by their peer's name prefix.
    ip -o link show type veth 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1 | { grep '^veth' || true; } |
        while read -r link; do
            ip -o addr show dev "$link" 2>/dev/null | grep -q " $POD_GATEWAY/" && ip link del "$link" 2>/dev/null
        done
    return 0
}

# The node's stop, in the order NODE-NOTES gives: kubelet first (it would restart pods), then the
# pods' processes, containerd, kube-proxy's rules, mounts, cgroups, routes.
node_down() {
    local c
    for c in kube-scheduler kube-proxy kubelet; do stop_component "$c"; done
    kill_pod_processes
    stop_component containerd
    # containerd's shims (one per pod) are in no kubepods cgroup and outlive containerd; each
    # wrote its pid into containerd's state.
    local f pid
    for f in "$(node_dir)"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
        [[ -f "$f" ]] || continue
        pid=$(cat "$f")
        grep -q containerd-shim "/proc/$pid/cmdline" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    done
    unmount_node
    remove_kubepods_cgroups
    node_network_down
}
