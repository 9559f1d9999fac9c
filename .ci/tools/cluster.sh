#!/usr/bin/env bash
# The pieces of a real single-node Kubernetes (`make cluster`, tests/cluster), idempotently into .tools/:
#   Debian: containerd, runc, CNI plugins, iptables, conntrack, ipset, buildah, skopeo, debootstrap
#   Go module proxy: kubelet, kube-scheduler, kube-proxy (k8s.sh's build_kube_binaries, same release
#     as kube-apiserver), CoreDNS, kube-router (its NetworkPolicy firewall only), the Prometheus
#     Operator and its config reloader, Prometheus (with Kubernetes service discovery)
#   gcc: a static `pause`, the pod sandbox's one process
# The images are built by .ci/cluster/images.sh; the cluster is started by .ci/cluster/up.sh.
# Rerun, it only compares version stamps (seconds).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=k8s.sh
source "$HERE/k8s.sh" # KUBERNETES_VERSION, build_kube_binaries, cached, run_logged, GO and the caches

COREDNS_VERSION=v1.11.3
# The only kube-router v2 release the module proxy serves. Its firewall (iptables + ipset, both built
# into this kernel) is the NetworkPolicy engine; sigs.k8s.io/kube-network-policies needs nftables'
# `queue` expression, which this kernel lacks (CONFIG_NFT_QUEUE is not set).
KUBE_ROUTER_VERSION=v2.1.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
# Prometheus v3.16.0, published as module version v0.316.0. Debian's prometheus is built without
# Kubernetes service discovery, which the Prometheus Operator's generated config needs.
PROMETHEUS_VERSION=v3.16.0
PROMETHEUS_MODULE_VERSION=v0.316.0

DEBIAN_PACKAGES=(containerd runc containernetworking-plugins iptables nftables conntrack ipset buildah skopeo
	debootstrap jq uidmap gcc libc6-dev)
# command the package provides (checked to decide whether apt-get must run)
DEBIAN_COMMANDS=(containerd runc /usr/lib/cni/bridge iptables nft conntrack ipset buildah skopeo debootstrap
	jq newuidmap gcc /usr/lib/x86_64-linux-gnu/libc.a)

missing=()
for i in "${!DEBIAN_PACKAGES[@]}"; do
	command=${DEBIAN_COMMANDS[$i]}
	if [[ $command == /* ]]; then [[ -e $command ]] && continue; else command -v "$command" >/dev/null && continue; fi
	missing+=("${DEBIAN_PACKAGES[$i]}")
done
if ((${#missing[@]})); then
	start=$SECONDS
	export DEBIAN_FRONTEND=noninteractive
	apt_log=$LOGS/cluster-apt.log
	if ! apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=900 "${missing[@]}" >"$apt_log" 2>&1; then
		apt-get update -q -o DPkg::Lock::Timeout=900 >>"$apt_log" 2>&1 || true
		apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=900 "${missing[@]}" >>"$apt_log" 2>&1 ||
			{
				tail -n 20 "$apt_log" >&2
				die "apt-get install ${missing[*]} failed (log: $apt_log)"
			}
	fi
	echo "debian ${missing[*]} installed ($((SECONDS - start))s)"
fi
echo "containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), buildah $(buildah --version | awk '{print $3}') present"

# go_install NAME VERSION PACKAGE@VERSION: `go install` into .tools/bin unless the stamp matches.
go_install() {
	local name=$1 version=$2 package=$3 stamp start
	stamp="$version $($GO env GOVERSION)"
	if cached "$name" "$stamp"; then
		echo "$name $version cached"
		return
	fi
	start=$SECONDS
	# `go install pkg@version` builds in its own module context; -mod must not be set there.
	GOFLAGS=-modcacherw GOBIN=$BIN run_logged "$name" "$GO" install -trimpath -ldflags "-s -w" "$package" ||
		die "$name $version did not build (log: $LOGS/$name.log)"
	echo "$stamp" >"$STAMPS/$name"
	echo "$name $version installed ($((SECONDS - start))s)"
}

go_install coredns "$COREDNS_VERSION" "github.com/coredns/coredns@$COREDNS_VERSION"
go_install kube-router "$KUBE_ROUTER_VERSION" "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"

# --- Prometheus Operator ------------------------------------------------------------------------
# Its go.mod points two of its own modules at subdirectories, which `go install pkg@version` refuses:
# build it from a throwaway module that requires all three at the same version.
po_stamp="$PROMETHEUS_OPERATOR_VERSION $($GO env GOVERSION)"
if cached prometheus-operator "$po_stamp" && cached prometheus-config-reloader "$po_stamp"; then
	echo "prometheus-operator $PROMETHEUS_OPERATOR_VERSION cached"
else
	start=$SECONDS
	po_dir=$BUILD/prometheus-operator
	mkdir -p "$po_dir"
	sed "s/@PROMETHEUS_OPERATOR_VERSION@/$PROMETHEUS_OPERATOR_VERSION/g" \
		"$TEMPLATES/prometheus-operator.go.mod.in" >"$po_dir/go.mod"
	rm -f "$po_dir/go.sum"
	ldflags="-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_OPERATOR_VERSION#v}"
	for name in prometheus-operator:operator prometheus-config-reloader:prometheus-config-reloader; do
		(cd "$po_dir" && run_logged "${name%%:*}" "$GO" build -trimpath -ldflags "$ldflags" -o "$BIN/${name%%:*}" \
			"github.com/prometheus-operator/prometheus-operator/cmd/${name#*:}") ||
			die "${name%%:*} $PROMETHEUS_OPERATOR_VERSION did not build (log: $LOGS/${name%%:*}.log)"
		echo "$po_stamp" >"$STAMPS/${name%%:*}"
	done
	echo "prometheus-operator $PROMETHEUS_OPERATOR_VERSION installed ($((SECONDS - start))s)"
fi
# Its CRDs, as released in the module.
po_src=$GOMODCACHE/github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION
if [[ ! -d $po_src ]]; then
	run_logged prometheus-operator-download "$GO" mod download \
		"github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" ||
		die "cannot download the Prometheus Operator $PROMETHEUS_OPERATOR_VERSION"
fi
mkdir -p "$BUILD/prometheus-operator-crds"
cp "$po_src"/example/prometheus-operator-crd/*.yaml "$BUILD/prometheus-operator-crds/"

# --- Prometheus (the cluster's image; `make tools` keeps Debian's for the tests on the host) --------
# Built with only the Kubernetes, file and HTTP service discoveries (its remove_all_sd and
# enable_kubernetes_sd build tags) and without the web UI's assets: the API is what is used, and the
# cloud SDKs would triple the build time. Named prometheus-k8s so .tools/bin/prometheus stays Debian's.
prom_stamp="$PROMETHEUS_MODULE_VERSION $($GO env GOVERSION)"
if cached prometheus-k8s "$prom_stamp"; then
	echo "prometheus-k8s $PROMETHEUS_VERSION cached"
else
	start=$SECONDS
	prom_bin=$BUILD/prometheus-k8s-bin
	rm -rf "$prom_bin"
	mkdir -p "$prom_bin"
	ldflags="-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v}"
	ldflags+=" -X github.com/prometheus/common/version.Branch=release"
	GOFLAGS=-modcacherw GOBIN=$prom_bin run_logged prometheus-k8s "$GO" install -trimpath \
		-tags remove_all_sd,enable_kubernetes_sd -ldflags "$ldflags" \
		"github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION" ||
		die "prometheus $PROMETHEUS_VERSION did not build (log: $LOGS/prometheus-k8s.log)"
	mv "$prom_bin/prometheus" "$BIN/prometheus-k8s"
	rm -rf "$prom_bin"
	echo "$prom_stamp" >"$STAMPS/prometheus-k8s"
	echo "prometheus-k8s $PROMETHEUS_VERSION installed ($((SECONDS - start))s)"
fi

# --- pause ----------------------------------------------------------------------------------------
pause_stamp="$(sha256sum "$ROOT/.ci/cluster/images/pause/pause.c" | cut -c1-16) $(gcc -dumpversion)"
if cached pause "$pause_stamp"; then
	echo "pause cached"
else
	gcc -Os -static -Wall -Werror -o "$BIN/pause" "$ROOT/.ci/cluster/images/pause/pause.c" ||
		die "gcc -static could not build pause (needs libc6-dev)"
	strip "$BIN/pause"
	echo "$pause_stamp" >"$STAMPS/pause"
	echo "pause installed"
fi

# --- kubelet, kube-scheduler, kube-proxy ------------------------------------------------------
build_kube_binaries kubelet kube-scheduler kube-proxy
