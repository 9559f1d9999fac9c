#!/usr/bin/env bash
# `make tools`: every tool and server the tests need, idempotently, into .tools/ (with the local
# cluster's pieces: tests/cluster runs a real node).
# One line per component (installed / cached, version); any failure stops with its reason.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
start=$SECONDS
bash "$HERE/debian.sh"
bash "$HERE/kafka.sh"
bash "$HERE/k8s.sh"
bash "$HERE/cluster.sh"
echo "tools ready in $((SECONDS - start))s"
