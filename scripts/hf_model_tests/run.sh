#!/usr/bin/env bash
# Run transformers' own model tests twice -- plain, then with gprune applied to every supported model they
# build -- and print a markdown table of the tests whose outcome differs. See README.md here.
#
#   bash scripts/hf_model_tests/run.sh [pytest args...]
#
# Environment: HF_TESTS (the transformers test tree, default /tmp/hf_tests), PYTHON (a Python with
# torch, transformers, gprune, pytest, parameterized, pytest-timeout; default python3), OUT (results,
# default /tmp/hf_model_tests_out), KEEP (default 1.0), MODELS (default "llava llava_next qwen2_vl"),
# TIMEOUT (seconds per test, default 900), SKIP_PLAIN=1 (reuse $OUT/plain.xml: the plain run does not
# involve gprune, so after a gprune change only the second run needs repeating).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
HF_TESTS="${HF_TESTS:-/tmp/hf_tests}"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-/tmp/hf_model_tests_out}"
KEEP="${KEEP:-1.0}"
MODELS="${MODELS:-llava llava_next qwen2_vl}"
TIMEOUT="${TIMEOUT:-900}"

files=()
for m in $MODELS; do files+=("tests/models/$m/test_modeling_$m.py"); done
mkdir -p "$OUT"
common=(-p no:cacheprovider -m "not slow" --timeout="$TIMEOUT" -q -rfE -o log_cli=false)

run() {  # name, extra pytest args...
    local name="$1" start
    shift
    start=$(date +%s)
    (cd "$HF_TESTS" && PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m pytest "${common[@]}" \
        --junitxml="$OUT/$name.xml" "$@" "${files[@]}") >"$OUT/$name.log" 2>&1 || true
    echo "$name: $(tail -n 1 "$OUT/$name.log") ($(($(date +%s) - start)) s, log $OUT/$name.log)"
}

"$PYTHON" -c "import gprune, transformers, torch; print('transformers', transformers.__version__, 'torch', torch.__version__)"
repo="$here/../.."
echo "gprune $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" status --porcelain src | grep -q . && echo ' + uncommitted changes in src/')"
if [ "${SKIP_PLAIN:-0}" != 1 ] || [ ! -f "$OUT/plain.xml" ]; then run plain "$@"; fi
run gprune -p gprune_applied --gprune --gprune-keep "$KEEP" "$@"
"$PYTHON" "$here/compare.py" "$OUT/plain.xml" "$OUT/gprune.xml" --label "gprune keep=$KEEP" | tee "$OUT/table.md"
