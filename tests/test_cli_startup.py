"""`gprune --help` and `--version` answer fast: building the parser imports neither torch nor transformers."""

from __future__ import annotations

import subprocess
import sys
import time


def test_help_and_version_import_neither_torch_nor_transformers():
    code = (
        "import sys, contextlib, io\n"
        "from gprune.cli import main\n"
        "for argv in (['--help'], ['--version'], ['run', '--help'], ['bench', '--help'], ['eval', '--help'],"
        " ['flops', '--help'], ['visualize', '--help'], ['env', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try: main(argv)\n"
        "        except SystemExit: pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'numpy', 'PIL') if m in sys.modules))\n"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert time.perf_counter() - start < 10  # typically ~0.15 s; generous for a loaded shared machine
