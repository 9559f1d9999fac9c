# Sourced by up.sh and down.sh: where the local cluster keeps its state and which addresses it uses.
# One cluster per machine (its ports are fixed), its state under .tools/cluster.
# shellcheck shell=bash
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS=${TRADEBOT_TOOLS_DIR:-$ROOT/.tools}
BIN=$TOOLS/bin
STATE=$TOOLS/cluster
PKI=$STATE/pki
PIDS=$STATE/pids
LOGS=$STATE/logs
HOST=$STATE/host # what up.sh changed on the host, for down.sh to undo
KUBECONFIG_ADMIN=$STATE/kubeconfig
CONTAINERD_SOCK=$STATE/containerd/containerd.sock
export PATH=$BIN:$PATH

NODE_NAME=tradebot-node
# The node's address: a /32 on lo (this kernel has no dummy interfaces); the API server listens on it.
NODE_IP=10.213.0.1
POD_CIDR=10.214.0.0/16
NODE_POD_CIDR=10.214.0.0/24 # the controller-manager's first /24 of POD_CIDR, the only node's
POD_GATEWAY=10.214.0.1
SERVICE_CIDR=10.215.0.0/16
API_SERVICE_IP=10.215.0.1
DNS_IP=10.215.0.10
BRIDGE=tradebot0
CLUSTER_DOMAIN=cluster.local
RELEASE=tradebot
NAMESPACE=tradebot

# The host's kernel settings the cluster's components change (kubelet sets the vm/kernel ones);
# up.sh records their values first and down.sh puts them back.
SYSCTLS=(net/ipv4/ip_forward net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables
	net/ipv4/conf/all/route_localnet vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
	kernel/keys/root_maxkeys kernel/keys/root_maxbytes net/netfilter/nf_conntrack_max
	net/netfilter/nf_conntrack_tcp_timeout_established net/netfilter/nf_conntrack_tcp_timeout_close_wait)

die() {
	echo "cluster: $*" >&2
	exit 1
}

# kubectl as cluster admin.
kc() { kubectl --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# alive NAME: the process up.sh started as NAME still runs (its pid file names it, and /proc agrees).
alive() {
	local pid
	[[ -f $PIDS/$1.pid ]] || return 1
	pid=$(cat "$PIDS/$1.pid")
	[[ -n $pid && -d /proc/$pid ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$(cat "$PIDS/$1.cmd")"
}
