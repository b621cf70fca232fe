#!/usr/bin/env bash
# The main job on its embedded default: the text recipe on the bundled
# product reviews with the offline MiniLM-L6 backbone, then a SavedModel.
# Extra arguments go to recipes/text_classification.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
exec .venv/bin/python recipes/text_classification.py "$@"
