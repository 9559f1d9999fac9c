#!/usr/bin/env bash
# Every image the local cluster runs, built here without any registry, into docker-archive tars under
# .tools/build/images/archives (up.sh imports them into containerd):
#   localhost/tradebot/debian:bookworm   debootstrap --variant=minbase, mirror read from this machine's apt sources
#   localhost/tradebot/python:bookworm   + Debian's python3, the base the two tradebot images are built on
#   ghcr.io/tradebot/tradebot:<appVersion>, ghcr.io/tradebot/tradebot-dashboard:<appVersion>
#                                        services/Dockerfile{,.dashboard} with buildah, PYTHON_IMAGE passed in,
#                                        Python packages from a wheelhouse built on this host from .ci/constraints.txt
#   localhost/tradebot/kafka, redis, probe   .ci/cluster/images/<name>/Dockerfile on the Debian base
#   localhost/tradebot/prometheus:<version>  the same, with the Prometheus cluster.sh builds (prometheus-k8s)
#   localhost/tradebot/coredns, prometheus-config-reloader, localhost/tradebot/pause   one static binary each
# Each image is rebuilt only when what it is made from changes (a hash of its inputs is its stamp).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS=${TRADEBOT_TOOLS_DIR:-$ROOT/.tools}
BIN=$TOOLS/bin
WORK=$TOOLS/build/images
ARCHIVES=$WORK/archives
STAMPS=$WORK/stamps
LOGS=$WORK/logs
IMAGES=$ROOT/.ci/cluster/images
SUITE=bookworm # Debian's python3 there is 3.11, the version the wheelhouse is built for
APP_VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/tradebot/Chart.yaml")
KAFKA_VERSION=$(sed -n 's/^KAFKA_VERSION=//p' "$ROOT/.ci/tools/kafka.sh")
mkdir -p "$ARCHIVES" "$STAMPS" "$LOGS"

die() {
	echo "images.sh: $*" >&2
	exit 1
}
[[ $(id -u) -eq 0 ]] || die "building images with buildah and debootstrap needs root"
for tool in buildah debootstrap jq; do command -v "$tool" >/dev/null || die "$tool missing: run make cluster-tools"; done

# Storage of our own under .tools, so nothing lands in /var/lib/containers.
BUILDAH=(buildah --root "$WORK/buildah/root" --runroot "$WORK/buildah/run" --storage-driver overlay)

# logged NAME CMD...: CMD's output goes to a log; on failure its tail is shown.
logged() {
	local log=$LOGS/$1.log
	shift
	"$@" >"$log" 2>&1 || {
		tail -n 40 "$log" >&2
		die "failed: $* (log: $log)"
	}
}

# fresh NAME HASH: true when NAME's archive exists and was made from inputs hashing to HASH.
fresh() {
	[[ -f $ARCHIVES/$1.tar && -f $STAMPS/$1 && $(cat "$STAMPS/$1") == "$2" ]]
}

# save NAME REF HASH: writes REF from buildah's storage to archives/NAME.tar and stamps it.
save() {
	rm -f "$ARCHIVES/$1.tar"
	logged "$1-push" "${BUILDAH[@]}" push --quiet "$2" "docker-archive:$ARCHIVES/$1.tar:$2"
	echo "$3" >"$STAMPS/$1"
	echo "$2: $(du -m "$ARCHIVES/$1.tar" | cut -f1) MiB (uncompressed layers)"
}

hash_of() { cat "$@" | sha256sum | cut -c1-32; }

# The mirror this machine's apt uses for $SUITE (deb822 .sources first, then one-line lists).
apt_mirror() {
	local file
	for file in /etc/apt/sources.list.d/*.sources; do
		[[ -f $file ]] || continue
		awk -v suite="$SUITE" '
			/^$/ { if (uri && hit) { print uri; exit } uri = ""; hit = 0 }
			/^URIs:/ { uri = $2 }
			/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) hit = 1 }
			END { if (uri && hit) print uri }' "$file" | head -n 1
	done | head -n 1 | grep . && return
	cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		sed -nE "s#^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+$SUITE[[:space:]].*#\2#p" | head -n 1 | grep .
}

# --- Debian base ---------------------------------------------------------------------------------
DEBIAN_REF=localhost/tradebot/debian:$SUITE
debian_hash=$(echo "$SUITE minbase v1" | sha256sum | cut -c1-32)
if fresh debian "$debian_hash" && "${BUILDAH[@]}" inspect --type image "$DEBIAN_REF" >/dev/null 2>&1; then
	echo "$DEBIAN_REF cached"
else
	start=$SECONDS
	mirror=$(apt_mirror) || die "no apt source for Debian $SUITE in /etc/apt/sources.list{,.d}: cannot debootstrap"
	rootfs=$WORK/rootfs-debian
	rm -rf "$rootfs"
	logged debootstrap debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror"
	# What a container never needs: package lists, docs, caches; keep the rootfs small.
	rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
		"$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
	container=$("${BUILDAH[@]}" from scratch)
	mnt=$("${BUILDAH[@]}" mount "$container")
	tar -C "$rootfs" -c . | tar -C "$mnt" -x
	"${BUILDAH[@]}" umount "$container" >/dev/null
	"${BUILDAH[@]}" config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--label org.opencontainers.image.description="Debian $SUITE minbase, made by debootstrap" "$container"
	logged debian-commit "${BUILDAH[@]}" commit --rm "$container" "$DEBIAN_REF"
	rm -rf "$rootfs"
	save debian "$DEBIAN_REF" "$debian_hash"
	echo "debian base built ($((SECONDS - start))s)"
fi

# bud NAME REF HASH CONTEXT DOCKERFILE [ARGS...]: buildah bud unless fresh, then save.
bud() {
	local name=$1 ref=$2 hash=$3 context=$4 dockerfile=$5 start=$SECONDS
	shift 5
	if fresh "$name" "$hash" && "${BUILDAH[@]}" inspect --type image "$ref" >/dev/null 2>&1; then
		echo "$ref cached"
		return
	fi
	# --layers: a layer whose instruction and inputs are unchanged is reused (the Dockerfiles install the
	# dependencies before copying tradebot's code, so a code change rebuilds only the last layers).
	logged "$name" "${BUILDAH[@]}" bud --isolation chroot --pull-never --layers --format docker -f "$dockerfile" \
		-t "$ref" "$@" "$context"
	save "$name" "$ref" "$hash"
	echo "$name built ($((SECONDS - start))s)"
}

PYTHON_REF=localhost/tradebot/python:$SUITE
bud python "$PYTHON_REF" "$(hash_of "$STAMPS/debian" "$IMAGES/python/Dockerfile")" \
	"$IMAGES/python" "$IMAGES/python/Dockerfile" --build-arg "BASE=$DEBIAN_REF"

# --- wheelhouse: the pinned packages, resolved by the image's own Python -------------------------------
# Resolved inside the python image (its exact version decides markers such as redis' async-timeout for
# Python < 3.11.3), through the index this machine's pip is configured with; nothing names an index here.
WHEELHOUSE=$WORK/wheelhouse
PY=$ROOT/.venv/bin/python
[[ -x $PY ]] || PY=$(command -v python3)
wheel_hash=$(hash_of "$ROOT/.ci/constraints.txt" "$ROOT/pyproject.toml" "$STAMPS/python")
if [[ -f $WHEELHOUSE/.stamp && $(cat "$WHEELHOUSE/.stamp") == "$wheel_hash" ]]; then
	echo "wheelhouse cached ($(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels)"
else
	start=$SECONDS
	mkdir -p "$WHEELHOUSE"
	requirements=$("$PY" -c "import tomllib; d = tomllib.load(open('$ROOT/pyproject.toml', 'rb')); print(' '.join(repr(r) for r in d['build-system']['requires'] + d['project']['dependencies']))")
	pip_env=()
	for key in index-url extra-index-url trusted-host; do
		value=$("$PY" -m pip config get "global.$key" 2>/dev/null) || continue
		name=${key^^}
		pip_env+=(--env "PIP_${name//-/_}=$value")
	done
	# The CA bundle this machine's pip trusts (it may hold a proxy's CA the image's bundle lacks).
	cert=$("$PY" -m pip config get global.cert 2>/dev/null || true)
	[[ -n $cert ]] || cert=${PIP_CERT:-}
	[[ -n $cert && -f $cert ]] && pip_env+=(-v "$cert:/etc/host-ca.crt:ro" --env PIP_CERT=/etc/host-ca.crt)
	container=$("${BUILDAH[@]}" from --pull-never "$PYTHON_REF")
	# pip itself (the Dockerfiles upgrade it), the build backend, then every runtime dependency.
	logged wheelhouse "${BUILDAH[@]}" run --isolation chroot "${pip_env[@]}" \
		-v "$WHEELHOUSE:/wheels" -v "$ROOT/.ci/constraints.txt:/constraints.txt:ro" "$container" -- \
		sh -c "python -m venv /tmp/venv && /tmp/venv/bin/pip install --quiet --upgrade pip && /tmp/venv/bin/pip wheel --quiet --find-links /wheels --wheel-dir /wheels -c /constraints.txt pip $requirements"
	"${BUILDAH[@]}" rm "$container" >/dev/null
	echo "$wheel_hash" >"$WHEELHOUSE/.stamp"
	echo "wheelhouse built ($((SECONDS - start))s, $(du -sh "$WHEELHOUSE" | cut -f1))"
fi

# --- the two tradebot images, from the project's own Dockerfiles ---------------------------------
# The inputs are exactly what .dockerignore lets into the context.
source_hash() {
	(cd "$ROOT" && git ls-files -co --exclude-standard -- pyproject.toml README.md .ci/constraints.txt \
		services/tradebot backtest/tradebot operator/tradebot data/historical_data.csv "$@" |
		grep -v -e __pycache__ -e '\.pyc$' | sort | xargs sha256sum) | cat - "$STAMPS/python" | sha256sum | cut -c1-32
}
PIP_FROM_WHEELHOUSE=(-v "$WHEELHOUSE:/wheels:ro" --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels
	--build-arg "PYTHON_IMAGE=$PYTHON_REF")
bud tradebot "ghcr.io/tradebot/tradebot:$APP_VERSION" "$(source_hash services/Dockerfile)" \
	"$ROOT" "$ROOT/services/Dockerfile" "${PIP_FROM_WHEELHOUSE[@]}"
bud tradebot-dashboard "ghcr.io/tradebot/tradebot-dashboard:$APP_VERSION" "$(source_hash services/Dockerfile.dashboard)" \
	"$ROOT" "$ROOT/services/Dockerfile.dashboard" "${PIP_FROM_WHEELHOUSE[@]}"

# --- Kafka, Redis, a probe pod's image: Debian's packages on the Debian base; Prometheus -----------
KAFKA_LIBS=$TOOLS/kafka/libs
[[ -d $KAFKA_LIBS ]] || die "no Kafka jars in $KAFKA_LIBS: run make tools"
kafka_context=$WORK/kafka-context
kafka_hash=$(hash_of "$STAMPS/debian" "$IMAGES/kafka/Dockerfile" "$IMAGES/kafka/run" "$TOOLS/kafka/.version")
if ! fresh kafka "$kafka_hash"; then
	rm -rf "$kafka_context"
	mkdir -p "$kafka_context"
	cp -r "$KAFKA_LIBS" "$kafka_context/libs"
	cp "$IMAGES/kafka/run" "$IMAGES/kafka/log4j2.yaml" "$kafka_context/"
fi
bud kafka "localhost/tradebot/kafka:$KAFKA_VERSION" "$kafka_hash" "$kafka_context" "$IMAGES/kafka/Dockerfile" \
	--build-arg "BASE=$DEBIAN_REF"
for name in redis probe; do
	bud "$name" "localhost/tradebot/$name:$SUITE" "$(hash_of "$STAMPS/debian" "$IMAGES/$name/Dockerfile")" \
		"$IMAGES/$name" "$IMAGES/$name/Dockerfile" --build-arg "BASE=$DEBIAN_REF"
done
# Prometheus: cluster.sh's build (with Kubernetes service discovery), tagged with its version.
PROMETHEUS_BIN=$BIN/prometheus-k8s
[[ -x $PROMETHEUS_BIN ]] || die "$PROMETHEUS_BIN missing: run make cluster-tools"
PROMETHEUS_VERSION=$(sed -n 's/^PROMETHEUS_VERSION=//p' "$ROOT/.ci/tools/cluster.sh")
prometheus_context=$WORK/prometheus-context
prometheus_hash=$(hash_of "$STAMPS/debian" "$IMAGES/prometheus/Dockerfile" "$PROMETHEUS_BIN")
if ! fresh prometheus "$prometheus_hash"; then
	rm -rf "$prometheus_context"
	mkdir -p "$prometheus_context"
	cp "$PROMETHEUS_BIN" "$prometheus_context/prometheus"
fi
bud prometheus "localhost/tradebot/prometheus:$PROMETHEUS_VERSION" "$prometheus_hash" "$prometheus_context" \
	"$IMAGES/prometheus/Dockerfile" --build-arg "BASE=$DEBIAN_REF"

# --- one-binary images: the pod sandbox, CoreDNS, the Prometheus config reloader --------------------
# single NAME REF BINARY: an image holding only BINARY (static) as /bin/<its name>, its entrypoint.
single() {
	local name=$1 ref=$2 binary=$3 hash container mnt
	[[ -x $binary ]] || die "$binary missing: run make cluster-tools"
	hash=$(echo "bin v2 $(sha256sum "$binary")" | sha256sum | cut -c1-32)
	if fresh "$name" "$hash" && "${BUILDAH[@]}" inspect --type image "$ref" >/dev/null 2>&1; then
		echo "$ref cached"
		return
	fi
	container=$("${BUILDAH[@]}" from scratch)
	mnt=$("${BUILDAH[@]}" mount "$container")
	mkdir -p "$mnt/bin" "$mnt/tmp" "$mnt/etc"
	install -m 0755 "$binary" "$mnt/bin/$(basename "$binary")"
	chmod 1777 "$mnt/tmp"
	echo "nobody:x:65534:65534:nobody:/:/sbin/nologin" >"$mnt/etc/passwd"
	"${BUILDAH[@]}" umount "$container" >/dev/null
	"${BUILDAH[@]}" config --entrypoint "[\"/bin/$(basename "$binary")\"]" --user 65534:65534 "$container"
	logged "$name-commit" "${BUILDAH[@]}" commit --rm "$container" "$ref"
	save "$name" "$ref" "$hash"
}
single pause localhost/tradebot/pause:3.10 "$BIN/pause"
single coredns localhost/tradebot/coredns:"$(sed -n 's/^COREDNS_VERSION=//p' "$ROOT/.ci/tools/cluster.sh")" "$BIN/coredns"
# The Prometheus Operator runs it as /bin/prometheus-config-reloader.
single prometheus-config-reloader \
	localhost/tradebot/prometheus-config-reloader:"$(sed -n 's/^PROMETHEUS_OPERATOR_VERSION=//p' "$ROOT/.ci/tools/cluster.sh")" \
	"$BIN/prometheus-config-reloader"

# Intermediate layers and containers of failed builds are never needed again.
"${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true
# Nor are the untagged images each rebuild leaves behind (about 1 GB per rebuild of the two tradebot images:
# 28 GB after a day of rebuilds filled the disk and the kubelet tainted the node with disk-pressure). Tagged
# images and the layers they are built on stay, so --layers still reuses the dependency layers.
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
