#!/usr/bin/env bash
# Builds the Kubernetes pieces the tests run (envtest style: no kubelet, no containers) into
# .tools/bin from the Go module proxy: kube-apiserver, kube-controller-manager, etcd and helm.
# kubectl comes from the machine (/usr/bin/kubectl) and is built the same way only when missing.
# Idempotent: a binary whose version stamp matches is left alone, so a rerun takes seconds.
# Sourced, it only defines the pins and build_kube_binaries (.ci/tools/cluster.sh builds the node with it).
# Everything it downloads or compiles stays under .tools/ (module cache, build cache, logs).
set -euo pipefail

KUBERNETES_VERSION=v1.32.13 # the minor of the machine's kubectl, so there is no version skew
ETCD_VERSION=v3.5.21        # the etcd 3.5 line that Kubernetes 1.32 supports
HELM_VERSION=v3.19.5
# Staging modules whose source the module proxy does not serve at v0.<minor>.<patch> of the pinned
# release, with the version used instead. endpointslice v0.32.13 differs from v0.32.12 only in its
# go.mod (a dependency bump that the replace lines below impose anyway), so the code is the same.
STAGING_OVERRIDES=(k8s.io/endpointslice=v0.32.12)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS=${TRADEBOT_TOOLS_DIR:-$ROOT/.tools}
BIN=$TOOLS/bin
BUILD=$TOOLS/build
STAMPS=$BUILD/stamps
LOGS=$BUILD/logs
TEMPLATES=$ROOT/.ci/tools/k8s

die() {
	echo "k8s.sh: $*" >&2
	exit 1
}

GO=${GO:-}
if [[ -z $GO ]]; then
	if [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go; else GO=$(command -v go || true); fi
fi
[[ -n $GO && -x $GO ]] || die "no Go toolchain found (looked at /usr/local/go/bin/go and PATH); install Go >= 1.23"

mkdir -p "$BIN" "$STAMPS" "$LOGS"
# Module and build caches live under .tools so reruns are fast and nothing lands in ~/go;
# -modcacherw keeps the module cache deletable with a plain `rm -rf .tools`.
export GOPATH=$TOOLS/go GOMODCACHE=$TOOLS/go/mod GOCACHE=$TOOLS/go/cache
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -modcacherw"
unset GOOS GOARCH GOWORK

# cached NAME STAMP: true when .tools/bin/NAME exists and was built for STAMP.
cached() {
	[[ -x $BIN/$1 && -f $STAMPS/$1 && "$(cat "$STAMPS/$1")" == "$2" ]]
}

# run_logged NAME CMD...: runs CMD with its output in a log; on failure shows the log's tail.
run_logged() {
	local name=$1 log=$LOGS/$1.log
	shift
	if ! "$@" >"$log" 2>&1; then
		echo "k8s.sh: building $name failed; last lines of $log:" >&2
		tail -n 40 "$log" >&2
		return 1
	fi
}

# build_kube_binaries NAME...: builds each k8s.io/kubernetes/cmd/NAME at $KUBERNETES_VERSION into
# .tools/bin unless its stamp matches, through one throwaway module (the upstream go.mod only works
# inside its own repository). .ci/tools/cluster.sh sources this file and calls it for the node's pieces.
build_kube_binaries() {
	local kube_stamp name
	kube_stamp="$KUBERNETES_VERSION $($GO env GOVERSION)"
	local kube_missing=()
	for name in "$@"; do
		cached "$name" "$kube_stamp" || kube_missing+=("$name")
	done

	if ((${#kube_missing[@]})); then
		local kube_dir=$BUILD/kube upstream_mod staging_version staging_modules module version override
		mkdir -p "$kube_dir"
		# The staging modules (k8s.io/api, apimachinery, apiserver, client-go, ...) are published as
		# v0.<minor>.<patch>; k8s.io/kubernetes names each at v0.0.0 and points it at ./staging.
		run_logged kubernetes-download "$GO" mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" ||
			die "cannot download k8s.io/kubernetes@$KUBERNETES_VERSION from the Go module proxy"
		upstream_mod=$GOMODCACHE/cache/download/k8s.io/kubernetes/@v/$KUBERNETES_VERSION.mod
		[[ -f $upstream_mod ]] || die "k8s.io/kubernetes@$KUBERNETES_VERSION has no go.mod at $upstream_mod"
		staging_version=v0.${KUBERNETES_VERSION#v1.}
		staging_modules=$(sed -nE 's#^[[:space:]]*(k8s\.io/[a-z0-9-]+) => \./staging/src/k8s\.io/[a-z0-9-]+$#\1#p' "$upstream_mod")
		[[ -n $staging_modules ]] || die "found no staging replace lines in $upstream_mod"
		{
			sed "s/@KUBERNETES_VERSION@/$KUBERNETES_VERSION/" "$TEMPLATES/kube.go.mod.in"
			echo
			echo "replace ("
			for module in $staging_modules; do
				version=$staging_version
				for override in "${STAGING_OVERRIDES[@]}"; do
					[[ ${override%%=*} == "$module" ]] && version=${override#*=}
				done
				echo "	$module => $module $version"
			done
			echo ")"
		} >"$kube_dir/go.mod.new"
		# Two builds may share the module directory: rewrite go.mod only when it changes.
		if cmp -s "$kube_dir/go.mod.new" "$kube_dir/go.mod"; then
			rm -f "$kube_dir/go.mod.new"
		else
			mv "$kube_dir/go.mod.new" "$kube_dir/go.mod"
			rm -f "$kube_dir/go.sum"
		fi

		local major minor version_ldflags="" pkg start reported
		major=${KUBERNETES_VERSION#v}
		major=${major%%.*}
		minor=${KUBERNETES_VERSION#v*.}
		minor=${minor%%.*}
		for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
			version_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
			version_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
		done
		for name in "${kube_missing[@]}"; do
			start=$SECONDS
			(cd "$kube_dir" && run_logged "$name" "$GO" build -trimpath -ldflags "-s -w$version_ldflags" \
				-o "$BIN/$name" "k8s.io/kubernetes/cmd/$name") ||
				die "$name $KUBERNETES_VERSION did not build (log: $LOGS/$name.log)"
			reported=$("$BIN/$name" --version 2>&1 | head -n 1) || die "$BIN/$name --version failed: $reported"
			[[ $reported == *"$KUBERNETES_VERSION"* ]] || die "$BIN/$name reports '$reported', expected $KUBERNETES_VERSION"
			echo "$kube_stamp" >"$STAMPS/$name"
			echo "$name $KUBERNETES_VERSION installed ($((SECONDS - start))s)"
		done
	fi
	for name in "$@"; do
		[[ " ${kube_missing[*]} " == *" $name "* ]] || echo "$name $KUBERNETES_VERSION cached"
	done
}

# Sourced (by .ci/tools/cluster.sh) for the pins and functions above; run, it builds the test tools.
[[ ${BASH_SOURCE[0]} == "$0" ]] || return 0

# --- kube-apiserver, kube-controller-manager (and kubectl when the machine has none) ---------
kube_targets=(kube-apiserver kube-controller-manager)
kubectl_bin=$(command -v kubectl || true)
if [[ -z $kubectl_bin || $kubectl_bin == "$BIN/kubectl" ]]; then kube_targets+=(kubectl); fi
build_kube_binaries "${kube_targets[@]}"

# --- kubectl ----------------------------------------------------------------------------------
if [[ -n $kubectl_bin && $kubectl_bin != "$BIN/kubectl" ]]; then
	kubectl_version=$("$kubectl_bin" version --client 2>/dev/null | sed -n 's/^Client Version: //p')
	[[ -n $kubectl_version ]] || die "$kubectl_bin does not answer 'kubectl version --client'"
	echo "kubectl $kubectl_version present ($kubectl_bin)"
fi

# --- etcd ---------------------------------------------------------------------------------------
etcd_stamp="$ETCD_VERSION $($GO env GOVERSION)"
if cached etcd "$etcd_stamp"; then
	echo "etcd $ETCD_VERSION cached"
else
	etcd_dir=$BUILD/etcd
	mkdir -p "$etcd_dir"
	sed "s/@ETCD_VERSION@/$ETCD_VERSION/" "$TEMPLATES/etcd/go.mod.in" >"$etcd_dir/go.mod"
	cp "$TEMPLATES/etcd/main.go" "$etcd_dir/main.go"
	rm -f "$etcd_dir/go.sum"
	start=$SECONDS
	if (cd "$etcd_dir" && run_logged etcd "$GO" build -trimpath -ldflags "-s -w" -o "$BIN/etcd" .); then
		echo "$etcd_stamp" >"$STAMPS/etcd"
		echo "etcd $ETCD_VERSION installed ($((SECONDS - start))s)"
	elif [[ -x /usr/bin/etcd ]] || {
		echo "k8s.sh: building etcd failed; falling back to Debian's etcd-server package" >&2
		apt-get install -y -q -o DPkg::Lock::Timeout=900 etcd-server >"$LOGS/etcd-apt.log" 2>&1
	}; then
		ln -sf /usr/bin/etcd "$BIN/etcd"
		echo "$etcd_stamp" >"$STAMPS/etcd"
		echo "etcd $(/usr/bin/etcd --version | sed -n 's/^etcd Version: //p') installed (Debian package)"
	else
		die "etcd: neither the Go build nor apt-get install etcd-server worked (logs: $LOGS/etcd*.log)"
	fi
fi

# --- helm ---------------------------------------------------------------------------------------
helm_stamp="$HELM_VERSION $($GO env GOVERSION)"
if cached helm "$helm_stamp"; then
	echo "helm $HELM_VERSION cached"
else
	start=$SECONDS
	# `go install pkg@version` builds in its own module context; -mod must not be set there.
	GOFLAGS=-modcacherw GOBIN=$BIN run_logged helm "$GO" install -trimpath \
		-ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
		"helm.sh/helm/v3/cmd/helm@$HELM_VERSION" ||
		die "helm $HELM_VERSION did not build (log: $LOGS/helm.log)"
	reported=$("$BIN/helm" version --short 2>&1) || die "$BIN/helm version failed: $reported"
	[[ $reported == "$HELM_VERSION"* ]] || die "$BIN/helm reports '$reported', expected $HELM_VERSION"
	echo "$helm_stamp" >"$STAMPS/helm"
	echo "helm $HELM_VERSION installed ($((SECONDS - start))s)"
fi
