#!/usr/bin/env bash
# `make cluster-down`: stops every process up.sh started (by the PIDs it recorded) and undoes every change
# it made to the host: containers and their mounts, network namespaces, the bridge, the iptables chains
# and ipsets of kube-proxy, kube-router and the CNI plugin, the node address, the kernel settings, the
# kubepods cgroups. Images stay in .tools/cluster/containerd, so the next `make cluster` is fast.
# Safe to run when nothing runs, and twice.
set -uo pipefail
# shellcheck source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[[ $(id -u) -eq 0 ]] || die "undoing the node's host changes needs root"
started=$SECONDS

# stop NAME: SIGTERM to the recorded process, SIGKILL after 15 s.
stop() {
	local name=$1 pid i
	if alive "$name"; then
		pid=$(cat "$PIDS/$name.pid")
		kill -TERM "$pid" 2>/dev/null
		for ((i = 0; i < 150; i++)); do
			[[ -d /proc/$pid ]] || break
			sleep 0.1
		done
		[[ -d /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null
		echo "cluster-down: $name stopped (pid $pid)"
	fi
	rm -f "$PIDS/$name.pid" "$PIDS/$name.cmd"
}

# The node first, so nothing restarts what is being removed.
for name in kube-router kube-proxy kubelet kube-scheduler kube-controller-manager; do stop "$name"; done

# Every container and sandbox, through containerd while it still runs.
if alive containerd; then
	CTR=(ctr --address "$CONTAINERD_SOCK" -n k8s.io)
	for task in $("${CTR[@]}" tasks list -q 2>/dev/null); do
		"${CTR[@]}" tasks kill -s SIGKILL "$task" >/dev/null 2>&1
	done
	sleep 1
	for task in $("${CTR[@]}" tasks list -q 2>/dev/null); do
		"${CTR[@]}" tasks delete -f "$task" >/dev/null 2>&1
	done
	for container in $("${CTR[@]}" containers list -q 2>/dev/null); do
		"${CTR[@]}" containers delete "$container" >/dev/null 2>&1
	done
fi
stop containerd
# Shims of our containerd that outlived it (each names our socket in its command line).
for proc in /proc/[0-9]*; do
	if tr '\0' ' ' <"$proc/cmdline" 2>/dev/null | grep -q -- "-address $CONTAINERD_SOCK"; then
		kill -KILL "${proc#/proc/}" 2>/dev/null && echo "cluster-down: shim ${proc#/proc/} stopped"
	fi
done
for name in kube-apiserver etcd prometheus-operator; do stop "$name"; done

# Mounts under our state (rootfs overlays, shm, secrets and projected volumes), deepest first.
findmnt -rn -o TARGET | grep -F "$STATE/" | sort -r | while read -r target; do
	umount "$target" 2>/dev/null || umount -l "$target"
done
# Network namespaces the pods had (their veths go with them), and the bridge.
if [[ -f $HOST/netns.orig ]]; then
	for netns in $(ls /var/run/netns 2>/dev/null); do
		grep -qx "$netns" "$HOST/netns.orig" && continue
		[[ $netns == cni-* ]] || continue
		umount "/var/run/netns/$netns" 2>/dev/null
		ip netns delete "$netns" 2>/dev/null || rm -f "/var/run/netns/$netns"
	done
fi
ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE" && echo "cluster-down: bridge $BRIDGE removed"

# iptables: every chain of kube-proxy, kubelet, kube-router and the CNI plugin, and every rule that jumps
# to one, removed in one restore per table set (rules of anyone else stay as they are).
for family in iptables ip6tables; do
	command -v "$family-save" >/dev/null || continue
	before=$("$family-save" 2>/dev/null)
	pattern='KUBE-|CNI-'
	grep -qE -- "$pattern" <<<"$before" || continue
	grep -vE -- "^:($pattern)|^-A ($pattern)|-j ($pattern)|--match-set (KUBE-|kube-router)" <<<"$before" |
		"$family-restore" && echo "cluster-down: $family chains removed"
done
# The netfilter tables the components made where there were none before, once they hold no rule.
if [[ -f $HOST/nft-tables.orig ]] && command -v nft >/dev/null; then
	nft list tables 2>/dev/null | while read -r _ family table; do
		grep -qx "table $family $table" "$HOST/nft-tables.orig" && continue
		nft list table "$family" "$table" 2>/dev/null | grep -vE '^[[:space:]]*(table |chain |type |\}|$)' | grep -q . && continue
		nft delete table "$family" "$table" 2>/dev/null
	done
fi
if command -v ipset >/dev/null; then
	for set in $(ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router|inet6:KUBE-)'); do
		ipset destroy "$set" 2>/dev/null
	done
fi

# The node address, the kernel settings, the cgroups the kubelet made.
if [[ -f $HOST/node-ip.added ]]; then
	ip addr del "$NODE_IP/32" dev lo 2>/dev/null
	rm -f "$HOST/node-ip.added"
fi
if [[ -f $HOST/sysctl.orig ]]; then
	while IFS='=' read -r key value; do
		[[ -f /proc/sys/$key && $(cat "/proc/sys/$key") != "$value" ]] && echo "$value" >"/proc/sys/$key"
	done <"$HOST/sysctl.orig"
fi
for hierarchy in /sys/fs/cgroup/*/ /sys/fs/cgroup/unified/; do
	[[ -d $hierarchy/kubepods ]] || continue
	find "$hierarchy/kubepods" -depth -type d -exec rmdir {} + 2>/dev/null
done
if [[ ! -f $HOST/run-containerd.existed && -d /run/containerd ]]; then
	rm -rf /run/containerd
fi
rm -f "$HOST/run-containerd.existed" "$HOST/sysctl.orig" "$HOST/netns.orig" "$HOST/nft-tables.orig"

# Runtime state goes; PKI, images (containerd's root) and logs stay for the next start.
rm -rf "$STATE/etcd" "$STATE/containerd/state" "$STATE/kubelet" "$STATE/pod-logs" "$STATE/cni/ipam"
echo "cluster-down: done ($((SECONDS - started))s)"
