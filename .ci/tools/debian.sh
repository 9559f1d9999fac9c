#!/usr/bin/env bash
# The Debian packages the tests use: redis-server, prometheus (+ promtool), chromium, kcat.
# Arguments, when given, replace that list (`command=package:version-command` each: bench.sh's wrk).
# Each is installed with apt-get only when its command is missing, then linked into .tools/bin
# so the test fixtures find every tool in one place. A rerun only checks versions (seconds).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS=${TRADEBOT_TOOLS_DIR:-$ROOT/.tools}
BIN=$TOOLS/bin
LOG=$TOOLS/build/logs/apt.log
mkdir -p "$BIN" "$(dirname "$LOG")"

die() {
	echo "debian.sh: $*" >&2
	exit 1
}

# command=package:version-command
COMPONENTS=(
	"redis-server=redis-server:redis-server --version"
	"prometheus=prometheus:prometheus --version"
	"promtool=prometheus:promtool --version"
	"chromium=chromium:chromium --version"
	"kcat=kcat:kcat -V"
	"openssl=openssl:openssl version"
)
(($#)) && COMPONENTS=("$@")

apt_install() {
	local packages=("$@") sudo=()
	command -v apt-get >/dev/null || die "apt-get not found; install ${packages[*]} by hand (Debian/Ubuntu package names)"
	if [[ $(id -u) -ne 0 ]]; then
		command -v sudo >/dev/null || die "installing ${packages[*]} needs root (no sudo here)"
		sudo=(sudo -n)
	fi
	export DEBIAN_FRONTEND=noninteractive
	if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${packages[@]}" >>"$LOG" 2>&1; then
		# A stale package index is the usual reason; refresh it once and try again.
		"${sudo[@]}" apt-get update -q -o DPkg::Lock::Timeout=600 >>"$LOG" 2>&1 || true
		"${sudo[@]}" apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${packages[@]}" >>"$LOG" 2>&1 ||
			{
				tail -n 20 "$LOG" >&2
				die "apt-get install ${packages[*]} failed (log: $LOG)"
			}
	fi
}

missing=()
for entry in "${COMPONENTS[@]}"; do
	name=${entry%%=*} rest=${entry#*=}
	command -v "$name" >/dev/null || [[ -x /usr/bin/$name ]] || missing+=("${rest%%:*}")
done
if ((${#missing[@]})); then
	mapfile -t packages < <(printf '%s\n' "${missing[@]}" | sort -u)
	apt_install "${packages[@]}"
	installed=" ${packages[*]} "
else
	installed=" "
fi

for entry in "${COMPONENTS[@]}"; do
	name=${entry%%=*} rest=${entry#*=}
	package=${rest%%:*} version_cmd=${rest#*:}
	path=$(command -v "$name" 2>/dev/null || true)
	[[ -n $path && $path != "$BIN/$name" ]] || path=/usr/bin/$name
	[[ -x $path ]] || die "$name is still missing after installing $package"
	ln -sf "$path" "$BIN/$name"
	# Chromium's wrapper script prints shell noise on stderr; keep only its answer. A version line is the
	# proof it runs, not the exit code: `wrk -v` prints its version and exits 1.
	version=$({ ${version_cmd/#$name/$path} 2>/dev/null || true; } | grep -m1 -E '[0-9]+\.[0-9]+' | tr -s ' ' | cut -c1-70) ||
		die "$path does not run ($version_cmd printed no version)"
	if [[ $installed == *" $package "* ]]; then state=installed; else state=cached; fi
	echo "$name $state ($version)"
done
