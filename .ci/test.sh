#!/usr/bin/env bash
# `make test`, after `make tools`: the suite on host servers, then tests/cluster on a real single-node Kubernetes.
#
# The node's pieces (.ci/tools/cluster.sh, about 8 minutes of Go builds cold) and its images (.ci/cluster/images.sh)
# serve only tests/cluster, so they are built while the suite runs instead of before it, as idle work (SCHED_IDLE,
# idle I/O class): the suite keeps every CPU it asks for and the builds take only what it leaves idle (it waits on
# its servers much of the time). Cached, both take seconds. The two pytest runs stay apart so the node's start and its pods never
# load the timing-sensitive tests; both always run and either failing fails `make test`.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TOOLS=${TRADEBOT_TOOLS_DIR:-$ROOT/.tools}
PY=${PY:-$ROOT/.venv/bin/python}
LOGS=$TOOLS/build/logs
mkdir -p "$LOGS"
prepare_log=$LOGS/cluster-prepare.log

# setsid: the builds get a process group of their own, so an interrupted `make test` stops all of them by its ID.
start=$SECONDS
setsid chrt --idle 0 ionice -c 3 bash -c 'bash .ci/tools/cluster.sh && bash .ci/cluster/images.sh' >"$prepare_log" 2>&1 &
prepare=$!
trap 'kill -- -"$prepare" 2>/dev/null' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
echo "==> building the node's pieces and images in the background (pid $prepare, log $prepare_log)"

"$PY" -m pytest --ignore=tests/benchmarks --ignore=tests/cluster
suite=$?

wait "$prepare"
prepared=$?
trap - EXIT INT TERM
echo "==> background build of the node's pieces and images: exit $prepared after $((SECONDS - start))s; its log:"
sed 's/^/    /' "$prepare_log"
# On failure, cluster.sh once more in the foreground: a passing rerun means the failure was transient, a failing one
# stops here with its reason; images.sh reruns in the cluster fixture, which reports its own failure.
cluster=1
if ((prepared == 0)) || bash .ci/tools/cluster.sh; then
	"$PY" -m pytest tests/cluster
	cluster=$?
fi

echo "==> make test: suite exit $suite, tests/cluster exit $cluster"
((suite == 0 && cluster == 0))
