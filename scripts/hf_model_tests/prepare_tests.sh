#!/usr/bin/env bash
# Assemble transformers' test tree outside this repo (their code never goes into gprune).
#
#   bash scripts/hf_model_tests/prepare_tests.sh GIT_DIR REV [VERSION]
#
# GIT_DIR: a clone (or bare mirror) of huggingface/transformers or a fork; REV: the commit to take
# tests/, utils/, conftest.py and pyproject.toml from (ideally the tag v$VERSION). When VERSION is given,
# the top-level tests/test_*.py of that release's PyPI sdist replace the ones from REV (the sdist ships
# only those). Environment: HF_TESTS (target, default /tmp/hf_tests), PYTHON (the Python the tests run
# with, default python3).
set -euo pipefail
GIT_DIR="$1"
REV="$2"
VERSION="${3:-}"
HF_TESTS="${HF_TESTS:-/tmp/hf_tests}"
PYTHON="${PYTHON:-python3}"

rm -rf "$HF_TESTS"
mkdir -p "$HF_TESTS/src"
git -C "$GIT_DIR" archive "$REV" tests utils conftest.py pyproject.toml | tar -x -C "$HF_TESTS"
if [ -n "$VERSION" ]; then
    sdist="$(mktemp -d)"
    "$PYTHON" -m pip download -q --no-deps --no-binary :all: "transformers==$VERSION" -d "$sdist"
    tar -xzf "$sdist/transformers-$VERSION.tar.gz" -C "$sdist"
    cp "$sdist/transformers-$VERSION"/tests/test_*.py "$HF_TESTS/tests/"
    rm -rf "$sdist"
fi
# test_pipeline_mixin.py imports transformers from <root>/src/transformers: point it at the installed one.
ln -sfn "$("$PYTHON" -c 'import os, transformers; print(os.path.dirname(transformers.__file__))')" \
    "$HF_TESTS/src/transformers"
# A test tree newer than the release may import testing_utils names the release lacks: define them
# (from REV's testing_utils) at the top of the tree's conftest.py, only where missing.
git -C "$GIT_DIR" show "$REV:src/transformers/testing_utils.py" >"$HF_TESTS/.testing_utils_rev.py"
HF_TESTS="$HF_TESTS" "$PYTHON" - <<'EOF'
import ast
import os
import re
from pathlib import Path

import transformers.testing_utils as installed

root = Path(os.environ["HF_TESTS"])
source = (root / ".testing_utils_rev.py").read_text()
defined = {
    node.targets[0].id: ast.get_source_segment(source, node)
    for node in ast.parse(source).body
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
}
wanted = set()
for path in (root / "tests").rglob("*.py"):
    for block in re.findall(r"from transformers\.testing_utils import \(?([^)]*?)\)?\n(?!\s)", path.read_text()):
        wanted.update(name.strip() for name in block.replace("\n", ",").split(",") if name.strip())
missing = sorted(n for n in wanted if not hasattr(installed, n) and n in defined)
if missing:
    conftest = root / "conftest.py"
    shim = "import transformers.testing_utils as _tu  # added by gprune's prepare_tests.sh\n\n"
    shim += "".join(f"{defined[n]}\n_tu.{n} = {n}\n\n" for n in missing)
    conftest.write_text(shim + conftest.read_text())
    print("defined in conftest.py (missing from the installed testing_utils):", ", ".join(missing))
EOF
rm "$HF_TESTS/.testing_utils_rev.py"
echo "test tree in $HF_TESTS ($(git -C "$GIT_DIR" rev-parse "$REV")${VERSION:+, top-level tests from the $VERSION sdist})"
