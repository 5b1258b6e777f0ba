#!/usr/bin/env bash
# Create the virtual environments gprune runs and is tested in. One progress line per step; pip's own
# output goes to VENV/setup.log and is shown only when a step fails. A venv whose inputs (pyproject.toml,
# this script) are unchanged since its last set-up is left as it is: delete it to rebuild.
#
#   bash scripts/setup.sh [--lmms-eval] [newest] [lowest] [core]      (default: newest)
#
#   newest  .venv         gprune[test] with the newest transformers pip resolves (the demo's venv too)
#   lowest  .venv-lowest  gprune[test] with the lowest supported transformers (the `hf` extra's bound)
#   core    .venv-core    gprune alone (torch, numpy, pillow) + pytest/hypothesis: no transformers
#   --lmms-eval           also install lmms-eval into newest/lowest, for its plugin and CLI tests
#
# torch is the pinned CPU build, installed first: a bare `torch` requirement would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TORCH="torch==2.13.0"
# lmms-eval's own requirements pull torchvision, which breaks transformers on a CPU-only torch: it is
# installed without dependencies, plus what its plugin and CLI tests need (see docs/evaluation.md). This
# is the one place lmms-eval is installed.
LMMS_EVAL="lmms-eval==0.7.3"
# lmms-eval 0.7.3 imports filelock._api, which filelock 4.3 removed (its CLI then evaluates nothing).
LMMS_EVAL_DEPS=("filelock<4.3" loguru pytz datasets tenacity evaluate sacrebleu pytablewriter)

# The lowest supported transformers: the lower bound of the `hf` extra in pyproject.toml.
LOWEST=$(grep -oE '"transformers>=[0-9][0-9.]*' pyproject.toml | head -n 1 | cut -d= -f2)
[ -n "$LOWEST" ] || { echo "setup: no \"transformers>=X\" bound found in pyproject.toml" >&2; exit 1; }

lmms=0
variants=()
for arg in "$@"; do
    case "$arg" in
        --lmms-eval) lmms=1 ;;
        newest | lowest | core) variants+=("$arg") ;;
        *) echo "setup: unknown argument '$arg' (expected --lmms-eval, newest, lowest or core)" >&2; exit 2 ;;
    esac
done
[ ${#variants[@]} -gt 0 ] || variants=(newest)

# step "what" command...: print one line, run the command with its output in the log, show the log on failure.
step() {
    local what=$1 start=$SECONDS
    shift
    printf '[setup %s] %s ... ' "$venv" "$what"
    if "$@" >>"$log" 2>&1; then
        printf 'done (%d s)\n' $((SECONDS - start))
    else
        printf 'FAILED\n'
        echo "[setup $venv] last lines of $log:" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
}

has_module() { "$venv/bin/python" -c "import $1" >/dev/null 2>&1; }

no_transformers() {
    if has_module transformers; then
        echo "transformers is installed in $venv, which must not have it (is it a dependency of gprune again?)"
        return 1
    fi
}

setup_venv() {
    local variant=$1 spec what pin=()
    case "$variant" in
        newest) venv=.venv spec=(--upgrade -e ".[test]" transformers) what="gprune[test], newest transformers" ;;
        lowest)
            venv=.venv-lowest pin=("transformers==$LOWEST")
            spec=(-e ".[test]" "${pin[@]}") what="gprune[test], transformers==$LOWEST"
            ;;
        core) venv=.venv-core spec=(-e . pytest hypothesis) what="gprune without extras, pytest, hypothesis" ;;
    esac
    log="$venv/setup.log"
    local start=$SECONDS stamp lmms_stamp="$LMMS_EVAL ${LMMS_EVAL_DEPS[*]}"
    stamp="$variant $(cat pyproject.toml scripts/setup.sh | cksum)"
    if [ ! -x "$venv/bin/python" ]; then
        mkdir -p "$venv"
        : >"$log"
        step "creating the virtual environment ($("$PYTHON" --version 2>&1))" "$PYTHON" -m venv "$venv"
        step "upgrading pip" "$venv/bin/python" -m pip install --upgrade pip
    fi
    if [ "$(cat "$venv/.setup-stamp" 2>/dev/null)" != "$stamp" ]; then
        has_module torch || step "installing $TORCH (CPU build)" "$venv/bin/python" -m pip install "$TORCH"
        step "installing $what" "$venv/bin/python" -m pip install "${spec[@]}"
        [ "$variant" != core ] || step "checking that transformers is absent" no_transformers
        echo "$stamp" >"$venv/.setup-stamp"
    fi
    if [ "$variant" != core ] && [ $lmms = 1 ] && [ "$(cat "$venv/.setup-stamp-lmms" 2>/dev/null)" != "$lmms_stamp" ]; then
        step "installing lmms-eval's test dependencies" "$venv/bin/python" -m pip install "${LMMS_EVAL_DEPS[@]}" ${pin[@]+"${pin[@]}"}
        step "installing $LMMS_EVAL without its dependencies" "$venv/bin/python" -m pip install --no-deps "$LMMS_EVAL"
        echo "$lmms_stamp" >"$venv/.setup-stamp-lmms"
    fi
    local version=none
    [ "$variant" = core ] || version=$("$venv/bin/python" -c "import transformers; print(transformers.__version__)")
    echo "[setup $venv] ready: transformers $version ($((SECONDS - start)) s)"
}

for variant in "${variants[@]}"; do
    setup_venv "$variant"
done
