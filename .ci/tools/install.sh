#!/usr/bin/env bash
# `make tools`: every tool and server the tests need, idempotently, into .tools/ (the local cluster's
# pieces come with `make cluster-tools`, which `make cluster` and `make test-cluster` run).
# One line per component (installed / cached, version); any failure stops with its reason.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
start=$SECONDS
bash "$HERE/debian.sh"
bash "$HERE/kafka.sh"
bash "$HERE/k8s.sh"
echo "tools ready in $((SECONDS - start))s"
