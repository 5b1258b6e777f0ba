#!/usr/bin/env bash
# Set up (if needed) and run the linter and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
ruff check src tests benchmarks
python -m pytest -q "$@"
