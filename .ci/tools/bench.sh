#!/usr/bin/env bash
# `make bench`'s own tools, beyond `make tools`: wrk, the HTTP load generator of the API benchmark
# (tests/benchmarks/test_api_load_bench.py). Installed from Debian only when missing; a rerun checks it.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$HERE/debian.sh" "wrk=wrk:wrk -v"
