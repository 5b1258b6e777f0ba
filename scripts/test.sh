#!/usr/bin/env bash
# Set up (if needed) and run the linter and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
# lmms-eval's own requirements pull torchvision, which breaks transformers on a CPU-only torch: install
# it without dependencies, plus what its plugin and CLI tests need (see docs/evaluation.md).
python -c "import lmms_eval" 2>/dev/null || {
    python -m pip install -q --no-deps "lmms-eval==0.7.3"
    python -m pip install -q loguru pytz datasets tenacity evaluate sacrebleu pytablewriter
}
ruff check src tests benchmarks
python -m pytest -q "$@"
