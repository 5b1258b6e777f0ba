#!/usr/bin/env bash
# Set up (if needed) and run the main job: `gprune demo`, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh newest
. .venv/bin/activate
gprune demo "$@"
