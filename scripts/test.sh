#!/usr/bin/env bash
# The test suite, after its own setup. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# Two workers, one test file each at a time (the machine has 2 cores; files
# share session fixtures): about 13 minutes instead of 21.
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
