#!/usr/bin/env bash
# Set up (if needed) and run the linter once, then the whole test suite on the newest transformers (.venv)
# and on the lowest supported one (.venv-lowest), then the core tests in a venv without transformers
# (.venv-core). Runs everything, then fails if any run failed. Arguments go to the two full pytest runs.
# GPRUNE_TEST_ENVS="newest" (any of newest, lowest, core) runs fewer.
set -euo pipefail
cd "$(dirname "$0")/.."

envs=(${GPRUNE_TEST_ENVS:-newest lowest core})
# The test files that need no transformers (they must not import it, even when collected).
CORE_TESTS=(
    tests/test_config.py
    tests/test_core_faithful.py
    tests/test_core_inputs.py
    tests/test_core_properties.py
    tests/test_core_without_transformers.py
    tests/test_layouts.py
    tests/test_methods.py
    tests/test_metrics.py
    tests/test_pipeline.py
    tests/test_visualize_flow.py
)

bash scripts/setup.sh --lmms-eval "${envs[@]}"

failed=()
lint_venv=.venv
[[ " ${envs[*]} " == *" newest "* ]] || lint_venv=.venv-lowest
if [[ " ${envs[*]} " == *" newest "* || " ${envs[*]} " == *" lowest "* ]]; then
    echo "== ruff ($lint_venv)"
    "$lint_venv/bin/ruff" check src tests benchmarks scripts || failed+=(ruff)
fi

for env in "${envs[@]}"; do
    case "$env" in
        newest) venv=.venv ;;
        lowest) venv=.venv-lowest ;;
        core) venv=.venv-core ;;
    esac
    if [ "$env" = core ]; then
        echo "== pytest, core tests without transformers ($venv)"
        "$venv/bin/python" -m pytest -q "${CORE_TESTS[@]}" || failed+=("$env (no transformers)")
    else
        version=$("$venv/bin/python" -c "import transformers; print(transformers.__version__)")
        echo "== pytest, transformers $version ($venv)"
        "$venv/bin/python" -m pytest -q "$@" || failed+=("$env (transformers $version)")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "== FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "== all passed: ${envs[*]}"
